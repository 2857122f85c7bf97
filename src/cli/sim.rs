//! `keel sim`: run the local Deribit-compatible exchange.

use std::net::SocketAddr;

use keel_core::secret::Secret;
use keel_deribit::sim::{self, SimConfig};

use super::signals::ShutdownSignals;
use crate::exit_code;

/// Flags that override the `[sim]` section.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct SimArgs {
    /// Address to listen on (WebSocket `/ws/api/v2`, HTTP `/api/v2/public/...`, `/sim/...`).
    #[arg(long)]
    pub listen: Option<SocketAddr>,
    /// Seed: the same seed and instruments give the same trades.
    #[arg(long)]
    pub seed: Option<u64>,
    /// Comma-separated instrument names (default: BTC and ETH perpetuals, futures, options).
    #[arg(long, value_delimiter = ',')]
    pub instruments: Option<Vec<String>>,
    /// Trades generated per second, across instruments.
    #[arg(long)]
    pub trades_per_sec: Option<f64>,
    /// API key id accepted by `public/auth`.
    #[arg(long, requires = "client_secret")]
    pub client_id: Option<String>,
    /// Its secret (or KEEL_SIM_CLIENT_SECRET).
    #[arg(
        long,
        env = "KEEL_SIM_CLIENT_SECRET",
        hide_env_values = true,
        requires = "client_id"
    )]
    pub client_secret: Option<String>,
    /// PEM certificate chain: serve `wss://` and `https://` (with --tls-key).
    #[arg(long, requires = "tls_key")]
    pub tls_cert: Option<std::path::PathBuf>,
    /// PEM private key of --tls-cert.
    #[arg(long, requires = "tls_cert")]
    pub tls_key: Option<std::path::PathBuf>,
    /// Serve a recorded session (JSON lines of real notifications, optionally
    /// `<timestamp>: ` prefixed) instead of generated data.
    #[arg(long)]
    pub replay: Option<std::path::PathBuf>,
    /// Replay pace: 1 recorded, 10 ten times faster, 0 as fast as possible.
    #[arg(long)]
    pub replay_speed: Option<f64>,
}

impl SimArgs {
    fn apply(self, mut config: SimConfig) -> SimConfig {
        if let Some(listen) = self.listen {
            config.listen = listen;
        }
        if let Some(seed) = self.seed {
            config.seed = seed;
        }
        if let Some(instruments) = self.instruments {
            config.instruments = instruments;
        }
        if let Some(rate) = self.trades_per_sec {
            config.trades_per_sec = rate;
        }
        if let Some(id) = self.client_id {
            config.client_id = Some(id);
        }
        if let Some(secret) = self.client_secret {
            config.client_secret = Some(Secret::new(secret));
        }
        if let Some(cert) = self.tls_cert {
            config.tls_cert = Some(cert);
        }
        if let Some(key) = self.tls_key {
            config.tls_key = Some(key);
        }
        if let Some(file) = self.replay {
            config.replay = Some(file);
        }
        if let Some(speed) = self.replay_speed {
            config.replay_speed = speed;
        }
        config
    }
}

pub(super) async fn run(base: &SimConfig, args: SimArgs) -> u8 {
    let config = args.apply(base.clone());
    let problems = config.problems();
    if !problems.is_empty() {
        for (key, expected) in problems {
            tracing::error!(key = %format!("sim.{key}"), %expected, "Invalid simulator setting.");
        }
        return exit_code::BAD_CONFIG;
    }
    let mut signals = match ShutdownSignals::install() {
        Ok(signals) => signals,
        Err(error) => {
            tracing::error!(%error, "Cannot install signal handlers.");
            return exit_code::SUPERVISOR_GAVE_UP;
        }
    };
    let handle = match sim::start(config).await {
        Ok(handle) => handle,
        Err(error) => {
            tracing::error!(%error, "The simulator could not start.");
            return exit_code::BAD_CONFIG;
        }
    };
    tracing::info!(
        ws = %handle.ws_url(), http = %handle.http_url(),
        instruments = %handle.instruments().join(","),
        "keel sim is running."
    );
    let signal = signals.next().await;
    tracing::info!(signal, "Stopping the simulator.");
    handle.stop().await;
    exit_code::OK
}
