//! The `[receiver]` section.

use keel_deribit::Interval;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use keel_core::secret::Secret;

/// How the receiver connects to the exchange and hands trades to Redis.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReceiverConfig {
    /// Whether the daemon runs a receiver.
    #[serde(default = "yes")]
    pub enabled: bool,
    /// The exchange's WebSocket endpoint.
    #[serde(default = "default_url")]
    pub url: String,
    /// Instruments whose trades are received.
    #[serde(default = "default_instruments")]
    pub instruments: Vec<String>,
    /// `raw` (needs credentials), `100ms` or `agg2`.
    #[serde(default = "default_interval")]
    pub interval: Interval,
    /// A PEM CA trusted for `wss://` (and the backfill's `https://`) besides
    /// the public roots: a `keel sim` serving its own certificate.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_file: Option<std::path::PathBuf>,
    /// Also follow each instrument's order book (continuity checked, resynchronised on gaps).
    #[serde(default)]
    pub book: bool,
    /// API key id, when the exchange wants authentication.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_id: Option<String>,
    /// Its secret (or `client_secret_file`, or `KEEL__RECEIVER__CLIENT_SECRET`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_secret: Option<Secret>,
    /// `public/set_heartbeat` interval; a connection that hears nothing for twice
    /// this long is considered dead.
    #[serde(with = "humantime_serde", default = "default_heartbeat")]
    pub heartbeat: Duration,
    /// No data frame (heartbeats do not count) for this long and the connection
    /// is considered stalled.
    #[serde(with = "humantime_serde", default = "default_stall")]
    pub stall_timeout: Duration,
    /// Time allowed to connect and subscribe.
    #[serde(with = "humantime_serde", default = "default_connect")]
    pub connect_timeout: Duration,
    /// Entries per Redis write.
    #[serde(default = "default_batch")]
    pub batch_size: usize,
    /// A partial batch waits at most this long.
    #[serde(with = "humantime_serde", default = "default_linger")]
    pub linger: Duration,
    /// The most trades of one instrument one stream entry holds (a JSON array
    /// in field `b`; a lone trade is written as `t`). Packing amortises what
    /// Redis and its clients spend per entry (the XADD, its reply, the
    /// consumers' reply parsing), which dominated a saturated daemon's CPU;
    /// 1 writes one entry per trade. `[redis] stream_maxlen` and
    /// `max_backlog` count trades, each entry taken as full.
    #[serde(default = "default_trades_per_entry")]
    pub trades_per_entry: usize,
    /// Entries held while Redis is unreachable; beyond it the oldest trades are
    /// dropped and recorded as gaps.
    #[serde(default = "default_buffer")]
    pub buffer_limit: usize,
    /// The same bound in bytes (payloads and names, plus a per-entry overhead),
    /// so unusually large trades cannot exhaust memory within the entry count.
    #[serde(default = "default_buffer_bytes")]
    pub buffer_limit_bytes: usize,
    /// Trades a trade stream may hold that the slowest consumer group (the
    /// distributor's, the analyzer's) has not acknowledged. Beyond it the
    /// receiver stops adding to that stream: trades wait in its buffer, and
    /// past `buffer_limit` the oldest are dropped and recorded as gaps for
    /// repair. Below `[redis] stream_maxlen`, so the stream's own trimming never
    /// removes an entry a group has not read.
    #[serde(default = "default_max_backlog")]
    pub max_backlog: u64,
    /// A trade older than this (by its own time) is rejected at the edge.
    #[serde(with = "humantime_serde", default = "default_max_trade_age")]
    pub max_trade_age: Duration,
    /// A `trade_seq` more than this ahead of the last one is rejected unless
    /// the next trade confirms the jump.
    #[serde(default = "default_max_seq_jump")]
    pub max_seq_jump: i64,
}

