//! `keel sim`: a local Deribit-compatible exchange with fault injection.
//!
//! It serves Deribit's WebSocket and HTTP APIs (the subset Keel uses, faithfully
//! enough for an unmodified Deribit client), generates trades deterministically
//! from a seed, keeps a history consistent with what it streamed, and takes
//! faults on `POST /sim/faults`. It is what every integration test and benchmark
//! of Keel runs against.

mod account;
mod actor;
mod auth;
mod catalog;
mod config;
mod exchange;
mod faults;
mod history;
mod market;
mod methods;
mod params;
mod replay;
mod reply;
mod rng;
mod server;
mod session;
mod tls;
mod trading;

pub use account::Ledger;
pub use actor::SimActor;
pub use auth::signature;
pub use config::{RateLimits, SimConfig};
pub use exchange::{InstrumentStats, SimStats};
pub use faults::Fault;

use std::net::SocketAddr;
use std::sync::Arc;

use tokio_util::sync::CancellationToken;
use tokio_util::task::AbortOnDropHandle;

use exchange::Exchange;

/// Why the simulator could not start.
#[derive(Debug, thiserror::Error)]
pub enum SimError {
    /// The configuration names something it cannot simulate.
    #[error("invalid simulator configuration: {0}")]
    Config(String),
    /// The replay file cannot be read or served.
    #[error("replay file {}{}: {reason}", path.display(), line.map(|n| format!(" line {n}")).unwrap_or_default())]
    Replay {
        /// The replay file.
        path: std::path::PathBuf,
        /// The line at fault, counted from 1.
        line: Option<usize>,
        /// What is wrong with it.
        reason: String,
    },
    /// The listen address could not be bound.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address asked for.
        addr: SocketAddr,
        /// The I/O error.
        source: std::io::Error,
    },
}

/// Why a fault could not be injected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FaultError {
    /// The fault names an instrument the simulator does not list.
    #[error("no instrument `{0}`")]
    UnknownInstrument(String),
}

/// A running simulator.
#[derive(Debug)]
pub struct SimHandle {
    addr: SocketAddr,
    /// Serving TLS: `wss://` and `https://`.
    secure: bool,
    exchange: Arc<Exchange>,
    stop: CancellationToken,
    /// The engine and the server; aborted if the handle is dropped.
    tasks: Option<(AbortOnDropHandle<()>, AbortOnDropHandle<()>)>,
}

/// Serves `app` on `listener` (plain TCP or TLS) until `shutdown` fires.
async fn serve<L>(listener: L, app: axum::Router, shutdown: CancellationToken)
where
    L: axum::serve::Listener,
    L::Addr: std::fmt::Debug,
{
    let served = axum::serve(listener, app)
        .with_graceful_shutdown(async move { shutdown.cancelled().await })
        .await;
    if let Err(error) = served {
        tracing::error!(%error, "Simulator server failed.");
    }
}

/// Starts a simulator; it runs until [`SimHandle::stop`] (or the handle is dropped).
pub async fn start(config: SimConfig) -> Result<SimHandle, SimError> {
    let exchange = Arc::new(Exchange::new(config)?);
    let listener = tokio::net::TcpListener::bind(exchange.config.listen)
        .await
        .map_err(|source| SimError::Bind {
            addr: exchange.config.listen,
            source,
        })?;
    let addr = listener.local_addr().map_err(|source| SimError::Bind {
        addr: exchange.config.listen,
        source,
    })?;
    let tls = match (&exchange.config.tls_cert, &exchange.config.tls_key) {
        (Some(cert), Some(key)) => Some(
            crate::tls::server_config(cert, key)
                .map_err(|e| SimError::Config(format!("TLS: {e}")))?,
        ),
        _ => None,
    };
    let stop = CancellationToken::new();
    let engine = tokio::spawn(exchange::run_engine(Arc::clone(&exchange), stop.clone()));
    let app = server::router(Arc::clone(&exchange), stop.clone());
    let shutdown = stop.clone();
    let secure = tls.is_some();
    let server = match tls {
        // Small frames go out at once (no Nagle), as an exchange's do: an
        // answer written right after its notification is not held for the
        // client's acknowledgement.
        None => {
            use axum::serve::ListenerExt;
            let listener = listener.tap_io(|tcp| {
                let _ = tcp.set_nodelay(true);
            });
            tokio::spawn(serve(listener, app, shutdown))
        }
        Some(config) => {
            let listener =
                tls::TlsListener::new(listener, config).map_err(|source| SimError::Bind {
                    addr: exchange.config.listen,
                    source,
                })?;
            tokio::spawn(serve(listener, app, shutdown))
        }
    };
    tracing::info!(%addr, instruments = exchange.names.len(), "Simulator listening.");
    Ok(SimHandle {
        addr,
        secure,
        exchange,
        stop,
        tasks: Some((
            AbortOnDropHandle::new(engine),
            AbortOnDropHandle::new(server),
        )),
    })
}

impl SimHandle {
    /// The bound address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `ws://ADDR/ws/api/v2` (`wss://` with TLS).
    pub fn ws_url(&self) -> String {
        let scheme = if self.secure { "wss" } else { "ws" };
        format!("{scheme}://{}/ws/api/v2", self.addr)
    }

    /// `http://ADDR` (`https://` with TLS).
    pub fn http_url(&self) -> String {
        let scheme = if self.secure { "https" } else { "http" };
        format!("{scheme}://{}", self.addr)
    }

    /// The instruments it trades, in order.
    pub fn instruments(&self) -> &[String] {
        &self.exchange.names
    }

    /// What `/sim/stats` serves.
    pub fn stats(&self) -> SimStats {
        self.exchange.stats()
    }

    /// The account's orders and fills as the simulator holds them.
    pub fn ledger(&self) -> Ledger {
        self.exchange.account.lock().ledger()
    }

    /// Injects a fault, as `POST /sim/faults` does.
    pub fn inject(&self, fault: &Fault) -> Result<String, FaultError> {
        self.exchange.inject(fault)
    }

    /// Changes the generation rate, as `POST /sim/rate` does.
    pub fn set_rate(&self, trades_per_sec: f64) {
        self.exchange.set_rate(trades_per_sec);
    }

    /// Stops generating and serving, closing every connection.
    pub async fn stop(mut self) {
        self.stop.cancel();
        if let Some((engine, server)) = self.tasks.take() {
            let _ = engine.await;
            let _ = server.await;
        }
    }
}

impl Drop for SimHandle {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}
