//! The `[executor]` section.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use keel_core::secret::Secret;

/// What happens to open orders when the executor shuts down.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OnShutdown {
    /// Cancel every open order Keel placed (by label), then log out.
    Cancel,
    /// Leave them resting (log out, so cancel on disconnect does not fire).
    Leave,
}

/// Pre-trade limits of one instrument.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InstrumentLimits {
    /// Largest amount of one order.
    pub max_amount: f64,
    /// Largest notional of one order: amount × price for linear contracts,
    /// the amount itself where it is already in USD (inverse contracts).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_notional: Option<f64>,
    /// Largest absolute position the order may leave (filled orders plus
    /// this one), in the amount's unit.
    pub max_position: f64,
    /// A limit price may be at most this fraction away from the mark price
    /// (0.05: within 5%).
    #[serde(default = "default_band")]
    pub price_band: f64,
}

fn default_band() -> f64 {
    0.05
}

/// How the executor trades: its own authenticated session, its limits.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExecutorConfig {
    /// Whether the daemon runs the executor (off unless asked: it trades).
    #[serde(default)]
    pub enabled: bool,
    /// The exchange's WebSocket endpoint (its own session, not the receiver's).
    #[serde(default = "default_url")]
    pub url: String,
    /// A PEM CA trusted for `wss://` besides the public roots.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_file: Option<std::path::PathBuf>,
    /// API key id (required when enabled).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_id: Option<String>,
    /// Its secret (or `client_secret_file`, or `KEEL__EXECUTOR__CLIENT_SECRET`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_secret: Option<Secret>,
    /// Instruments it may trade, each with its limits; an intent for any other
    /// is rejected. Names are Deribit's, upper case: a name read in lower
    /// case (environment keys are lower-cased, `KEEL__EXECUTOR__INSTRUMENTS__
    /// BTC-PERPETUAL__MAX_AMOUNT` included) is taken in upper case.
    #[serde(default, deserialize_with = "upper_case_names")]
    pub instruments: BTreeMap<String, InstrumentLimits>,
    /// Open orders at most, across instruments.
    #[serde(default = "default_max_open")]
    pub max_open_orders: usize,
    /// An order request unanswered this long is ambiguous: the executor asks
    /// the exchange by label before doing anything else with it.
    #[serde(with = "humantime_serde", default = "default_request_timeout")]
    pub request_timeout: Duration,
    /// Each request carries `valid_until` this far ahead: the exchange will not
    /// start it later, which bounds how long an ambiguous order can surprise us.
    #[serde(with = "humantime_serde", default = "default_valid_for")]
    pub valid_for: Duration,
    /// Sends of one order at most (the first included): a retryable refusal
    /// (10040, 10047, ...) or a lookup that found nothing leads to another.
    #[serde(default = "default_max_sends")]
    pub max_sends: u32,
    /// Delay before a resend after a retryable refusal (doubled each time).
    #[serde(with = "humantime_serde", default = "default_retry_delay")]
    pub retry_delay: Duration,
    /// `public/set_heartbeat` interval; nothing heard for twice this long = dead.
    #[serde(with = "humantime_serde", default = "default_heartbeat")]
    pub heartbeat: Duration,
    /// Time allowed to connect, authenticate, enable cancel on disconnect,
    /// subscribe and reconcile.
    #[serde(with = "humantime_serde", default = "default_connect")]
    pub connect_timeout: Duration,
    /// Intents read per poll.
    #[serde(default = "default_batch")]
    pub batch: usize,
    /// Consumer name in group `executor`; empty: `{hostname}-{pid}`.
    #[serde(default)]
    pub consumer: String,
    /// Open orders at shutdown: `cancel` (default) or `leave`.
    #[serde(default = "default_on_shutdown")]
    pub on_shutdown: OnShutdown,
    /// Refuse an order that would trade against one of Keel's own orders
    /// resting on the other side (a wash trade), instead of sending it.
    #[serde(default = "default_prevent_self_trades")]
    pub prevent_self_trades: bool,
}