fn yes() -> bool {
    true
}
fn default_url() -> String {
    "ws://127.0.0.1:8765/ws/api/v2".into()
}
fn default_instruments() -> Vec<String> {
    vec!["BTC-PERPETUAL".into(), "ETH-PERPETUAL".into()]
}
fn default_interval() -> Interval {
    Interval::Ms100
}
fn default_heartbeat() -> Duration {
    Duration::from_secs(10)
}
fn default_stall() -> Duration {
    Duration::from_secs(10)
}
fn default_connect() -> Duration {
    Duration::from_secs(10)
}
fn default_batch() -> usize {
    1000
}
fn default_linger() -> Duration {
    Duration::from_millis(20)
}
fn default_trades_per_entry() -> usize {
    16
}
fn default_buffer() -> usize {
    200_000
}
fn default_buffer_bytes() -> usize {
    256 * 1024 * 1024
}
fn default_max_backlog() -> u64 {
    500_000
}
fn default_max_trade_age() -> Duration {
    Duration::from_secs(3600)
}
fn default_max_seq_jump() -> i64 {
    1_000_000
}

impl Default for ReceiverConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            url: default_url(),
            instruments: default_instruments(),
            interval: default_interval(),
            ca_file: None,
            book: false,
            client_id: None,
            client_secret: None,
            heartbeat: default_heartbeat(),
            stall_timeout: default_stall(),
            connect_timeout: default_connect(),
            batch_size: default_batch(),
            linger: default_linger(),
            trades_per_entry: default_trades_per_entry(),
            buffer_limit: default_buffer(),
            buffer_limit_bytes: default_buffer_bytes(),
            max_backlog: default_max_backlog(),
            max_trade_age: default_max_trade_age(),
            max_seq_jump: default_max_seq_jump(),
        }
    }
}

impl ReceiverConfig {
    /// Every problem, as `(key, what is expected)`.
    pub fn problems(&self) -> Vec<(String, String)> {
        let mut p = Vec::new();
        if let Err(e) = keel_deribit::tls::client_config(self.ca_file.as_deref()) {
            p.push((
                "ca_file".into(),
                format!("a readable PEM CA certificate ({e})"),
            ));
        }
        use keel_core::bounds::{Check, DAY, HOUR, MINUTE, SECOND};
        let ms = Duration::from_millis;
        p.extend(
            Check::new()
                .url("url", &self.url, &["ws", "wss"])
                .instruments("instruments", &self.instruments)
                .duration("heartbeat", self.heartbeat, SECOND, 10 * MINUTE)
                .duration("stall_timeout", self.stall_timeout, SECOND, HOUR)
                .duration("connect_timeout", self.connect_timeout, ms(100), 5 * MINUTE)
                .duration("linger", self.linger, Duration::ZERO, 10 * SECOND)
                .duration("max_trade_age", self.max_trade_age, MINUTE, 30 * DAY)
                .count("batch_size", self.batch_size as u64, 1, 100_000)
                .count("trades_per_entry", self.trades_per_entry as u64, 1, 1000)
                .count("buffer_limit", self.buffer_limit as u64, 1, 100_000_000)
                .count("max_backlog", self.max_backlog, 1000, 1_000_000_000)
                .count(
                    "buffer_limit_bytes",
                    self.buffer_limit_bytes as u64,
                    1024,
                    1 << 36,
                )
                .count(
                    "max_seq_jump",
                    self.max_seq_jump.max(0) as u64,
                    1,
                    1_000_000_000_000,
                )
                .finish(),
        );
        if self.interval == Interval::Raw && self.client_id.is_none() {
            p.push((
                "interval".into(),
                "100ms or agg2 without credentials (raw needs client_id)".into(),
            ));
        }
        if self.client_id.is_some() != self.client_secret.is_some() {
            p.push((
                "client_secret".into(),
                "client_id and client_secret together".into(),
            ));
        }
        if self.buffer_limit < self.batch_size {
            p.push(("buffer_limit".into(), "at least batch_size".into()));
        }
        p
    }
}
