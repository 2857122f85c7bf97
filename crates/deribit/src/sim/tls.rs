//! `wss://` and `https://` on the simulator's one port: TLS handshakes run
//! concurrently (a slow client never holds the others), each bounded, and the
//! finished streams are handed to the HTTP server as an [`axum::serve::Listener`].

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio::task::JoinSet;
use tokio_rustls::server::TlsStream;
use tokio_rustls::TlsAcceptor;
use tokio_util::task::AbortOnDropHandle;

/// Longest a client may take to finish its handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Pause after a failed `accept` (out of file descriptors, say) before the next.
const ACCEPT_RETRY: Duration = Duration::from_millis(100);

pub(super) struct TlsListener {
    accepted: mpsc::Receiver<(TlsStream<TcpStream>, SocketAddr)>,
    local: SocketAddr,
    /// Accepts and handshakes; aborted with the listener, its handshakes with it.
    _acceptor: AbortOnDropHandle<()>,
}

impl TlsListener {
    pub(super) fn new(
        listener: TcpListener,
        config: Arc<rustls::ServerConfig>,
    ) -> std::io::Result<Self> {
        let local = listener.local_addr()?;
        let acceptor = TlsAcceptor::from(config);
        let (to_server, accepted) = mpsc::channel(64);
        let task = tokio::spawn(async move {
            let mut handshakes = JoinSet::new();
            loop {
                tokio::select! {
                    accepted = listener.accept() => match accepted {
                        Ok((tcp, peer)) => {
                            let _ = tcp.set_nodelay(true);
                            let acceptor = acceptor.clone();
                            let to_server = to_server.clone();
                            handshakes.spawn(async move {
                                match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
                                    Ok(Ok(tls)) => {
                                        let _ = to_server.send((tls, peer)).await;
                                    }
                                    Ok(Err(error)) => {
                                        tracing::debug!(%peer, %error, "TLS handshake failed.");
                                    }
                                    Err(_) => tracing::debug!(%peer, "TLS handshake timed out."),
                                }
                            });
                        }
                        Err(error) => {
                            tracing::warn!(%error, "Simulator cannot accept; retrying.");
                            tokio::time::sleep(ACCEPT_RETRY).await;
                        }
                    },
                    Some(_) = handshakes.join_next(), if !handshakes.is_empty() => {}
                }
            }
        });
        Ok(Self {
            accepted,
            local,
            _acceptor: AbortOnDropHandle::new(task),
        })
    }
}

impl axum::serve::Listener for TlsListener {
    type Io = TlsStream<TcpStream>;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        match self.accepted.recv().await {
            Some(accepted) => accepted,
            // The acceptor ended (it does not, short of an abort): serve nothing more.
            None => std::future::pending().await,
        }
    }

    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        Ok(self.local)
    }
}
