//! `keel sim` settings (and the `[sim]` section when the daemon hosts it).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use keel_core::secret::Secret;

/// Credit-based rate limits, as Deribit applies them (off by default).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RateLimits {
    /// Whether requests cost credits at all.
    #[serde(default)]
    pub enabled: bool,
    /// Credits a connection can hold (the burst).
    #[serde(default = "default_max_credits")]
    pub max_credits: u64,
    /// Credits regained per second.
    #[serde(default = "default_refill")]
    pub refill_per_sec: u64,
    /// Cost of an ordinary request (20/s sustained with the defaults).
    #[serde(default = "default_cost")]
    pub request_cost: u64,
    /// Cost of a subscribe call (about 3/s).
    #[serde(default = "default_subscribe_cost")]
    pub subscribe_cost: u64,
    /// Cost of `get_instruments` (1/s).
    #[serde(default = "default_instruments_cost")]
    pub instruments_cost: u64,
    /// Matching-engine requests (order entry and cancels) per second, a
    /// budget of its own per connection, as Deribit's tiers (tier 1: 30/s).
    #[serde(default = "default_matching_rate")]
    pub matching_rate: u32,
    /// Matching-engine requests a connection can make at once.
    #[serde(default = "default_matching_burst")]
    pub matching_burst: u32,
}

fn default_matching_rate() -> u32 {
    30
}
fn default_matching_burst() -> u32 {
    100
}

fn default_max_credits() -> u64 {
    50_000
}
fn default_refill() -> u64 {
    10_000
}
fn default_cost() -> u64 {
    500
}
fn default_subscribe_cost() -> u64 {
    3_000
}
fn default_instruments_cost() -> u64 {
    10_000
}

impl Default for RateLimits {
    fn default() -> Self {
        Self {
            enabled: false,
            max_credits: default_max_credits(),
            refill_per_sec: default_refill(),
            request_cost: default_cost(),
            subscribe_cost: default_subscribe_cost(),
            instruments_cost: default_instruments_cost(),
            matching_rate: default_matching_rate(),
            matching_burst: default_matching_burst(),
        }
    }
}

/// How the simulated exchange runs.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SimConfig {
    /// Whether `keel run` hosts the simulator as a supervised child (the local
    /// default; never in production).
    #[serde(default)]
    pub in_daemon: bool,
    /// Where it listens (WebSocket, HTTP and `/sim/` on one port).
    #[serde(default = "default_listen")]
    pub listen: SocketAddr,
    /// The same seed and instruments give the same trades and book changes.
    #[serde(default = "default_seed")]
    pub seed: u64,
    /// Instruments to list and trade; empty: BTC and ETH perpetuals, futures and options.
    #[serde(default)]
    pub instruments: Vec<String>,
    /// Trades generated per second, across all instruments.
    #[serde(default = "default_rate")]
    pub trades_per_sec: f64,
    /// Client id accepted by `public/auth` (none: authentication always fails).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_id: Option<String>,
    /// Its secret.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_secret: Option<Secret>,
    /// Trades kept per instrument for the history methods.
    #[serde(default = "default_history")]
    pub history_limit: usize,
    /// Shortest `set_heartbeat` interval accepted (Deribit: 10 s).
    #[serde(with = "humantime_serde", default = "default_min_heartbeat")]
    pub min_heartbeat: Duration,
    /// The request credits each session has, as Deribit meters them.
    #[serde(default)]
    pub rate_limits: RateLimits,
    /// A PEM certificate chain: with `tls_key`, the port serves `wss://` and
    /// `https://` instead of plain text.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls_cert: Option<PathBuf>,
    /// The PEM private key of `tls_cert`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls_key: Option<PathBuf>,
    /// A recorded session (JSON lines of real notifications) served to
    /// subscribers instead of generated data.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replay: Option<PathBuf>,
    /// Replay pace: 1 is the recorded pace, 10 ten times faster, 0 as fast as
    /// the connection takes it.
    #[serde(default = "default_replay_speed")]
    pub replay_speed: f64,
    /// How long a closed order stays in the recent views of orders
    /// (`get_order_state_by_label`, `get_order_history_by_instrument` without
    /// `historical`); older ones only the historical view holds. Deribit: 30 min.
    #[serde(with = "humantime_serde", default = "default_recent_orders")]
    pub recent_orders: Duration,
    /// When the trading day ends, after midnight UTC: resting `good_til_day`
    /// orders are cancelled then (cancel_reason `settlement`). Deribit: 8h,
    /// its daily settlement at 08:00 UTC.
    #[serde(with = "humantime_serde", default = "default_day_end")]
    pub day_end: Duration,
}

