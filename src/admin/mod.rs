//! The admin endpoint: live inspection of the tree, and control, over HTTP.
//!
//! `GET /` serves the dashboard page, which holds no data of its own. Every
//! other route but `/healthz` needs `Authorization: Bearer <token>` when a token
//! is configured (`[admin] token`, `token_file` or `KEEL__ADMIN__TOKEN`); binding
//! to a non-loopback address without one is refused at start.

mod auth;
mod dashboard;
mod metrics;
mod openapi;
mod routes;

use std::net::SocketAddr;
use std::sync::Arc;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::{Notify, Semaphore};
use tokio_util::sync::CancellationToken;
use tokio_util::task::AbortOnDropHandle;

pub use crate::config::AdminConfig;
use crate::RuntimeHandle;

/// Connections served at once; one more gets a 503 and is closed.
pub const MAX_CONNECTIONS: usize = 256;
/// Live message tails (SSE) at once; one more gets a 503.
pub const MAX_STREAMS: usize = 32;
/// A client has this long to send its request's headers.
pub const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(5);

/// What the admin server refused, for `/metrics`.
#[derive(Debug, Default)]
pub struct Refusals {
    /// Connections over [`MAX_CONNECTIONS`].
    pub connections: AtomicU64,
    /// Live tails over [`MAX_STREAMS`].
    pub streams: AtomicU64,
    /// Requests without a valid token.
    pub unauthorized: AtomicU64,
    /// Failed accepts (out of file descriptors, ...).
    pub accept_errors: AtomicU64,
    /// Connections closed before sending a request, to make room for a new one.
    pub evicted: AtomicU64,
}

/// Why the admin endpoint could not start.
#[derive(Debug, thiserror::Error)]
#[error("admin endpoint cannot listen on {addr}: {source}")]
pub struct AdminError {
    addr: SocketAddr,
    source: std::io::Error,
}

/// A running admin endpoint.
#[derive(Debug)]
pub struct AdminServer {
    addr: SocketAddr,
    stop: CancellationToken,
    /// Fired by `POST /api/shutdown`.
    pub shutdown_requested: Arc<Notify>,
    /// The accept loop (and through it every connection); aborted with the server.
    _server: AbortOnDropHandle<()>,
}

impl AdminServer {
    /// Binds `config.listen` and serves `handle`'s tree until stopped.
    pub async fn start(
        config: &AdminConfig,
        handle: Arc<RuntimeHandle>,
    ) -> Result<Self, AdminError> {
        let listener = TcpListener::bind(config.listen)
            .await
            .map_err(|source| AdminError {
                addr: config.listen,
                source,
            })?;
        let addr = listener.local_addr().map_err(|source| AdminError {
            addr: config.listen,
            source,
        })?;
        let stop = CancellationToken::new();
        let shutdown_requested = Arc::new(Notify::new());
        let refusals = Arc::new(Refusals::default());
        let app = routes::router(routes::App {
            handle,
            token: config.token.clone(),
            shutdown_requested: Arc::clone(&shutdown_requested),
            shutting_down: Arc::default(),
            streams: Arc::new(Semaphore::new(MAX_STREAMS)),
            refusals: Arc::clone(&refusals),
        });
        let server =
            AbortOnDropHandle::new(tokio::spawn(serve(listener, app, refusals, stop.clone())));
        tracing::info!(%addr, "Admin endpoint listening.");
        Ok(Self {
            addr,
            stop,
            shutdown_requested,
            _server: server,
        })
    }

    /// The bound address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }
}