fn default_url() -> String {
    "ws://127.0.0.1:8765/ws/api/v2".into()
}
fn default_max_open() -> usize {
    50
}
fn default_request_timeout() -> Duration {
    Duration::from_secs(5)
}
fn default_valid_for() -> Duration {
    Duration::from_secs(10)
}
fn default_max_sends() -> u32 {
    5
}
fn default_retry_delay() -> Duration {
    Duration::from_millis(200)
}
fn default_heartbeat() -> Duration {
    Duration::from_secs(10)
}
fn default_connect() -> Duration {
    Duration::from_secs(10)
}
fn default_batch() -> usize {
    100
}
fn default_on_shutdown() -> OnShutdown {
    OnShutdown::Cancel
}
fn default_prevent_self_trades() -> bool {
    true
}

impl Default for ExecutorConfig {
    fn default() -> Self {
        Self {
            enabled: false,
            url: default_url(),
            ca_file: None,
            client_id: None,
            client_secret: None,
            instruments: BTreeMap::new(),
            max_open_orders: default_max_open(),
            request_timeout: default_request_timeout(),
            valid_for: default_valid_for(),
            max_sends: default_max_sends(),
            retry_delay: default_retry_delay(),
            heartbeat: default_heartbeat(),
            connect_timeout: default_connect(),
            batch: default_batch(),
            consumer: String::new(),
            on_shutdown: default_on_shutdown(),
            prevent_self_trades: default_prevent_self_trades(),
        }
    }
}

impl ExecutorConfig {
    /// Every problem, as `(key, what is expected)`.
    pub fn problems(&self) -> Vec<(String, String)> {
        use keel_core::bounds::{Check, MINUTE, SECOND};
        let ms = Duration::from_millis;
        let mut check = Check::new();
        check
            .url("url", &self.url, &["ws", "wss"])
            .count("max_open_orders", self.max_open_orders as u64, 1, 100_000)
            .count("max_sends", self.max_sends.into(), 1, 100)
            .count("batch", self.batch as u64, 1, 10_000)
            .duration("request_timeout", self.request_timeout, ms(100), MINUTE)
            .duration("valid_for", self.valid_for, SECOND, 10 * MINUTE)
            .duration("retry_delay", self.retry_delay, ms(10), MINUTE)
            .duration("heartbeat", self.heartbeat, 10 * SECOND, 10 * MINUTE)
            .duration("connect_timeout", self.connect_timeout, ms(100), 5 * MINUTE);
        if self.valid_for < self.request_timeout {
            check.push("valid_for", "at least request_timeout");
        }
        let names: Vec<String> = self.instruments.keys().cloned().collect();
        if !names.is_empty() {
            check.instruments("instruments", &names);
        }
        for (name, limits) in &self.instruments {
            let positive = |x: f64| x.is_finite() && x > 0.0;
            if !positive(limits.max_amount) {
                check.push(
                    format!("instruments.{name}.max_amount"),
                    "a positive number",
                );
            }
            if !positive(limits.max_position) {
                check.push(
                    format!("instruments.{name}.max_position"),
                    "a positive number",
                );
            }
            if limits.max_notional.is_some_and(|n| !positive(n)) {
                check.push(
                    format!("instruments.{name}.max_notional"),
                    "a positive number",
                );
            }
            if !(limits.price_band > 0.0 && limits.price_band <= 1.0) {
                check.push(
                    format!("instruments.{name}.price_band"),
                    "a fraction in (0, 1]",
                );
            }
        }
        if self.enabled {
            if self.client_id.is_none() || self.client_secret.is_none() {
                check.push("client_id", "client_id and client_secret when enabled");
            }
            if self.instruments.is_empty() {
                check.push(
                    "instruments",
                    "at least one instrument with limits when enabled",
                );
            }
        }
        let mut problems = check.finish();
        if let Err(e) = keel_deribit::tls::client_config(self.ca_file.as_deref()) {
            problems.push((
                "ca_file".into(),
                format!("a readable PEM CA certificate ({e})"),
            ));
        }
        problems
    }

    /// The consumer name: configured, or unique to this process.
    pub fn consumer_name(&self) -> String {
        crate::service::consumer::consumer_name(&self.consumer)
    }
}

fn upper_case_names<'de, D: serde::Deserializer<'de>>(
    deserializer: D,
) -> Result<BTreeMap<String, InstrumentLimits>, D::Error> {
    let named: BTreeMap<String, InstrumentLimits> = serde::Deserialize::deserialize(deserializer)?;
    Ok(named
        .into_iter()
        .map(|(name, limits)| (name.to_uppercase(), limits))
        .collect())
}