fn default_day_end() -> Duration {
    Duration::from_secs(8 * 3600)
}

fn default_recent_orders() -> Duration {
    Duration::from_secs(30 * 60)
}

fn default_replay_speed() -> f64 {
    1.0
}

fn default_listen() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 8765))
}
fn default_seed() -> u64 {
    1
}
fn default_rate() -> f64 {
    50.0
}
fn default_history() -> usize {
    1_000_000
}
fn default_min_heartbeat() -> Duration {
    Duration::from_secs(10)
}

impl Default for SimConfig {
    fn default() -> Self {
        Self {
            in_daemon: false,
            listen: default_listen(),
            seed: default_seed(),
            instruments: Vec::new(),
            trades_per_sec: default_rate(),
            client_id: None,
            client_secret: None,
            history_limit: default_history(),
            min_heartbeat: default_min_heartbeat(),
            rate_limits: RateLimits::default(),
            tls_cert: None,
            tls_key: None,
            replay: None,
            replay_speed: default_replay_speed(),
            recent_orders: default_recent_orders(),
            day_end: default_day_end(),
        }
    }
}

impl SimConfig {
    /// Every problem, as `(key, what is expected)`.
    pub fn problems(&self) -> Vec<(String, String)> {
        let mut problems = Vec::new();
        if !(self.trades_per_sec.is_finite() && (0.0..=1_000_000.0).contains(&self.trades_per_sec))
        {
            problems.push(("trades_per_sec".into(), "a number from 0 to 1000000".into()));
        }
        problems.extend(
            keel_core::bounds::Check::new()
                .count("history_limit", self.history_limit as u64, 1, 10_000_000)
                .duration(
                    "min_heartbeat",
                    self.min_heartbeat,
                    keel_core::bounds::SECOND,
                    10 * keel_core::bounds::MINUTE,
                )
                .duration(
                    "day_end",
                    self.day_end,
                    Duration::ZERO,
                    keel_core::bounds::DAY - Duration::from_millis(1),
                )
                .duration(
                    "recent_orders",
                    self.recent_orders,
                    keel_core::bounds::SECOND,
                    keel_core::bounds::DAY,
                )
                .finish(),
        );
        if !(self.replay_speed.is_finite() && (0.0..=10_000.0).contains(&self.replay_speed)) {
            problems.push(("replay_speed".into(), "a number from 0 to 10000".into()));
        }
        if self.tls_cert.is_some() != self.tls_key.is_some() {
            problems.push(("tls_key".into(), "tls_cert and tls_key together".into()));
        }
        if self.client_id.is_some() != self.client_secret.is_some() {
            problems.push((
                "client_secret".into(),
                "client_id and client_secret together".into(),
            ));
        }
        let now = std::time::SystemTime::now();
        for (i, name) in self.instruments.iter().enumerate() {
            if super::catalog::spec(name, i as u64, now).is_none() {
                problems.push((
                    "instruments".into(),
                    format!("Deribit-style names (BTC-PERPETUAL, BTC-27DEC24, BTC-27DEC24-60000-C), not `{name}`"),
                ));
            }
        }
        problems
    }
}