/// The accept loop: at most [`MAX_CONNECTIONS`] connections at once, each given
/// [`HEADER_READ_TIMEOUT`] for its headers and closed after one response (so no
/// connection idles), and a failed accept (out of file descriptors) pauses the
/// loop instead of spinning. When every slot is taken, the oldest connection
/// that has not sent a whole request yet is closed to make room: clients that
/// open sockets and say nothing cannot keep a prompt one (a liveness probe on
/// `/healthz`) out.
async fn serve(
    listener: TcpListener,
    app: axum::Router,
    refusals: Arc<Refusals>,
    stop: CancellationToken,
) {
    let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    let mut connections = tokio::task::JoinSet::new();
    // Connections in accept order, with whether their request arrived.
    let mut waiting: std::collections::VecDeque<(Arc<AtomicBool>, tokio::task::AbortHandle)> =
        std::collections::VecDeque::new();
    let accept_log = keel_core::logs::Repeats::default();
    let refusal_log = keel_core::logs::Repeats::default();
    loop {
        while connections.try_join_next().is_some() {}
        let accepted = tokio::select! {
            () = stop.cancelled() => return,
            accepted = listener.accept() => accepted,
        };
        let stream = match accepted {
            Ok((stream, _)) => stream,
            Err(error) => {
                refusals.accept_errors.fetch_add(1, Ordering::Relaxed);
                accept_log.warn(|suppressed| {
                    tracing::warn!(%error, suppressed, "Admin endpoint cannot accept; pausing.");
                });
                tokio::select! {
                    () = stop.cancelled() => return,
                    () = tokio::time::sleep(Duration::from_millis(250)) => {}
                }
                continue;
            }
        };
        let slot = match Arc::clone(&slots).try_acquire_owned() {
            Ok(slot) => Some(slot),
            Err(_) => {
                waiting.retain(still_waiting);
                match waiting.pop_front() {
                    Some((_, oldest)) => {
                        oldest.abort();
                        refusals.evicted.fetch_add(1, Ordering::Relaxed);
                        // The slot comes back once the aborted task is dropped.
                        tokio::time::timeout(
                            Duration::from_millis(100),
                            Arc::clone(&slots).acquire_owned(),
                        )
                        .await
                        .ok()
                        .and_then(Result::ok)
                    }
                    None => None,
                }
            }
        };
        let Some(slot) = slot else {
            refusals.connections.fetch_add(1, Ordering::Relaxed);
            refusal_log.warn(|suppressed| {
                tracing::warn!(
                    max = MAX_CONNECTIONS,
                    suppressed,
                    "Admin endpoint full; connection refused."
                );
            });
            connections.spawn(refuse(stream));
            continue;
        };
        let dispatched = Arc::new(AtomicBool::new(false));
        let service = Dispatched {
            inner: hyper_util::service::TowerToHyperService::new(app.clone()),
            flag: Arc::clone(&dispatched),
        };
        let task = connections.spawn(async move {
            let served = hyper::server::conn::http1::Builder::new()
                .timer(hyper_util::rt::TokioTimer::new())
                .header_read_timeout(HEADER_READ_TIMEOUT)
                .keep_alive(false)
                .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                .await;
            // A client that went away or never finished its headers.
            if let Err(error) = served {
                tracing::debug!(%error, "Admin connection ended with an error.");
            }
            drop(slot);
        });
        waiting.push_back((dispatched, task));
        if waiting.len() > 2 * MAX_CONNECTIONS {
            waiting.retain(still_waiting);
        }
    }
}

/// A connection that is open and has not sent a whole request yet.
fn still_waiting((dispatched, task): &(Arc<AtomicBool>, tokio::task::AbortHandle)) -> bool {
    !task.is_finished() && !dispatched.load(Ordering::Acquire)
}

/// A connection's service that notes when its request has arrived whole.
struct Dispatched<S> {
    inner: S,
    flag: Arc<AtomicBool>,
}

impl<S: hyper::service::Service<R>, R> hyper::service::Service<R> for Dispatched<S> {
    type Response = S::Response;
    type Error = S::Error;
    type Future = S::Future;

    fn call(&self, request: R) -> Self::Future {
        self.flag.store(true, Ordering::Release);
        self.inner.call(request)
    }
}

/// Answers a connection over the limit with a 503 in JSON and closes it.
async fn refuse(mut stream: tokio::net::TcpStream) {
    use tokio::io::AsyncWriteExt;
    let body = r#"{"error":"too many connections"}"#;
    let answer = format!(
        "HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    );
    let _ = tokio::time::timeout(Duration::from_secs(1), stream.write_all(answer.as_bytes())).await;
}

impl Drop for AdminServer {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}
