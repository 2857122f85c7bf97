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

use keel_actors::secret::Secret;
use serde::{Deserialize, Serialize};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::RuntimeHandle;

/// The `[admin]` section.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AdminConfig {
    /// Whether `keel run` serves the admin endpoint.
    #[serde(default = "yes")]
    pub enabled: bool,
    /// Where it listens.
    #[serde(default = "default_listen")]
    pub listen: SocketAddr,
    /// Bearer token (or `token_file`, or `KEEL__ADMIN__TOKEN`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token: Option<Secret>,
}

fn yes() -> bool {
    true
}
fn default_listen() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 9600))
}

impl Default for AdminConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            listen: default_listen(),
            token: None,
        }
    }
}

impl AdminConfig {
    /// Every problem, as `(key, what is expected)`.
    pub fn problems(&self) -> Vec<(String, String)> {
        if self.enabled && !self.listen.ip().is_loopback() && self.token.is_none() {
            return vec![(
                "token".into(),
                format!("a token (token_file or KEEL__ADMIN__TOKEN) to listen on {}, which is not loopback", self.listen),
            )];
        }
        Vec::new()
    }
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
}

impl AdminServer {
    /// Binds `config.listen` and serves `handle`'s tree until stopped.
    pub async fn start(
        config: &AdminConfig,
        handle: Arc<RuntimeHandle>,
    ) -> Result<Self, AdminError> {
        let listener = tokio::net::TcpListener::bind(config.listen)
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
        let app = routes::router(routes::App {
            handle,
            token: config.token.clone(),
            shutdown_requested: Arc::clone(&shutdown_requested),
            shutting_down: Arc::default(),
        });
        let until = stop.clone();
        tokio::spawn(async move {
            let served = axum::serve(listener, app)
                .with_graceful_shutdown(async move { until.cancelled().await })
                .await;
            if let Err(error) = served {
                tracing::error!(%error, "Admin endpoint failed.");
            }
        });
        tracing::info!(%addr, "Admin endpoint listening.");
        Ok(Self {
            addr,
            stop,
            shutdown_requested,
        })
    }

    /// The bound address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }
}

impl Drop for AdminServer {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}
