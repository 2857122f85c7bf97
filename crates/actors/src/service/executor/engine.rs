//! The executor's work on one session: set up (authenticate, cancel on
//! disconnect, subscribe), reconcile what PostgreSQL and the exchange know,
//! then take intents, send orders and follow what the exchange says, until
//! the session ends or the executor is asked to stop.
//!
//! Exactly once: an order is recorded before it is sent, under its label; a
//! request whose outcome is not known (no answer in time, the session lost)
//! is never sent again blindly: the exchange is asked by label, and the same
//! label goes out again only when the exchange has nothing and the request's
//! `valid_until` has passed, so the first one can no longer start.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use serde_json::{json, Value};
use tokio::sync::mpsc;
use tokio::time::{timeout_at, Instant};
use tokio_util::sync::CancellationToken;

use keel_core::logs::Repeats;
use keel_core::registry::Probe;
use keel_deribit::model::{to_ms, AuthResult, InstrumentInfo, Ticker};
use keel_deribit::private::{
    retryable, AccountSummary, CancelOnDisconnect, Limits, Order, OrderResult, OrderState,
    Position, UserChanges, UserTrade, UserTradesPage,
};
use keel_deribit::{RpcError, ServerFrame};

use super::config::{ExecutorConfig, OnShutdown};
use super::intent::{self, Intent, Place, DEAD_STREAM, EVENTS_STREAM, INTENTS_STREAM};
use super::session::{Inbound, Socket};
use crate::resource::pg::{FillRow, NewOrder, OrderUpdate, PgClient, PgError};
use crate::resource::redis::{Fields, RedisClient, RedisError, StreamEntry};
use crate::service::now_ms;

/// The consumer group of the intents stream.
pub const GROUP: &str = "executor";
/// How often timers (request deadlines, retries, lookups) are looked at.
const TICK: Duration = Duration::from_millis(50);
/// Frames handled in one turn of the loop at most (their writes one commit).
const DRAIN: usize = 256;
/// How long the writes left queued when a session ends may take.
const LAST_FLUSH: Duration = Duration::from_secs(2);
/// How long past `valid_until` a lookup waits, for the exchange's clock.
const VALID_UNTIL_MARGIN_MS: i64 = 500;
/// What a shutdown allows its cancels.
const CANCEL_WAIT: Duration = Duration::from_secs(3);

/// An order as it would stand, for the limits.
struct Proposed<'a> {
    instrument: &'a str,
    buying: bool,
    amount: f64,
    filled: f64,
    price: Option<f64>,
    reduce_only: bool,
    /// The label of the order an amend replaces (not counted twice).
    replacing: Option<&'a str>,
}

/// Ranks of states: an order's state only moves to a higher rank.
pub(super) fn rank(state: &str) -> i16 {
    match state {
        "pending" => 0,
        "sent" => 1,
        "unknown" => 2,
        "open" => 3,
        "partially_filled" => 4,
        _ => 5,
    }
}

/// Keel's name for the exchange's state of `order`.
pub(super) fn state_of(order: &Order) -> &'static str {
    match order.order_state {
        OrderState::Open | OrderState::Untriggered if order.filled() > 0.0 => "partially_filled",
        OrderState::Open | OrderState::Untriggered => "open",
        OrderState::Filled => "filled",
        OrderState::Cancelled => "cancelled",
        OrderState::Rejected => "rejected",
    }
}

/// Why the work on a session ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Ended {
    /// The session went away: reconnect (an outage, not a failure).
    Lost(String),
    /// The exchange refused what trading needs (credentials, cancel on
    /// disconnect, an instrument), or a store refused data: a failure.
    Refused(String),
}

impl std::fmt::Display for Ended {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Ended::Lost(why) | Ended::Refused(why) => f.write_str(why),
        }
    }
}

impl From<PgError> for Ended {
    fn from(e: PgError) -> Self {
        Ended::Refused(format!("PostgreSQL: {e}"))
    }
}

impl From<RedisError> for Ended {
    fn from(e: RedisError) -> Self {
        Ended::Refused(format!("Redis: {e}"))
    }
}

/// What a blocking call got.
#[derive(Debug)]
enum CallError {
    Rpc(RpcError),
    Timeout,
    Lost(String),
}

impl std::fmt::Display for CallError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            CallError::Rpc(e) => write!(f, "{e}"),
            CallError::Timeout => f.write_str("no answer in time"),
            CallError::Lost(why) => f.write_str(why),
        }
    }
}

/// Counters shown in the registry.
#[derive(Debug, Default)]
pub struct Counters {
    /// Intents read.
    pub intents: AtomicU64,
    /// Intents dead-lettered.
    pub invalid: AtomicU64,
    /// Intents refused by a limit.
    pub refused: AtomicU64,
    /// Intents for a label already known (not sent again).
    pub duplicates: AtomicU64,
    /// Order requests sent (resends included).
    pub sends: AtomicU64,
    /// Requests whose outcome was unknown at their deadline.
    pub ambiguous: AtomicU64,
    /// Lookups by label.
    pub lookups: AtomicU64,
    /// Updates older than what was applied, ignored.
    pub stale: AtomicU64,
    /// Fills stored.
    pub fills: AtomicU64,
    /// Orders on the exchange Keel did not place (reported, never touched),
    /// each counted once across sessions.
    pub foreign: AtomicU64,
    /// Their order ids (bounded: counting starts again past `FOREIGN_KEPT`).
    foreign_seen: parking_lot::Mutex<std::collections::HashSet<String>>,
    /// Labels the exchange holds more than one order for (must stay 0).
    pub doubled: AtomicU64,
    /// Fills whose trade id is stored already for another order (must stay
    /// 0: the exchange reused an id; the fill is not stored, loudly).
    pub conflicting: AtomicU64,
    /// Orders whose intent's `valid_until` passed before they were sent.
    pub late: AtomicU64,
    /// Notifications on the account's channels that did not decode (ignored
    /// and logged; the next reconciliation reads the state back).
    pub undecoded: AtomicU64,
    /// Orders not terminal now.
    pub open: AtomicU64,
    /// The kill switch is on: no intake, open orders cancelled.
    pub halted: std::sync::atomic::AtomicBool,
}

const FAMILIES: [(&str, &str); 14] = [
    ("intents", "Intents read."),
    ("invalid", "Intents dead-lettered."),
    ("refused", "Intents refused by a limit."),
    ("duplicates", "Intents for a label already known."),
    ("sends", "Order requests sent."),
    ("ambiguous", "Order requests unanswered at their deadline."),
    ("lookups", "Lookups by label."),
    ("stale", "Order updates older than the state applied."),
    ("fills", "Fills stored."),
    ("foreign", "Orders on the account Keel did not place."),
    (
        "doubled",
        "Labels with more than one order on the exchange.",
    ),
    (
        "conflicting",
        "Fills whose trade id is stored for another order.",
    ),
    (
        "late",
        "Orders whose valid_until passed before they were sent.",
    ),
    (
        "undecoded",
        "Account notifications that did not decode, ignored.",
    ),
];

const OPEN: keel_core::stats::Family =
    keel_core::stats::Family::gauge("keel_executor_open_orders", "Orders not terminal.");
const HALTED: keel_core::stats::Family =
    keel_core::stats::Family::gauge("keel_executor_halted", "1 while the kill switch is on.");

const COUNTERS: [keel_core::stats::Family; 14] = [
    keel_core::stats::Family::counter("keel_executor_intents_total", "Intents read."),
    keel_core::stats::Family::counter("keel_executor_invalid_total", "Intents dead-lettered."),
    keel_core::stats::Family::counter(
        "keel_executor_refused_total",
        "Intents and amends refused by a limit.",
    ),
    keel_core::stats::Family::counter(
        "keel_executor_duplicates_total",
        "Intents for a label already known, not sent again.",
    ),
    keel_core::stats::Family::counter(
        "keel_executor_sends_total",
        "Order requests sent, resends included.",
    ),
    keel_core::stats::Family::counter(
        "keel_executor_ambiguous_total",
        "Order requests unanswered at their deadline.",
    ),
    keel_core::stats::Family::counter("keel_executor_lookups_total", "Lookups by label."),
    keel_core::stats::Family::counter(
        "keel_executor_stale_total",
        "Order updates older than the state applied, ignored.",
    ),
    keel_core::stats::Family::counter("keel_executor_fills_total", "Fills stored."),
    keel_core::stats::Family::counter(
        "keel_executor_foreign_total",
        "Orders on the account Keel did not place.",
    ),
    keel_core::stats::Family::counter(
        "keel_executor_doubled_total",
        "Labels with more than one order on the exchange (must stay 0).",
    ),
    keel_core::stats::Family::counter(
        "keel_executor_conflicting_fills_total",
        "Fills whose trade id is stored already for another order, not stored (must stay 0).",
    ),
    keel_core::stats::Family::counter(
        "keel_executor_late_total",
        "Orders whose intent's valid_until passed before they were sent, not sent.",
    ),
    keel_core::stats::Family::counter(
        "keel_executor_undecoded_total",
        "Notifications on the account's channels that did not decode, ignored (must stay 0).",
    ),
];

impl keel_core::stats::Stats for Counters {
    fn show(&self) -> Option<Value> {
        Some(self.to_json())
    }

    fn export(&self, actor: &str, out: &mut keel_core::stats::Samples) {
        let labels = [("actor", actor)];
        let shown = self.to_json();
        for (family, (name, _)) in COUNTERS.iter().zip(FAMILIES) {
            out.add(family, &labels, shown[name].as_f64().unwrap_or(0.0));
        }
        out.add(&OPEN, &labels, self.open.load(Ordering::Relaxed) as f64);
        out.add(
            &HALTED,
            &labels,
            f64::from(u8::from(self.halted.load(Ordering::Relaxed))),
        );
    }
}

impl Counters {
    /// The counters as JSON, for the registry.
    pub fn to_json(&self) -> Value {
        let n = |c: &AtomicU64| c.load(Ordering::Relaxed);
        json!({
            "intents": n(&self.intents), "invalid": n(&self.invalid),
            "refused": n(&self.refused), "duplicates": n(&self.duplicates),
            "sends": n(&self.sends), "ambiguous": n(&self.ambiguous),
            "lookups": n(&self.lookups), "stale": n(&self.stale),
            "fills": n(&self.fills), "foreign": n(&self.foreign),
            "doubled": n(&self.doubled), "conflicting": n(&self.conflicting),
            "late": n(&self.late), "undecoded": n(&self.undecoded),
            "open": n(&self.open),
            "halted": self.halted.load(Ordering::Relaxed),
        })
    }
}

/// A token bucket sized from the account's `limits`: requests per second and
/// how many at once.
#[derive(Debug, Clone)]
struct Budget {
    rate: f64,
    burst: f64,
    tokens: f64,
    at: Instant,
}

impl Budget {
    fn new(rate: u32, burst: u32) -> Self {
        let burst = f64::from(burst.max(1));
        Self {
            rate: f64::from(rate.max(1)),
            burst,
            tokens: burst,
            at: Instant::now(),
        }
    }

    fn refill(&mut self) {
        let now = Instant::now();
        self.tokens =
            (self.tokens + now.duration_since(self.at).as_secs_f64() * self.rate).min(self.burst);
        self.at = now;
    }

    /// Takes one request if more than `keep` would be left; else how long
    /// until one is.
    fn take(&mut self, keep: f64) -> Result<(), Duration> {
        self.refill();
        if self.tokens >= 1.0 + keep {
            self.tokens -= 1.0;
            Ok(())
        } else {
            Err(Duration::from_secs_f64(
                (1.0 + keep - self.tokens) / self.rate,
            ))
        }
    }

    fn can_take(&mut self, keep: f64) -> bool {
        self.refill();
        self.tokens >= 1.0 + keep
    }
}

/// Order entry keeps this share of the matching engine's burst free, so a
/// cancel (or a halt's cancels) always goes out.
const CANCEL_HEADROOM: f64 = 0.2;
/// How often the account's limits are read again (Deribit recomputes tiers hourly).
const LIMITS_EVERY: Duration = Duration::from_secs(3600);

/// An instrument as the exchange lists it: what limits and lookups need.
#[derive(Debug, Clone)]
struct Spec {
    currency: String,
    inverse: bool,
}

/// An order not yet terminal, as the executor follows it.
#[derive(Debug, Clone)]
struct Tracked {
    order: NewOrder,
    state: String,
    rank: i16,
    order_id: Option<String>,
    filled: f64,
    last_update_ms: i64,
    sends: u32,
    /// A request (place, lookup, cancel) is out for it.
    in_flight: bool,
    retry_at: Option<Instant>,
    lookup_at: Option<Instant>,
    /// The strategy cancelled it before the exchange acknowledged it: it is
    /// never sent again, and cancelled by id once the exchange shows it.
    cancel_requested: bool,
    /// An amend (price, amount) that came before the exchange acknowledged
    /// the order: sent once it does (the latest wins).
    amend_requested: Option<(Option<f64>, Option<f64>)>,
    /// A cancel is out for it (it counts as unanswered at the limit).
    cancelling: bool,
}

/// A request out on the socket.
#[derive(Debug, Clone)]
enum Waiting {
    Place {
        label: String,
        deadline: Instant,
    },
    Lookup {
        label: String,
        deadline: Instant,
    },
    Cancel {
        label: String,
        deadline: Instant,
    },
    Amend {
        label: String,
        amount: f64,
        price: Option<f64>,
        deadline: Instant,
    },
    Refresh {
        deadline: Instant,
    },
    Limits {
        deadline: Instant,
    },
}

impl Waiting {
    fn deadline(&self) -> Instant {
        match self {
            Waiting::Place { deadline, .. }
            | Waiting::Lookup { deadline, .. }
            | Waiting::Cancel { deadline, .. }
            | Waiting::Amend { deadline, .. }
            | Waiting::Refresh { deadline }
            | Waiting::Limits { deadline } => *deadline,
        }
    }
}

/// A new order taken from an intent, waiting to be recorded with the others
/// of its batch.
#[derive(Debug)]
enum Prepared {
    /// Its label is an order followed already: nothing to record.
    Known { intent_id: String, label: String },
    /// To record (as refused by Keel's limits, or to send).
    New {
        order: Box<NewOrder>,
        send_now: bool,
        refusal: Option<String>,
    },
}

/// What the order history says of a label the recent views do not show.
#[derive(Debug)]
enum History {
    Found(Box<Order>),
    /// Read back past the time its intent was written: never placed.
    Absent,
    /// Not read back far enough.
    Unsure,
}

/// Why an order whose intent's `valid_until` passed is not sent.
const LATE: &str = "its valid_until passed before it was sent";

/// Orders per page of order history (Deribit's most).
const HISTORY_PAGE: usize = 1000;
/// Pages of order history read per view before giving up for now.
const MAX_HISTORY_PAGES: usize = 20;
/// When an unfinished read of the order history is tried again.
const HISTORY_RETRY: Duration = Duration::from_secs(30);
/// Allowed difference between Redis's clock (intent ids) and the exchange's.
const CLOCK_MARGIN_MS: i64 = 5 * 60_000;

/// An event's stream entry, stamped with the time it was queued.
fn event_entry(fields: Vec<(&str, String)>) -> Fields {
    let mut entry: Fields = fields
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.into_bytes()))
        .collect();
    entry.push(("at_ms".into(), now_ms().to_string().into_bytes()));
    entry
}

/// The milliseconds part of a Redis stream id (`1700000000000-0`).
fn stream_id_ms(id: &str) -> Option<i64> {
    id.split_once('-').map_or(id, |(ms, _)| ms).parse().ok()
}

/// Foreign order ids remembered to count each once (then counting restarts).
const FOREIGN_KEPT: usize = 100_000;

/// Intents handled in one batch at most (their new orders one commit).
const INTAKE_BATCH: usize = 64;

/// Why an order cancelled before it reached the exchange is closed.
const NEVER_SENT: &str = "cancelled before it reached the exchange";

/// Fills per page when reading them back (Deribit's maximum).
const FILL_PAGE: u32 = 1000;
/// Pages of fills read back per instrument and view at most (a bound on one
/// reconciliation: 100,000 fills).
const MAX_FILL_PAGES: usize = 100;

/// Everything one session's work needs.
pub(super) struct Engine {
    pub(super) cfg: ExecutorConfig,
    pub(super) redis: RedisClient,
    pub(super) pg: PgClient,
    pub(super) counters: Arc<Counters>,
    pub(super) probe: Probe,
    pub(super) stop: CancellationToken,
    /// The kill switch.
    halted: tokio::sync::watch::Receiver<bool>,
    socket: Option<Socket>,
    specs: HashMap<String, Spec>,
    marks: HashMap<String, f64>,
    positions: HashMap<String, f64>,
    orders: HashMap<String, Tracked>,
    by_id: HashMap<String, String>,
    waiting: HashMap<u64, Waiting>,
    /// Frames that arrived during a blocking call.
    buffered: VecDeque<ServerFrame>,
    /// A new order held back at `max_open_orders` while orders are
    /// unanswered (taken again, or refused, when they resolve).
    /// (With the intents of its batch that came after it.)
    held: VecDeque<StreamEntry>,
    refresh_token: Option<String>,
    refresh_at: Option<Instant>,
    foreign_log: Repeats,
    /// Order entry and cancels (`limits.matching_engine.trading.total`).
    matching: Budget,
    /// Every other call (`limits.non_matching_engine`).
    other: Budget,
    limits_at: Instant,
    /// Writes off the path of the next request, made by `flush`.
    out: Outbox,
}

/// What the engine has decided and not yet written: state changes, events
/// and acknowledgements. Flushed after each turn of the loop (acknowledgements
/// in bigger batches), so one commit carries the answers that arrived
/// together and the next order does not wait for the last one's writes.
#[derive(Debug, Default)]
struct Outbox {
    updates: Vec<OrderUpdate>,
    events: Vec<Fields>,
    /// How many of `events`, from the first, only pass the exchange's word
    /// on: they may be written beside the state changes instead of after.
    announced: usize,
    acks: Vec<String>,
}

/// Acknowledgements are written when this many are waiting (or on the
/// timer): a redelivered intent is recognised by its label, so a late
/// acknowledgement costs nothing but a lookup in memory.
const ACK_BATCH: usize = 64;

impl Engine {
    pub(super) fn new(
        cfg: ExecutorConfig,
        redis: RedisClient,
        pg: PgClient,
        counters: Arc<Counters>,
        probe: Probe,
        stop: CancellationToken,
        halted: tokio::sync::watch::Receiver<bool>,
    ) -> Self {
        Self {
            halted,
            cfg,
            redis,
            pg,
            counters,
            probe,
            stop,
            socket: None,
            specs: HashMap::new(),
            marks: HashMap::new(),
            positions: HashMap::new(),
            orders: HashMap::new(),
            by_id: HashMap::new(),
            waiting: HashMap::new(),
            buffered: VecDeque::new(),
            held: VecDeque::new(),
            refresh_token: None,
            refresh_at: None,
            foreign_log: Repeats::default(),
            // Until the account's own are read: nautilus' conservative defaults.
            matching: Budget::new(5, 20),
            other: Budget::new(20, 100),
            limits_at: Instant::now() + LIMITS_EVERY,
            out: Outbox::default(),
        }
    }

    fn socket(&mut self) -> Result<&mut Socket, Ended> {
        self.socket
            .as_mut()
            .ok_or_else(|| Ended::Lost("no session".into()))
    }

    /// Sends a request and waits for its answer, keeping other frames for later.
    async fn call(&mut self, method: &str, params: Value) -> Result<Value, CallError> {
        let deadline = Instant::now() + self.cfg.request_timeout;
        let socket = self
            .socket
            .as_mut()
            .ok_or_else(|| CallError::Lost("no session".into()))?;
        let id = socket.send(method, params).map_err(CallError::Lost)?;
        loop {
            let socket = self
                .socket
                .as_mut()
                .ok_or_else(|| CallError::Lost("no session".into()))?;
            match timeout_at(deadline, socket.inbox.recv()).await {
                Err(_) => return Err(CallError::Timeout),
                Ok(None) => return Err(CallError::Lost("the session task ended".into())),
                Ok(Some(Inbound::Ended(why))) => return Err(CallError::Lost(why)),
                Ok(Some(Inbound::Frame(ServerFrame::Response(r)))) if r.id == json!(id) => {
                    return match r.outcome {
                        Ok(raw) => serde_json::from_str(raw.get())
                            .map_err(|e| CallError::Lost(format!("{method}: {e}"))),
                        Err(e) => Err(CallError::Rpc(e)),
                    }
                }
                Ok(Some(Inbound::Frame(frame))) => self.buffered.push_back(frame),
            }
        }
    }

    async fn call_as<T: serde::de::DeserializeOwned>(
        &mut self,
        method: &str,
        params: Value,
    ) -> Result<T, Ended> {
        let value = self.call(method, params).await.map_err(|e| match e {
            CallError::Rpc(e) => Ended::Refused(format!("{method} refused: {e}")),
            other => Ended::Lost(format!("{method}: {other}")),
        })?;
        serde_json::from_value(value)
            .map_err(|e| Ended::Refused(format!("{method}: unexpected answer: {e}")))
    }

    /// Runs one session until it ends (`Err`) or `stop` fires and the
    /// shutdown is done (`Ok`); then writes what it left queued.
    pub(super) async fn run(&mut self, intake: mpsc::Receiver<StreamEntry>) -> Result<(), Ended> {
        let ended = self.session(intake).await;
        // The stores do not depend on the session. Bounded: what an outage
        // of theirs keeps from being written, the next start's
        // reconciliation brings back from the exchange.
        let flushed = match tokio::time::timeout(LAST_FLUSH, self.flush(true)).await {
            Ok(flushed) => flushed,
            Err(_) => {
                tracing::warn!(
                    updates = self.out.updates.len(),
                    events = self.out.events.len(),
                    "The executor's last writes did not finish in time; left to reconciliation."
                );
                Ok(())
            }
        };
        ended.and(flushed)
    }

    async fn session(&mut self, mut intake: mpsc::Receiver<StreamEntry>) -> Result<(), Ended> {
        // Until it trades, a stop ends the session at once: it has placed
        // nothing to drain, and what it sent again while reconciling is
        // cancelled by cancel on disconnect as the socket closes. Without
        // this, a reconciliation riding out a PostgreSQL outage held the
        // shutdown until the supervisor killed the executor.
        let stop = self.stop.clone();
        tokio::select! {
            biased;
            () = stop.cancelled() => {
                tracing::info!("Executor stopped before it traded.");
                return Ok(());
            }
            ready = self.prepare() => ready?,
        }
        self.probe.set_detail("session", "trading");
        tracing::info!(orders = self.orders.len(), "Executor trading.");
        self.trade(&mut intake).await
    }

    /// Connects, authenticates and reconciles: everything before trading.
    async fn prepare(&mut self) -> Result<(), Ended> {
        self.probe.set_detail("session", "connecting");
        let socket = Socket::connect(
            &self.cfg.url,
            self.cfg.ca_file.as_deref(),
            self.cfg.connect_timeout,
            self.cfg.heartbeat,
            // Not the engine's stop: a shutdown still sends its cancels and
            // hears their answers. The socket closes when the engine drops it.
            CancellationToken::new(),
        )
        .await
        .map_err(Ended::Lost)?;
        self.socket = Some(socket);
        self.setup().await?;
        self.probe.set_detail("session", "reconciling");
        self.reconcile().await
    }

    /// Trades until the session is lost or `stop` fires; then drains.
    async fn trade(&mut self, intake: &mut mpsc::Receiver<StreamEntry>) -> Result<(), Ended> {
        let backlog: Vec<ServerFrame> = self.buffered.drain(..).collect();
        for frame in backlog {
            self.on_frame(frame).await?;
        }
        if *self.halted.borrow_and_update() {
            self.halt().await?;
        }
        let mut ticker = tokio::time::interval(TICK);
        loop {
            self.flush(false).await?;
            // Unanswered orders resolve by themselves (an answer, a lookup), so
            // intake waits for them; orders resting on the book do not, so at
            // the limit a new order is refused instead, and the cancels that
            // make room still come in.
            let unanswered = self.unanswered();
            let halted = *self.halted.borrow();
            let keep = self.matching.burst * CANCEL_HEADROOM;
            let room = self.orders.len() < self.cfg.max_open_orders || unanswered == 0;
            if room && !halted && !self.held.is_empty() && self.matching.can_take(keep) {
                if let Some(entry) = self.held.pop_front() {
                    self.on_entry(entry).await?;
                }
                continue;
            }
            let taking = self.held.is_empty()
                && unanswered < self.cfg.max_open_orders
                && !halted
                && self.matching.can_take(keep);
            tokio::select! {
                () = self.stop.cancelled() => break,
                changed = self.halted.changed() => {
                    if changed.is_err() {
                        return Err(Ended::Refused("the kill switch is gone".into()));
                    }
                    if *self.halted.borrow_and_update() {
                        self.halt().await?;
                    } else {
                        tracing::warn!("Executor resumed: taking intents again.");
                        self.probe.set_detail("session", "trading");
                        self.event(vec![("event", "resumed".into())]).await?;
                    }
                }
                inbound = async { match self.socket.as_mut() { Some(s) => s.inbox.recv().await, None => None } } => match inbound {
                    Some(Inbound::Frame(frame)) => {
                        self.on_frame(frame).await?;
                        // Answers that arrived together share a commit.
                        self.drain_frames().await?;
                    }
                    Some(Inbound::Ended(why)) => return Err(Ended::Lost(why)),
                    None => return Err(Ended::Lost("the session task ended".into())),
                },
                entry = intake.recv(), if taking => match entry {
                    Some(entry) => {
                        // What else is waiting comes in with it, as far as
                        // the open-order limit leaves room for all of it.
                        let mut batch = vec![entry];
                        while batch.len() < INTAKE_BATCH
                            && self.orders.len() + batch.len() < self.cfg.max_open_orders
                            && unanswered + batch.len() < self.cfg.max_open_orders
                        {
                            match intake.try_recv() {
                                Ok(entry) => batch.push(entry),
                                Err(_) => break,
                            }
                        }
                        self.on_entries(batch).await?;
                    }
                    None => return Err(Ended::Refused("the intake ended".into())),
                },
                _ = ticker.tick() => {
                    self.on_tick().await?;
                    self.flush(true).await?;
                }
            }
            self.counters
                .open
                .store(self.orders.len() as u64, Ordering::Relaxed);
        }
        intake.close();
        self.shutdown().await;
        Ok(())
    }

    /// The kill switch: no more intents (the loop stops taking them), and
    /// every open order Keel placed is cancelled.
    async fn halt(&mut self) -> Result<(), Ended> {
        let labels: Vec<String> = self.orders.keys().cloned().collect();
        tracing::warn!(
            open = labels.len(),
            "Executor halted: intake stopped, cancelling open orders."
        );
        self.probe.set_detail("session", "halted");
        self.event(vec![("event", "halted".into())]).await?;
        for label in labels {
            self.cancel(&label).await?;
        }
        Ok(())
    }

    async fn setup(&mut self) -> Result<(), Ended> {
        let (Some(id), Some(secret)) = (self.cfg.client_id.clone(), self.cfg.client_secret.clone())
        else {
            return Err(Ended::Refused("no client_id and client_secret".into()));
        };
        let timestamp = to_ms(SystemTime::now());
        let nonce = format!(
            "{:x}{:x}",
            SystemTime::now()
                .duration_since(SystemTime::UNIX_EPOCH)
                .map_or(0, |d| d.subsec_nanos()),
            std::process::id()
        );
        let signature = keel_deribit::sim::signature(secret.expose(), timestamp, &nonce, "");
        let auth: AuthResult = self
            .call_as(
                "public/auth",
                json!({"grant_type": "client_signature", "client_id": id, "timestamp": timestamp,
                       "nonce": nonce, "data": "", "signature": signature, "scope": "session:keel-exec"}),
            )
            .await?;
        self.schedule_refresh(&auth);
        self.call_as::<Value>(
            "public/set_heartbeat",
            json!({"interval": self.cfg.heartbeat.as_secs()}),
        )
        .await?;
        // Without cancel on disconnect a crash leaves orders working: no trading.
        self.call_as::<Value>(
            "private/enable_cancel_on_disconnect",
            json!({"scope": "connection"}),
        )
        .await?;
        let cod: CancelOnDisconnect = self
            .call_as(
                "private/get_cancel_on_disconnect",
                json!({"scope": "connection"}),
            )
            .await?;
        if !cod.enabled {
            return Err(Ended::Refused(
                "cancel on disconnect is not enabled: not trading".into(),
            ));
        }
        let names: Vec<String> = self.cfg.instruments.keys().cloned().collect();
        let mut limits_read = false;
        for name in &names {
            let info: InstrumentInfo = self
                .call_as("public/get_instrument", json!({"instrument_name": name}))
                .await?;
            let ticker: Ticker = self
                .call_as("public/ticker", json!({"instrument_name": name}))
                .await?;
            self.marks.insert(name.clone(), ticker.mark_price);
            if !limits_read {
                let currency = info
                    .settlement_currency
                    .clone()
                    .unwrap_or_else(|| info.base_currency.clone());
                let summary: AccountSummary = self
                    .call_as("private/get_account_summary", json!({"currency": currency}))
                    .await?;
                self.set_limits(summary.limits.as_ref());
                limits_read = true;
            }
            self.specs.insert(
                name.clone(),
                Spec {
                    currency: info
                        .settlement_currency
                        .clone()
                        .unwrap_or_else(|| info.base_currency.clone()),
                    inverse: info.instrument_type.as_deref() == Some("reversed"),
                },
            );
        }
        // One frame per account event: its orders, fills and positions
        // together, so the positions the limits check are the exchange's.
        let mut channels = vec!["user.changes.any.any.raw".to_owned()];
        channels.extend(names.iter().map(|n| format!("ticker.{n}.100ms")));
        self.call_as::<Value>("private/subscribe", json!({ "channels": channels }))
            .await?;
        Ok(())
    }

    /// Sizes the budgets from the account's `limits` (kept as they were when
    /// the answer has none).
    fn set_limits(&mut self, limits: Option<&Limits>) {
        let Some(limits) = limits else {
            tracing::warn!("The account summary has no limits; keeping the budgets as they are.");
            return;
        };
        let trading = limits.matching_engine.trading.total;
        self.matching = Budget::new(trading.rate, trading.burst);
        let other = limits.non_matching_engine;
        self.other = Budget::new(other.rate, other.burst);
        self.limits_at = Instant::now() + LIMITS_EVERY;
        self.probe.set_detail(
            "budgets",
            json!({"matching_engine": {"rate": trading.rate, "burst": trading.burst},
                   "non_matching_engine": {"rate": other.rate, "burst": other.burst}}),
        );
    }

    fn schedule_refresh(&mut self, auth: &AuthResult) {
        self.refresh_token = Some(auth.refresh_token.clone());
        // Refreshed at 80% of its life, never later than a minute before expiry.
        let life = Duration::from_secs(auth.expires_in);
        let early = life
            .mul_f64(0.8)
            .min(life.saturating_sub(Duration::from_secs(60)));
        self.refresh_at = Some(Instant::now() + early.max(Duration::from_secs(1)));
    }

    /// Brings PostgreSQL and the exchange into agreement before any intent:
    /// each order not terminal is looked up by label (and in the order
    /// history when the recent view does not hold it); fills are read back;
    /// positions are read; open orders Keel did not place are reported.
    async fn reconcile(&mut self) -> Result<(), Ended> {
        let live = self.pg.live_orders().await?;
        for row in live {
            let label = row.order.label.clone();
            if let Some(id) = &row.order_id {
                self.by_id.insert(id.clone(), label.clone());
            }
            self.orders.insert(
                label,
                Tracked {
                    rank: rank(&row.state),
                    state: row.state,
                    order_id: row.order_id,
                    filled: row.filled_amount,
                    last_update_ms: row.last_update_ms,
                    sends: u32::try_from(row.sends).unwrap_or(0),
                    order: row.order,
                    in_flight: false,
                    retry_at: None,
                    lookup_at: None,
                    cancel_requested: false,
                    amend_requested: None,
                    cancelling: false,
                },
            );
        }
        let labels: Vec<String> = self.orders.keys().cloned().collect();
        for label in labels {
            let Some(currency) = self.currency_of(&label) else {
                continue;
            };
            self.counters.lookups.fetch_add(1, Ordering::Relaxed);
            self.paced().await;
            let found: Vec<Order> = self
                .call_as(
                    "private/get_order_state_by_label",
                    json!({"currency": currency, "label": label}),
                )
                .await?;
            self.on_lookup(&label, found).await?;
        }
        let names: Vec<String> = self.cfg.instruments.keys().cloned().collect();
        for name in &names {
            self.read_fills(name).await?;
        }
        let currencies: Vec<String> = {
            let mut c: Vec<String> = self.specs.values().map(|s| s.currency.clone()).collect();
            c.sort();
            c.dedup();
            c
        };
        for currency in currencies {
            let positions: Vec<Position> = self
                .call_as("private/get_positions", json!({"currency": currency}))
                .await?;
            self.take_positions(positions);
        }
        let open: Vec<Order> = self.call_as("private/get_open_orders", json!({})).await?;
        for order in open {
            if !self.orders.contains_key(&order.label) && !self.by_id.contains_key(&order.order_id)
            {
                self.foreign(&order);
            }
        }
        Ok(())
    }

    /// Reads back `instrument`'s fills since the last known point, a page of
    /// 1,000 at a time, from both of Deribit's views: the recent one (the
    /// last 24 h) and the `historical` one (older, indexed with a delay, so
    /// without the newest rows). Stored once each by trade id, whichever view
    /// holds them.
    async fn read_fills(&mut self, instrument: &str) -> Result<(), Ended> {
        let Some(from) = self.pg.fills_from(instrument).await? else {
            return Ok(());
        };
        let now = now_ms();
        for historical in [false, true] {
            let mut start = from.max(0);
            for pages in 0.. {
                if pages == MAX_FILL_PAGES {
                    tracing::warn!(%instrument, historical, from_ms = start,
                        "Read back {MAX_FILL_PAGES} pages of fills; the rest are read at the next reconciliation.");
                    break;
                }
                let page: UserTradesPage = self
                    .call_as(
                        "private/get_user_trades_by_instrument_and_time",
                        json!({"instrument_name": instrument, "start_timestamp": start,
                               "end_timestamp": now, "count": FILL_PAGE, "sorting": "asc",
                               "historical": historical}),
                    )
                    .await?;
                let last = page.trades.iter().map(|t| t.timestamp as i64).max();
                self.store_fills(page.trades, false).await?;
                match last {
                    // The next page starts at the last millisecond read (it
                    // may hold more fills); a page within one millisecond
                    // cannot move on.
                    Some(ms) if page.has_more && ms > start => start = ms,
                    Some(_) if page.has_more => {
                        tracing::warn!(%instrument, at_ms = start,
                            "More than a page of fills within one millisecond; the rest are read from the live channel only.");
                        break;
                    }
                    _ => break,
                }
            }
        }
        Ok(())
    }

    fn currency_of(&self, label: &str) -> Option<String> {
        let t = self.orders.get(label)?;
        self.specs
            .get(&t.order.instrument)
            .map(|s| s.currency.clone())
    }

    fn foreign(&mut self, order: &Order) {
        {
            let mut seen = self.counters.foreign_seen.lock();
            if seen.len() >= FOREIGN_KEPT {
                seen.clear();
            }
            if !seen.insert(order.order_id.clone()) {
                // Counted when first seen (each reconnect shows it again).
                return;
            }
        }
        self.counters.foreign.fetch_add(1, Ordering::Relaxed);
        let (id, instrument) = (&order.order_id, &order.instrument_name);
        self.foreign_log.warn(|suppressed| {
            tracing::warn!(order_id = %id, %instrument, suppressed,
                "An order Keel did not place is open on the account; left as it is.");
        });
    }

    /// Queues an event; `flush` writes it after the state changes queued
    /// before it, so an event of Keel's own decision (expired, a limit's
    /// refusal, ...) never announces a state not stored.
    async fn event(&mut self, fields: Vec<(&str, String)>) -> Result<(), Ended> {
        self.out.events.push(event_entry(fields));
        Ok(())
    }

    /// Queues an event that passes the exchange's word on (an order's state,
    /// a fill): `flush` writes it beside the state changes, unless an event
    /// of Keel's own is queued before it (the stream keeps their order). A
    /// crash before the state is stored costs nothing: the next start reads
    /// the state back from the exchange and announces it again.
    fn announce(&mut self, fields: Vec<(&str, String)>) {
        let first = self.out.announced == self.out.events.len();
        self.out.events.push(event_entry(fields));
        if first {
            self.out.announced += 1;
        }
    }

    /// Queues the acknowledgement of a handled intent.
    async fn ack(&mut self, id: &str) -> Result<(), Ended> {
        self.out.acks.push(id.to_owned());
        Ok(())
    }

    /// Queues a state change for `flush`.
    fn store(&mut self, update: OrderUpdate) {
        self.out.updates.push(update);
    }

    /// Writes what is queued: the state changes in one commit, then their
    /// events in one append; the acknowledgements beside them, when enough
    /// are waiting or `all`.
    async fn flush(&mut self, all: bool) -> Result<(), Ended> {
        let updates = std::mem::take(&mut self.out.updates);
        let mut events = std::mem::take(&mut self.out.events);
        let after = events.split_off(std::mem::take(&mut self.out.announced).min(events.len()));
        let acks = if all || self.out.acks.len() >= ACK_BATCH {
            std::mem::take(&mut self.out.acks)
        } else {
            Vec::new()
        };
        let (pg, redis) = (&self.pg, &self.redis);
        let stored = async {
            let beside = async {
                if !events.is_empty() {
                    redis.xadd_bulk(EVENTS_STREAM, Arc::from(events)).await?;
                }
                Ok::<(), Ended>(())
            };
            let state = async {
                if !updates.is_empty() {
                    pg.update_orders(updates).await?;
                }
                Ok::<(), Ended>(())
            };
            let (beside, state) = tokio::join!(beside, state);
            beside.and(state)?;
            if !after.is_empty() {
                redis.xadd_bulk(EVENTS_STREAM, Arc::from(after)).await?;
            }
            Ok::<(), Ended>(())
        };
        let acked = async {
            if !acks.is_empty() {
                redis.ack(INTENTS_STREAM, GROUP, acks).await?;
            }
            Ok::<(), Ended>(())
        };
        let (stored, acked) = tokio::join!(stored, acked);
        stored.and(acked)
    }

    async fn on_entry(&mut self, entry: StreamEntry) -> Result<(), Ended> {
        self.on_entries(vec![entry]).await
    }

    /// Handles intents in the order written. The new orders among them are
    /// recorded together, one commit before any of them is sent; anything
    /// else (a cancel, an amend) first has the orders before it recorded
    /// and sent, so it finds them.
    async fn on_entries(&mut self, entries: Vec<StreamEntry>) -> Result<(), Ended> {
        let mut group = Vec::new();
        let mut behind = 0;
        let mut holding = false;
        for entry in entries {
            if holding {
                // After one held, the rest of its batch waits behind it
                // (ahead of what was held before, which came later).
                behind += 1;
                self.held.insert(behind, entry);
                continue;
            }
            let parsed = intent::parse(&entry);
            if let Ok(Intent::Place(_)) = &parsed {
                if self.orders.len() >= self.cfg.max_open_orders && self.unanswered() > 0 {
                    // At the limit only because some are unanswered: held
                    // until they resolve, not refused for a passing burst.
                    self.record_group(&mut group).await?;
                    self.held.push_front(entry);
                    holding = true;
                    continue;
                }
            }
            self.counters.intents.fetch_add(1, Ordering::Relaxed);
            if let Ok(Intent::Place(place)) = parsed {
                self.prepare_place(place, &entry.id, &mut group);
                continue;
            }
            self.record_group(&mut group).await?;
            self.on_other(&entry, parsed).await?;
            self.ack(&entry.id).await?;
        }
        self.record_group(&mut group).await
    }

    /// An intent other than a new order.
    async fn on_other(
        &mut self,
        entry: &StreamEntry,
        parsed: Result<Intent, intent::IntentError>,
    ) -> Result<(), Ended> {
        match parsed {
            Err(error) => {
                self.counters.invalid.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(id = %entry.id, %error, "Intent dead-lettered.");
                let mut dead: Fields = vec![
                    ("intent_id".into(), entry.id.clone().into_bytes()),
                    ("reason".into(), error.to_string().into_bytes()),
                ];
                dead.extend(entry.fields.iter().cloned());
                self.redis
                    .xadd_bulk(DEAD_STREAM, Arc::from(vec![dead]))
                    .await?;
                let label = entry
                    .field("label")
                    .and_then(|l| std::str::from_utf8(l).ok())
                    .filter(|l| intent::valid_label(l))
                    .map(str::to_owned);
                if let Some(label) = label {
                    self.event(vec![
                        ("event", "invalid".into()),
                        ("label", label),
                        ("reason", error.to_string()),
                    ])
                    .await?;
                }
            }
            Ok(Intent::Place(place)) => {
                let mut group = Vec::new();
                self.prepare_place(place, &entry.id, &mut group);
                self.record_group(&mut group).await?;
            }
            Ok(Intent::Amend {
                label,
                price,
                amount,
            }) => self.on_amend(label, price, amount).await?,
            Ok(Intent::Cancel { label }) => self.cancel(&label).await?,
            Ok(Intent::CancelAll { instrument }) => {
                let labels: Vec<String> = self
                    .orders
                    .iter()
                    .filter(|(_, t)| instrument.as_ref().is_none_or(|i| i == &t.order.instrument))
                    .map(|(l, _)| l.clone())
                    .collect();
                for label in labels {
                    self.cancel(&label).await?;
                }
            }
        }
        Ok(())
    }

    /// Orders sent whose outcome is not known yet.
    fn unanswered(&self) -> usize {
        self.orders
            .values()
            .filter(|t| {
                t.in_flight
                    || t.cancelling
                    || matches!(t.state.as_str(), "pending" | "sent" | "unknown")
            })
            .count()
    }

    /// Checks a placement against `[executor]` limits; the limit it breaks.
    fn refusal(&self, p: &Place) -> Option<String> {
        if self.orders.len() >= self.cfg.max_open_orders {
            return Some(format!(
                "max_open_orders {} ({} unanswered)",
                self.cfg.max_open_orders,
                self.unanswered()
            ));
        }
        self.breach(&Proposed {
            instrument: &p.instrument,
            buying: p.side == keel_deribit::private::Side::Buy,
            amount: p.amount,
            filled: 0.0,
            price: p.price,
            reduce_only: p.reduce_only,
            replacing: None,
        })
    }

    /// The `[executor]` limit an order as proposed (new, or an amend of
    /// `replacing`) would break.
    fn breach(&self, p: &Proposed<'_>) -> Option<String> {
        let Some(limits) = self.cfg.instruments.get(p.instrument) else {
            return Some(format!("instrument {} is not allowed", p.instrument));
        };
        if p.amount > limits.max_amount {
            return Some(format!("max_amount {} < {}", limits.max_amount, p.amount));
        }
        let mark = self.marks.get(p.instrument).copied();
        if let Some(max) = limits.max_notional {
            let inverse = self.specs.get(p.instrument).is_some_and(|s| s.inverse);
            let price = p.price.or(mark).unwrap_or(0.0);
            let notional = if inverse { p.amount } else { p.amount * price };
            if notional > max {
                return Some(format!("max_notional {max} < {notional}"));
            }
        }
        if !p.reduce_only {
            let side = if p.buying { "buy" } else { "sell" };
            let sign = if p.buying { 1.0 } else { -1.0 };
            let position = self.positions.get(p.instrument).copied().unwrap_or(0.0);
            let working: f64 = self
                .orders
                .iter()
                .filter(|(label, t)| {
                    t.order.instrument == p.instrument
                        && t.order.side == side
                        && p.replacing != Some(label.as_str())
                })
                .map(|(_, t)| t.order.amount - t.filled)
                .sum();
            let after = (position + sign * (working + p.amount - p.filled)).abs();
            if after > limits.max_position {
                return Some(format!("max_position {} < {after}", limits.max_position));
            }
        }
        if let (Some(price), Some(mark)) = (p.price, mark) {
            if mark > 0.0 && (price / mark - 1.0).abs() > limits.price_band {
                return Some(format!(
                    "price_band {}: {price} is too far from the mark {mark}",
                    limits.price_band
                ));
            }
        }
        if self.cfg.prevent_self_trades {
            if let Some((label, price)) = self.own_order_crossed(p) {
                return Some(format!(
                    "self_trade: it would trade against its own order {label} at {price}"
                ));
            }
        }
        None
    }

    /// One of Keel's own orders that can rest on the book (a limit order,
    /// good til cancelled or til the day's end, not yet ended) on the other
    /// side of the same instrument, which `p` would trade against: a buy at
    /// or above its price, a sell at or below it. A market order takes
    /// whatever the book holds, so any such order counts against it.
    fn own_order_crossed(&self, p: &Proposed<'_>) -> Option<(&str, f64)> {
        let other_side = if p.buying { "sell" } else { "buy" };
        self.orders
            .iter()
            .filter(|(label, t)| {
                t.order.instrument == p.instrument
                    && t.order.side == other_side
                    && p.replacing != Some(label.as_str())
                    && matches!(
                        t.order.time_in_force.as_str(),
                        "good_til_cancelled" | "good_til_day"
                    )
            })
            .filter_map(|(label, t)| t.order.price.map(|price| (label.as_str(), price)))
            .find(|&(_, resting)| match p.price {
                None => true,
                Some(price) if p.buying => price >= resting,
                Some(price) => price <= resting,
            })
    }

    /// Checks a new order against the limits and takes it into `group`, to
    /// be recorded with the others before any is sent. One Keel accepts is
    /// followed from now on (so the next order's limits count it).
    fn prepare_place(&mut self, p: Place, intent_id: &str, group: &mut Vec<Prepared>) {
        if self.orders.contains_key(&p.label) {
            self.counters.duplicates.fetch_add(1, Ordering::Relaxed);
            group.push(Prepared::Known {
                intent_id: intent_id.to_owned(),
                label: p.label,
            });
            return;
        }
        let refusal = self.refusal(&p);
        let valid_until = self.valid_until(p.valid_until_ms);
        let (state, reason) = match (&refusal, valid_until) {
            (Some(limit), _) => ("rejected", Some(format!("limit {limit}"))),
            (None, None) => ("expired", Some(LATE.to_owned())),
            (None, Some(_)) => ("pending", None),
        };
        // A late order is not sent either (`record_group` reports it).
        let refusal = refusal.or_else(|| valid_until.is_none().then(|| LATE.to_owned()));
        let valid_until_ms = valid_until.or(p.valid_until_ms).unwrap_or_default();
        let order = NewOrder {
            label: p.label.clone(),
            instrument: p.instrument.clone(),
            side: p.side.as_str().into(),
            order_type: serde_json::to_value(p.order_type)
                .ok()
                .and_then(|v| v.as_str().map(str::to_owned))
                .unwrap_or_else(|| "limit".into()),
            amount: p.amount,
            price: p.price,
            time_in_force: p.time_in_force.as_str().into(),
            post_only: p.post_only,
            reduce_only: p.reduce_only,
            state: state.into(),
            rank: rank(state),
            reason,
            valid_until_ms,
            deadline_ms: p.valid_until_ms,
            intent_id: intent_id.to_owned(),
        };
        // Recorded as sent in the same commit when the rate budget lets it
        // go at once: one write before the request, not two.
        let keep = self.matching.burst * CANCEL_HEADROOM;
        let send_now = refusal.is_none() && self.matching.take(keep).is_ok();
        if refusal.is_none() {
            let state = if send_now { "sent" } else { state };
            self.orders.insert(
                p.label.clone(),
                Tracked {
                    order: order.clone(),
                    state: state.into(),
                    rank: rank(state),
                    order_id: None,
                    filled: 0.0,
                    last_update_ms: 0,
                    sends: u32::from(send_now),
                    in_flight: send_now,
                    retry_at: None,
                    lookup_at: None,
                    cancel_requested: false,
                    amend_requested: None,
                    cancelling: false,
                },
            );
        }
        group.push(Prepared::New {
            order: Box::new(order),
            send_now,
            refusal,
        });
    }

    /// Records the orders of `group` (one commit), then sends them, refuses
    /// them or, for labels used before, drops them; their intents are
    /// acknowledged after.
    async fn record_group(&mut self, group: &mut Vec<Prepared>) -> Result<(), Ended> {
        if group.is_empty() {
            return Ok(());
        }
        let group = std::mem::take(group);
        let orders: Vec<(NewOrder, bool)> = group
            .iter()
            .filter_map(|p| match p {
                Prepared::New {
                    order, send_now, ..
                } => Some(((**order).clone(), *send_now)),
                Prepared::Known { .. } => None,
            })
            .collect();
        let mut existing = if orders.is_empty() {
            Vec::new()
        } else {
            self.pg.record_orders(orders).await?
        }
        .into_iter();
        for prepared in group {
            let (order, send_now, refusal) = match prepared {
                Prepared::Known { intent_id, label } => {
                    self.ack(&intent_id).await?;
                    self.event(vec![
                        ("event", "duplicate".into()),
                        ("label", label),
                        (
                            "reason",
                            "an order with this label is open; nothing sent".into(),
                        ),
                    ])
                    .await?;
                    continue;
                }
                Prepared::New {
                    order,
                    send_now,
                    refusal,
                } => (order, send_now, refusal),
            };
            self.ack(&order.intent_id).await?;
            let label = order.label;
            if let Some(Some(state)) = existing.next() {
                // The label was used before (a strategy resending its
                // intent): the order it named exists already; nothing is
                // sent again.
                self.counters.duplicates.fetch_add(1, Ordering::Relaxed);
                if refusal.is_none() {
                    self.orders.remove(&label);
                }
                tracing::info!(%label, %state, "Intent for a known label; not sent again.");
                self.event(vec![
                    ("event", "duplicate".into()),
                    ("label", label),
                    ("state", state.clone()),
                    (
                        "reason",
                        format!("the label was used before (its order is {state}); nothing sent"),
                    ),
                ])
                .await?;
                continue;
            }
            if order.state == "expired" {
                self.counters.late.fetch_add(1, Ordering::Relaxed);
                self.event(vec![
                    ("event", "expired".into()),
                    ("label", label),
                    ("instrument", order.instrument),
                    ("state", "expired".into()),
                    ("reason", LATE.into()),
                ])
                .await?;
                continue;
            }
            if let Some(reason) = refusal {
                self.counters.refused.fetch_add(1, Ordering::Relaxed);
                self.event(vec![
                    ("event", "rejected".into()),
                    ("label", label),
                    ("instrument", order.instrument),
                    ("code", "0".into()),
                    ("reason", format!("limit {reason}")),
                ])
                .await?;
                continue;
            }
            if !send_now {
                // Over the account's order rate: it waits for the budget.
                self.send_place(&label).await?;
                continue;
            }
            let valid_until_ms =
                if order.valid_until_ms - now_ms() > self.cfg.request_timeout.as_millis() as i64 {
                    order.valid_until_ms
                } else {
                    self.mark_sent(&label, order.valid_until_ms, 1).await?
                };
            self.dispatch(&label, valid_until_ms)?;
        }
        Ok(())
    }

    /// Sends (or sends again) the order of `label`, with a fresh `valid_until`.
    async fn send_place(&mut self, label: &str) -> Result<(), Ended> {
        if self.orders.get(label).is_some_and(|t| t.cancel_requested) {
            // Cancelled by the strategy while its outcome was unknown, and
            // the exchange has nothing: it is not sent again.
            return self
                .finish(label, "cancelled", None, Some(NEVER_SENT.into()))
                .await;
        }
        let deadline = self.orders.get(label).and_then(|t| t.order.deadline_ms);
        let Some(valid_until_ms) = self.valid_until(deadline) else {
            // The strategy's valid_until passed while it waited (the rate
            // budget, a retryable refusal, a lookup that found nothing).
            self.counters.late.fetch_add(1, Ordering::Relaxed);
            return self.finish(label, "expired", None, Some(LATE.into())).await;
        };
        let keep = self.matching.burst * CANCEL_HEADROOM;
        let budget = self.matching.take(keep);
        let Some(t) = self.orders.get_mut(label) else {
            return Ok(());
        };
        if let Err(wait) = budget {
            // Over the account's order rate: later, never a 10028.
            t.retry_at = Some(Instant::now() + wait);
            return Ok(());
        }
        t.sends += 1;
        t.in_flight = true;
        t.retry_at = None;
        let sends = t.sends;
        // What is queued for this order is written first: its history in order.
        self.flush(false).await?;
        let valid_until_ms = self.mark_sent(label, valid_until_ms, sends).await?;
        self.dispatch(label, valid_until_ms)
    }

    /// Records send number `sends` of `label` before it goes (a crash between
    /// the two leaves a lookup to do); the request's `valid_until`. A store
    /// that took long (an outage) would leave the request little or no time
    /// to start: its `valid_until` is set afresh then.
    async fn mark_sent(
        &mut self,
        label: &str,
        mut valid_until_ms: i64,
        sends: u32,
    ) -> Result<i64, Ended> {
        let deadline = self.orders.get(label).and_then(|t| t.order.deadline_ms);
        loop {
            self.pg.mark_sent(label, valid_until_ms, sends).await?;
            let left = valid_until_ms - now_ms();
            if left > self.cfg.request_timeout.as_millis() as i64
                || Some(valid_until_ms) == deadline
            {
                // Time enough, or as long as the strategy allows: a request
                // that cannot start in time is refused by the exchange (13888).
                return Ok(valid_until_ms);
            }
            match self.valid_until(deadline) {
                Some(renewed) => valid_until_ms = renewed,
                None => return Ok(valid_until_ms),
            }
        }
    }

    /// The `valid_until` of a request sent now: `valid_for` from now, never
    /// later than the strategy's own (`deadline`); `None` once that passed.
    fn valid_until(&self, deadline: Option<i64>) -> Option<i64> {
        let now = now_ms();
        let ours = now + self.cfg.valid_for.as_millis() as i64;
        match deadline {
            Some(d) if d <= now => None,
            Some(d) => Some(ours.min(d)),
            None => Some(ours),
        }
    }

    /// Sends the order of `label`, recorded as sent, with `valid_until_ms`.
    fn dispatch(&mut self, label: &str, valid_until_ms: i64) -> Result<(), Ended> {
        let Some(t) = self.orders.get_mut(label) else {
            return Ok(());
        };
        t.order.valid_until_ms = valid_until_ms;
        let o = t.order.clone();
        if let Some(t) = self.orders.get_mut(label) {
            if t.rank < 1 {
                t.state = "sent".into();
                t.rank = 1;
            }
        }
        let mut params = json!({
            "instrument_name": o.instrument, "amount": o.amount, "type": o.order_type,
            "label": o.label, "valid_until": valid_until_ms,
            "reduce_only": o.reduce_only,
        });
        if o.order_type == "limit" {
            params["price"] = json!(o.price);
            params["time_in_force"] = json!(o.time_in_force);
            params["post_only"] = json!(o.post_only);
            // Deribit silently reprices a crossing post-only order otherwise.
            params["reject_post_only"] = json!(o.post_only);
        }
        let method = if o.side == "buy" {
            "private/buy"
        } else {
            "private/sell"
        };
        self.counters.sends.fetch_add(1, Ordering::Relaxed);
        let id = self.socket()?.send(method, params).map_err(Ended::Lost)?;
        let deadline = Instant::now() + self.cfg.request_timeout;
        self.waiting.insert(
            id,
            Waiting::Place {
                label: label.to_owned(),
                deadline,
            },
        );
        Ok(())
    }

    async fn send_lookup(&mut self, label: &str) -> Result<(), Ended> {
        let Some(currency) = self.currency_of(label) else {
            return Ok(());
        };
        if let Err(wait) = self.other.take(0.0) {
            if let Some(t) = self.orders.get_mut(label) {
                t.lookup_at = Some(Instant::now() + wait);
            }
            return Ok(());
        }
        if let Some(t) = self.orders.get_mut(label) {
            t.in_flight = true;
            t.lookup_at = None;
        }
        self.counters.lookups.fetch_add(1, Ordering::Relaxed);
        let id = self
            .socket()?
            .send(
                "private/get_order_state_by_label",
                json!({"currency": currency, "label": label}),
            )
            .map_err(Ended::Lost)?;
        let deadline = Instant::now() + self.cfg.request_timeout;
        self.waiting.insert(
            id,
            Waiting::Lookup {
                label: label.to_owned(),
                deadline,
            },
        );
        Ok(())
    }

    async fn cancel(&mut self, label: &str) -> Result<(), Ended> {
        let Some(t) = self.orders.get_mut(label) else {
            return self
                .event(vec![
                    ("event", "cancel_rejected".into()),
                    ("label", label.to_owned()),
                    ("reason", "no open order with this label".into()),
                ])
                .await;
        };
        if t.order_id.is_none() && !t.in_flight && (t.sends == 0 || t.retry_at.is_some()) {
            // Waiting to be sent (the rate budget, a retryable refusal):
            // nothing of it is on the exchange, and nothing will be.
            return self
                .finish(label, "cancelled", None, Some(NEVER_SENT.into()))
                .await;
        }
        t.cancel_requested = t.order_id.is_none();
        t.cancelling = true;
        let (method, params) = match &t.order_id {
            Some(id) => ("private/cancel", json!({"order_id": id})),
            // Not acknowledged yet: by label, which also finds an order
            // whose answer is still on its way.
            None => {
                let currency = self.currency_of(label).unwrap_or_default();
                (
                    "private/cancel_by_label",
                    json!({"label": label, "currency": currency}),
                )
            }
        };
        // Cancels use the headroom order entry leaves; counted, never held.
        let _ = self.matching.take(0.0);
        let id = self.socket()?.send(method, params).map_err(Ended::Lost)?;
        let deadline = Instant::now() + self.cfg.request_timeout;
        self.waiting.insert(
            id,
            Waiting::Cancel {
                label: label.to_owned(),
                deadline,
            },
        );
        Ok(())
    }

    /// What the answer to a cancel said.
    async fn on_cancel_answer(
        &mut self,
        label: String,
        outcome: Result<Value, RpcError>,
    ) -> Result<(), Ended> {
        match outcome {
            Ok(value) => {
                if let Ok(order) = serde_json::from_value::<Order>(value) {
                    self.apply(&order).await?;
                } else {
                    // A count (cancel by label): the notification says which.
                    self.send_lookup(&label).await?;
                }
            }
            Err(error) => {
                self.event(vec![
                    ("event", "cancel_rejected".into()),
                    ("label", label.clone()),
                    ("code", error.code.to_string()),
                    ("reason", error.message.clone()),
                ])
                .await?;
                // Already closed (11044, 10010): the lookup tells how.
                self.send_lookup(&label).await?;
            }
        }
        Ok(())
    }

    async fn on_amend(
        &mut self,
        label: String,
        price: Option<f64>,
        amount: Option<f64>,
    ) -> Result<(), Ended> {
        let target = self.orders.get(&label).and_then(|t| {
            t.order_id
                .clone()
                .map(|id| (id, t.order.amount, t.order.price, t.clone()))
        });
        let Some((order_id, current_amount, current_price, tracked)) = target else {
            if let Some(t) = self.orders.get_mut(&label) {
                if !t.cancel_requested {
                    // Not acknowledged yet: the amend goes once it is.
                    t.amend_requested = Some((price, amount));
                    return Ok(());
                }
            }
            return self
                .event(vec![
                    ("event", "amend_rejected".into()),
                    ("label", label),
                    (
                        "reason",
                        "no acknowledged open order with this label".into(),
                    ),
                ])
                .await;
        };
        let new_amount = amount.unwrap_or(current_amount);
        let new_price = price.or(current_price);
        // An amend is held to the same limits as a new order.
        let breach = self.breach(&Proposed {
            instrument: &tracked.order.instrument,
            buying: tracked.order.side == "buy",
            amount: new_amount,
            filled: tracked.filled,
            price: new_price,
            reduce_only: tracked.order.reduce_only,
            replacing: Some(&label),
        });
        if let Some(reason) = breach {
            self.counters.refused.fetch_add(1, Ordering::Relaxed);
            return self
                .event(vec![
                    ("event", "amend_rejected".into()),
                    ("label", label),
                    ("code", "0".into()),
                    ("reason", format!("limit {reason}")),
                ])
                .await;
        }
        let mut params = json!({"order_id": order_id, "amount": new_amount});
        if let Some(price) = new_price {
            params["price"] = json!(price);
        }
        let _ = self.matching.take(0.0);
        let id = self
            .socket()?
            .send("private/edit", params)
            .map_err(Ended::Lost)?;
        let deadline = Instant::now() + self.cfg.request_timeout;
        self.waiting.insert(
            id,
            Waiting::Amend {
                label,
                amount: new_amount,
                price: new_price,
                deadline,
            },
        );
        Ok(())
    }

    async fn on_frame(&mut self, frame: ServerFrame) -> Result<(), Ended> {
        match frame {
            ServerFrame::Response(response) => {
                let Some(id) = response.id.as_u64() else {
                    return Ok(());
                };
                let Some(waiting) = self.waiting.remove(&id) else {
                    return Ok(());
                };
                let outcome: Result<Value, RpcError> = response.outcome.and_then(|raw| {
                    serde_json::from_str(raw.get()).map_err(|e| {
                        RpcError::new(keel_deribit::codes::BAD_REQUEST).because(e.to_string(), None)
                    })
                });
                self.on_answer(waiting, outcome).await
            }
            ServerFrame::Subscription { channel, data } => {
                if channel.starts_with("user.changes.") {
                    match serde_json::from_str::<UserChanges>(data.get()) {
                        Ok(changes) => self.on_changes(changes).await?,
                        Err(e) => {
                            self.counters.undecoded.fetch_add(1, Ordering::Relaxed);
                            tracing::warn!(%channel, error = %e,
                                "An account notification did not decode; ignored (the next reconciliation reads the state back).");
                        }
                    }
                } else if let Some(rest) = channel.strip_prefix("ticker.") {
                    let name = rest.rsplit_once('.').map(|(n, _)| n);
                    match (name, serde_json::from_str::<Ticker>(data.get())) {
                        (Some(name), Ok(ticker)) => {
                            self.marks.insert(name.to_owned(), ticker.mark_price);
                        }
                        (_, Err(e)) => {
                            self.counters.undecoded.fetch_add(1, Ordering::Relaxed);
                            tracing::warn!(%channel, error = %e, "A ticker did not decode; ignored.");
                        }
                        (None, Ok(_)) => {}
                    }
                }
                Ok(())
            }
            _ => Ok(()),
        }
    }

    async fn on_answer(
        &mut self,
        waiting: Waiting,
        outcome: Result<Value, RpcError>,
    ) -> Result<(), Ended> {
        match waiting {
            Waiting::Place { label, .. } => {
                if let Some(t) = self.orders.get_mut(&label) {
                    t.in_flight = false;
                }
                match outcome {
                    Ok(value) => match serde_json::from_value::<OrderResult>(value) {
                        // Fills before the state they complete, as on_changes.
                        Ok(result) => {
                            self.store_fills(result.trades, true).await?;
                            self.apply(&result.order).await?;
                        }
                        Err(_) => self.send_lookup(&label).await?,
                    },
                    Err(error) => self.on_refused(&label, error).await?,
                }
            }
            Waiting::Lookup { label, .. } => {
                if let Some(t) = self.orders.get_mut(&label) {
                    t.in_flight = false;
                }
                match outcome.map(serde_json::from_value::<Vec<Order>>) {
                    Ok(Ok(found)) => self.on_lookup(&label, found).await?,
                    _ => {
                        if let Some(t) = self.orders.get_mut(&label) {
                            t.lookup_at = Some(Instant::now() + self.cfg.retry_delay);
                        }
                    }
                }
            }
            Waiting::Cancel { label, .. } => {
                if let Some(t) = self.orders.get_mut(&label) {
                    t.cancelling = false;
                }
                self.on_cancel_answer(label, outcome).await?;
            }
            Waiting::Amend {
                label,
                amount,
                price,
                ..
            } => match outcome {
                Ok(value) => {
                    if let Ok(result) = serde_json::from_value::<OrderResult>(value) {
                        if let Some(t) = self.orders.get_mut(&label) {
                            t.order.amount = amount;
                            t.order.price = price;
                        }
                        self.flush(false).await?;
                        self.pg.amend_order(&label, amount, price).await?;
                        self.store_fills(result.trades, true).await?;
                        self.apply(&result.order).await?;
                    }
                }
                Err(error) => {
                    self.event(vec![
                        ("event", "amend_rejected".into()),
                        ("label", label.clone()),
                        ("code", error.code.to_string()),
                        ("reason", error.message.clone()),
                    ])
                    .await?;
                    self.send_lookup(&label).await?;
                }
            },
            Waiting::Limits { .. } => match outcome.map(serde_json::from_value::<AccountSummary>) {
                Ok(Ok(summary)) => self.set_limits(summary.limits.as_ref()),
                _ => self.limits_at = Instant::now() + Duration::from_secs(60),
            },
            Waiting::Refresh { .. } => {
                if let Ok(auth) = outcome.and_then(|v| {
                    serde_json::from_value::<AuthResult>(v).map_err(|e| {
                        RpcError::new(keel_deribit::codes::BAD_REQUEST).because(e.to_string(), None)
                    })
                }) {
                    self.schedule_refresh(&auth);
                } else {
                    // The session goes on until the token expires; the next
                    // connection authenticates afresh.
                    tracing::warn!("Token refresh refused; re-authenticating on reconnect.");
                    self.refresh_at = None;
                }
            }
        }
        Ok(())
    }

    /// An order request the exchange refused: again later when the refusal is
    /// transient (it placed nothing), or a final rejection.
    async fn on_refused(&mut self, label: &str, error: RpcError) -> Result<(), Ended> {
        let Some(t) = self.orders.get_mut(label) else {
            return Ok(());
        };
        if retryable(error.code) && t.sends < self.cfg.max_sends {
            let delay = self
                .cfg
                .retry_delay
                .saturating_mul(1 << (t.sends.saturating_sub(1)).min(10));
            t.retry_at = Some(Instant::now() + delay);
            tracing::info!(%label, code = error.code, ?delay, "Order refused for now; sending again later.");
            return Ok(());
        }
        let reason = match &error.data {
            Some(data) => format!("{}: {data}", error.message),
            None => error.message.clone(),
        };
        if retryable(error.code) {
            // Refused for now every time: it never reached the book.
            let sends = t.sends;
            return self
                .finish(
                    label,
                    "expired",
                    Some(error.code),
                    Some(format!("refused {sends} times for now ({reason})")),
                )
                .await;
        }
        self.finish(label, "rejected", Some(error.code), Some(reason))
            .await
    }

    /// Ends an order in a terminal state Keel decides (rejected, expired).
    async fn finish(
        &mut self,
        label: &str,
        state: &str,
        code: Option<i64>,
        reason: Option<String>,
    ) -> Result<(), Ended> {
        let Some(t) = self.orders.remove(label) else {
            return Ok(());
        };
        self.store(OrderUpdate {
            label: label.to_owned(),
            state: state.into(),
            rank: rank(state),
            order_id: t.order_id.clone(),
            filled_amount: t.filled,
            average_price: None,
            last_update_ms: t.last_update_ms,
            reject_code: code,
            reason: reason.clone(),
        });
        self.event(vec![
            ("event", state.to_owned()),
            ("label", label.to_owned()),
            ("instrument", t.order.instrument),
            ("state", state.to_owned()),
            ("code", code.map(|c| c.to_string()).unwrap_or_default()),
            ("reason", reason.unwrap_or_default()),
        ])
        .await?;
        if t.amend_requested.is_some() {
            self.event(vec![
                ("event", "amend_rejected".into()),
                ("label", label.to_owned()),
                (
                    "reason",
                    format!("the order was {state} before it could be amended"),
                ),
            ])
            .await?;
        }
        Ok(())
    }

    /// Looks for `label` in its instrument's order history, the recent view
    /// and then the historical one, newest first, back to when its intent was
    /// written (no order of it can have closed before).
    async fn in_history(&mut self, label: &str) -> Result<History, Ended> {
        let Some(t) = self.orders.get(label) else {
            return Ok(History::Absent);
        };
        let instrument = t.order.instrument.clone();
        let since = stream_id_ms(&t.order.intent_id).map(|ms| ms - CLOCK_MARGIN_MS);
        'views: for historical in [false, true] {
            let mut offset = 0;
            for _ in 0..MAX_HISTORY_PAGES {
                self.paced().await;
                let page: Vec<Order> = self
                    .call_as(
                        "private/get_order_history_by_instrument",
                        json!({"instrument_name": instrument, "count": HISTORY_PAGE,
                               "offset": offset, "include_old": true,
                               "include_unfilled": true, "historical": historical}),
                    )
                    .await?;
                if let Some(order) = page
                    .iter()
                    .filter(|o| o.label == label)
                    .max_by_key(|o| o.creation_timestamp)
                {
                    return Ok(History::Found(Box::new(order.clone())));
                }
                let older = since.is_some_and(|since| {
                    page.iter()
                        .any(|o| (o.last_update_timestamp as i64) < since)
                });
                if page.len() < HISTORY_PAGE || older {
                    continue 'views;
                }
                offset += page.len();
            }
            return Ok(History::Unsure);
        }
        Ok(History::Absent)
    }

    /// Waits, if need be, until the budget of non-matching-engine calls
    /// allows one more.
    async fn paced(&mut self) {
        while let Err(wait) = self.other.take(0.0) {
            tokio::time::sleep(wait).await;
        }
    }

    /// What a lookup by label found.
    async fn on_lookup(&mut self, label: &str, found: Vec<Order>) -> Result<(), Ended> {
        if found.len() > 1 {
            self.counters.doubled.fetch_add(1, Ordering::Relaxed);
            tracing::error!(%label, orders = found.len(),
                "The exchange holds more than one order with this label.");
        }
        if let Some(latest) = found.iter().max_by_key(|o| o.creation_timestamp) {
            return self.apply(latest).await;
        }
        let Some(t) = self.orders.get_mut(label) else {
            return Ok(());
        };
        let now = now_ms();
        if t.rank < rank("open") && t.sends == 0 {
            // Recorded, never sent (a crash in between): send it now.
            return self.send_place(label).await;
        }
        if t.rank < rank("open") && now <= t.order.valid_until_ms + VALID_UNTIL_MARGIN_MS {
            // The request may still start: look again once it cannot.
            let wait = (t.order.valid_until_ms + VALID_UNTIL_MARGIN_MS - now).max(0) as u64;
            t.lookup_at = Some(Instant::now() + Duration::from_millis(wait));
            return Ok(());
        }
        // Not in the recent views: an order that closed long ago (Deribit:
        // more than 30 min) is only in the order history. Nothing is sent
        // again, and nothing closed, before the history has been read.
        match self.in_history(label).await? {
            History::Found(order) => {
                tracing::info!(%label, state = order.order_state.as_str(),
                    "Found in the exchange's order history.");
                return self.apply(&order).await;
            }
            History::Unsure => {
                tracing::warn!(%label, "The order history was not read back to this order; looked up again later.");
                if let Some(t) = self.orders.get_mut(label) {
                    t.lookup_at = Some(Instant::now() + HISTORY_RETRY);
                }
                return Ok(());
            }
            History::Absent => {}
        }
        let Some(t) = self.orders.get_mut(label) else {
            return Ok(());
        };
        if t.rank >= rank("open") {
            // Acknowledged once, unknown now (an exchange that lost its
            // state, a simulator restarted): nothing can fill it any more.
            // Closed as expired, loudly, so it holds no limit budget.
            tracing::error!(%label, state = %t.state,
                "The exchange no longer knows an order it acknowledged; closed as expired.");
            return self
                .finish(
                    label,
                    "expired",
                    None,
                    Some("the exchange no longer knows this order".into()),
                )
                .await;
        }
        if t.sends < self.cfg.max_sends {
            // Nothing on the exchange, and the last request can no longer start.
            return self.send_place(label).await;
        }
        let sends = t.sends;
        self.finish(
            label,
            "expired",
            None,
            Some(format!("not on the exchange after {sends} sends")),
        )
        .await
    }

    /// Applies the exchange's word on an order, if it moves the order forward.
    async fn apply(&mut self, order: &Order) -> Result<(), Ended> {
        let label = if self.orders.contains_key(&order.label) {
            order.label.clone()
        } else if let Some(label) = self.by_id.get(&order.order_id) {
            label.clone()
        } else {
            // Terminal already (a late notification), or not Keel's.
            if order.label.is_empty() || !intent::valid_label(&order.label) {
                self.foreign(order);
            }
            return Ok(());
        };
        let Some(t) = self.orders.get_mut(&label) else {
            return Ok(());
        };
        let state = state_of(order);
        let r = rank(state);
        let updated = order.last_update_timestamp as i64;
        let newer = r > t.rank
            || (r == t.rank && r < 5 && (updated > t.last_update_ms || order.filled() > t.filled));
        if !newer {
            self.counters.stale.fetch_add(1, Ordering::Relaxed);
            return Ok(());
        }
        t.state = state.into();
        t.rank = r;
        t.order_id = Some(order.order_id.clone());
        t.filled = t.filled.max(order.filled());
        t.last_update_ms = t.last_update_ms.max(updated);
        t.lookup_at = None;
        t.retry_at = None;
        let instrument = t.order.instrument.clone();
        self.by_id.insert(order.order_id.clone(), label.clone());
        self.store(OrderUpdate {
            label: label.clone(),
            state: state.into(),
            rank: r,
            order_id: Some(order.order_id.clone()),
            filled_amount: order.filled(),
            average_price: order.average_price.filter(|p| *p > 0.0),
            last_update_ms: updated,
            reject_code: None,
            reason: order.cancel_reason.clone(),
        });
        let event = match state {
            "open" => "accepted",
            other => other,
        };
        self.announce(vec![
            ("event", event.into()),
            ("label", label.clone()),
            ("order_id", order.order_id.clone()),
            ("instrument", instrument),
            ("state", state.into()),
            ("filled_amount", order.filled().to_string()),
            (
                "average_price",
                order.average_price.unwrap_or(0.0).to_string(),
            ),
            ("reason", order.cancel_reason.clone().unwrap_or_default()),
        ]);
        if r >= 5 {
            if let Some(t) = self.orders.remove(&label) {
                if t.amend_requested.is_some() {
                    self.event(vec![
                        ("event", "amend_rejected".into()),
                        ("label", label),
                        (
                            "reason",
                            format!("the order was {state} before it could be amended"),
                        ),
                    ])
                    .await?;
                }
            }
        } else if self.orders.get(&label).is_some_and(|t| t.cancel_requested) {
            // Cancelled before its acknowledgement: now that the exchange
            // shows it, by id.
            self.cancel(&label).await?;
        } else if let Some((price, amount)) = self
            .orders
            .get_mut(&label)
            .and_then(|t| t.amend_requested.take())
        {
            // Amended before its acknowledgement: now, by id.
            self.on_amend(label, price, amount).await?;
        }
        Ok(())
    }

    /// One account event (`user.changes`): its fills first, so a strategy
    /// reads an order's fills before the state they complete, then its
    /// orders, then its positions, which replace what the fills moved: the
    /// exchange's word, which also counts what Keel did not trade (another
    /// client on the account, a liquidation, a settlement).
    async fn on_changes(&mut self, changes: UserChanges) -> Result<(), Ended> {
        self.store_fills(changes.trades, true).await?;
        for order in &changes.orders {
            self.apply(order).await?;
        }
        if !changes.positions.is_empty() {
            self.take_positions(changes.positions);
        }
        Ok(())
    }

    /// Takes the exchange's positions as the ones the limits check, and
    /// shows them all in the registry detail `positions` (sorted by name).
    fn take_positions(&mut self, positions: Vec<Position>) {
        for p in positions {
            self.positions.insert(p.instrument_name, p.size);
        }
        let shown: serde_json::Map<String, Value> = self
            .positions
            .iter()
            .map(|(name, size)| (name.clone(), json!(size)))
            .collect();
        self.probe.set_detail("positions", Value::Object(shown));
    }

    /// Stores fills once each; the new ones become events (and, when `live`,
    /// move the positions the limits check until the exchange's own figure
    /// arrives with the event).
    async fn store_fills(&mut self, trades: Vec<UserTrade>, live: bool) -> Result<(), Ended> {
        if trades.is_empty() {
            return Ok(());
        }
        let rows: Vec<FillRow> = trades
            .iter()
            .map(|t| FillRow {
                trade_id: t.trade_id.clone(),
                label: t
                    .label
                    .clone()
                    .filter(|l| !l.is_empty())
                    .or_else(|| self.by_id.get(&t.order_id).cloned()),
                order_id: t.order_id.clone(),
                instrument: t.instrument_name.clone(),
                side: t.direction.as_str().into(),
                amount: t.amount,
                price: t.price,
                fee: t.fee,
                fee_currency: t.fee_currency.clone(),
                liquidity: t.liquidity.clone(),
                trade_seq: t.trade_seq,
                exchange_ms: t.timestamp as i64,
            })
            .collect();
        let stored = self.pg.insert_fills(rows.clone()).await?;
        for (trade_id, order_id) in &stored.conflicting {
            self.counters.conflicting.fetch_add(1, Ordering::Relaxed);
            let incoming = rows.iter().find(|r| &r.trade_id == trade_id);
            tracing::error!(%trade_id, stored_for = %order_id,
                order_id = incoming.map_or("", |r| r.order_id.as_str()),
                "A fill's trade id is stored already for another order: the exchange reused it; not stored.");
        }
        let new = stored.new;
        for row in rows.into_iter().filter(|r| new.contains(&r.trade_id)) {
            self.counters.fills.fetch_add(1, Ordering::Relaxed);
            if live {
                let sign = if row.side == "buy" { 1.0 } else { -1.0 };
                *self.positions.entry(row.instrument.clone()).or_default() += sign * row.amount;
            }
            self.announce(vec![
                ("event", "fill".into()),
                ("label", row.label.unwrap_or_default()),
                ("order_id", row.order_id),
                ("instrument", row.instrument),
                ("trade_id", row.trade_id),
                ("side", row.side),
                ("price", row.price.to_string()),
                ("amount", row.amount.to_string()),
                ("liquidity", row.liquidity),
            ]);
        }
        Ok(())
    }

    async fn on_tick(&mut self) -> Result<(), Ended> {
        let now = Instant::now();
        let expired: Vec<(u64, Waiting)> = self
            .waiting
            .iter()
            .filter(|(_, w)| w.deadline() <= now)
            .map(|(id, w)| (*id, w.clone()))
            .collect();
        for (id, waiting) in expired {
            self.waiting.remove(&id);
            match waiting {
                Waiting::Place { label, .. } => {
                    self.counters.ambiguous.fetch_add(1, Ordering::Relaxed);
                    tracing::warn!(%label, "No answer to an order request in time; asking the exchange by label.");
                    if let Some(t) = self.orders.get_mut(&label) {
                        t.in_flight = false;
                        if t.rank < rank("unknown") {
                            t.state = "unknown".into();
                            t.rank = rank("unknown");
                            let update = OrderUpdate {
                                label: label.clone(),
                                state: "unknown".into(),
                                rank: rank("unknown"),
                                order_id: None,
                                filled_amount: 0.0,
                                average_price: None,
                                last_update_ms: 0,
                                reject_code: None,
                                reason: Some("no answer in time".into()),
                            };
                            self.store(update);
                            self.event(vec![("event", "unknown".into()), ("label", label.clone())])
                                .await?;
                        }
                    }
                    self.send_lookup(&label).await?;
                }
                Waiting::Lookup { label, .. }
                | Waiting::Cancel { label, .. }
                | Waiting::Amend { label, .. } => {
                    if let Some(t) = self.orders.get_mut(&label) {
                        t.in_flight = false;
                        t.cancelling = false;
                        t.lookup_at = Some(Instant::now() + self.cfg.retry_delay);
                    }
                }
                Waiting::Refresh { .. } => self.refresh_at = Some(Instant::now()),
                Waiting::Limits { .. } => self.limits_at = Instant::now(),
            }
        }
        let due: Vec<(String, bool)> = self
            .orders
            .iter()
            .filter(|(_, t)| !t.in_flight)
            .filter_map(|(label, t)| {
                if t.retry_at.is_some_and(|at| at <= now) {
                    Some((label.clone(), true))
                } else if t.lookup_at.is_some_and(|at| at <= now) {
                    Some((label.clone(), false))
                } else {
                    None
                }
            })
            .collect();
        for (label, resend) in due {
            if resend {
                self.send_place(&label).await?;
            } else {
                self.send_lookup(&label).await?;
            }
        }
        if self.limits_at <= now {
            self.limits_at = now + LIMITS_EVERY;
            if let Some(currency) = self.specs.values().next().map(|s| s.currency.clone()) {
                let id = self
                    .socket()?
                    .send("private/get_account_summary", json!({"currency": currency}))
                    .map_err(Ended::Lost)?;
                let deadline = now + self.cfg.request_timeout;
                self.waiting.insert(id, Waiting::Limits { deadline });
            }
        }
        if self.refresh_at.is_some_and(|at| at <= now) {
            self.refresh_at = None;
            if let Some(token) = self.refresh_token.clone() {
                let id = self
                    .socket()?
                    .send(
                        "public/auth",
                        json!({"grant_type": "refresh_token", "refresh_token": token}),
                    )
                    .map_err(Ended::Lost)?;
                let deadline = now + self.cfg.request_timeout;
                self.waiting.insert(id, Waiting::Refresh { deadline });
            }
        }
        Ok(())
    }

    /// Intake has stopped: let the requests in flight finish, then cancel the
    /// open orders by label (or leave them), then log out, which does not fire
    /// cancel on disconnect. Bounded throughout; what is not done by then is
    /// left to cancel on disconnect and to the next start's reconciliation.
    async fn shutdown(&mut self) {
        self.probe.set_detail("session", "draining");
        let deadline = Instant::now() + self.cfg.request_timeout;
        while self
            .waiting
            .values()
            .any(|w| matches!(w, Waiting::Place { .. } | Waiting::Amend { .. }))
            && Instant::now() < deadline
        {
            if self.pump(deadline).await.is_err() {
                return;
            }
        }
        if self.cfg.on_shutdown == OnShutdown::Cancel {
            let labels: Vec<String> = self.orders.keys().cloned().collect();
            for label in &labels {
                if self.cancel(label).await.is_err() {
                    return;
                }
            }
            let deadline = Instant::now() + CANCEL_WAIT;
            while self.orders.values().any(|t| t.rank < 5)
                && !self.orders.is_empty()
                && Instant::now() < deadline
                && self
                    .waiting
                    .values()
                    .any(|w| matches!(w, Waiting::Cancel { .. } | Waiting::Lookup { .. }))
            {
                if self.pump(deadline).await.is_err() {
                    return;
                }
            }
            tracing::info!(
                cancelled = labels.len(),
                left = self.orders.len(),
                "Executor cancelled its open orders."
            );
        }
        let _ = self.call("private/logout", json!({})).await;
    }

    /// Handles the next frame, or returns at `deadline`.
    async fn pump(&mut self, deadline: Instant) -> Result<(), Ended> {
        let Some(socket) = self.socket.as_mut() else {
            return Err(Ended::Lost("no session".into()));
        };
        match timeout_at(deadline, socket.inbox.recv()).await {
            Err(_) => Ok(()),
            Ok(Some(Inbound::Frame(frame))) => {
                self.on_frame(frame).await?;
                self.flush(false).await
            }
            Ok(Some(Inbound::Ended(why))) => Err(Ended::Lost(why)),
            Ok(None) => Err(Ended::Lost("the session task ended".into())),
        }
    }

    /// Handles the frames already waiting, up to `DRAIN`.
    async fn drain_frames(&mut self) -> Result<(), Ended> {
        for _ in 0..DRAIN {
            let Some(socket) = self.socket.as_mut() else {
                return Ok(());
            };
            match socket.inbox.try_recv() {
                Ok(Inbound::Frame(frame)) => self.on_frame(frame).await?,
                Ok(Inbound::Ended(why)) => return Err(Ended::Lost(why)),
                Err(mpsc::error::TryRecvError::Empty) => return Ok(()),
                Err(mpsc::error::TryRecvError::Disconnected) => {
                    return Err(Ended::Lost("the session task ended".into()))
                }
            }
        }
        Ok(())
    }
}

/// Reads intents for the engine in the order they were written: first every
/// entry a previous process read and never acknowledged (taken over from its
/// consumer), with this consumer's own pending ones (read before a restart),
/// then new ones. The engine acknowledges each after handling it.
///
/// One executor trades an account: any other consumer in the group is a
/// process that ended with intents in hand. Taking its entries over before
/// reading anything new keeps a cancel from being handled before the order it
/// cancels (which a takeover after an idle time did: the order then rested).
pub(super) async fn intake(
    redis: RedisClient,
    consumer: String,
    batch: usize,
    mut halted: tokio::sync::watch::Receiver<bool>,
    to_engine: mpsc::Sender<StreamEntry>,
    stop: CancellationToken,
) {
    let streams = vec![INTENTS_STREAM.to_owned()];
    let mut from = "0".to_owned();
    let mut group_ready = false;
    let mut taken_over = false;
    let mut failures = 0u32;
    let mut delivered = Delivered::default();
    let mut next_sweep = Instant::now() + ORPHAN_SWEEP;
    while !stop.is_cancelled() {
        if *halted.borrow_and_update() {
            // Halted: intents stay in the stream, unread, until resumed.
            tokio::select! {
                () = stop.cancelled() => return,
                changed = halted.changed() => if changed.is_err() { return },
            }
            continue;
        }
        if group_ready && !taken_over {
            match take_over(&redis, &consumer, batch, &stop).await {
                Ok(entries) => {
                    if entries > 0 {
                        tracing::info!(entries, "Intents left pending taken over.");
                    }
                    taken_over = true;
                    // They are this consumer's own now: read back in order.
                    from = "0".into();
                }
                Err(error) => {
                    tracing::warn!(%error, "Cannot take over intents left pending yet.");
                    if pause(&stop, &mut failures).await {
                        return;
                    }
                    continue;
                }
            }
        }
        if !group_ready {
            match redis.create_group(INTENTS_STREAM, GROUP).await {
                Ok(_) => {
                    group_ready = true;
                    // What others left pending is taken over before any read.
                    continue;
                }
                Err(error) => {
                    tracing::warn!(%error, "Cannot create the intents group yet.");
                    if pause(&stop, &mut failures).await {
                        return;
                    }
                    continue;
                }
            }
        }
        if from == ">" && Instant::now() >= next_sweep {
            next_sweep = Instant::now() + ORPHAN_SWEEP;
            // Entries this consumer holds that this intake never handed over:
            // a read of the incarnation before, cut short by its end, that
            // Redis still completed. Nothing else would ever read them.
            if let Ok(claimed) = redis
                .autoclaim(INTENTS_STREAM, GROUP, &consumer, ORPHAN_SWEEP, "0-0", batch)
                .await
            {
                for d in claimed.entries {
                    if delivered.insert(&d.entry.id) {
                        tracing::info!(id = %d.entry.id, "An intent read but never handed over taken up.");
                        tokio::select! {
                            () = stop.cancelled() => return,
                            sent = to_engine.send(d.entry) => if sent.is_err() { return },
                        }
                    }
                }
            }
        }
        let read = tokio::select! {
            () = stop.cancelled() => return,
            read = redis.read_group_from(GROUP, &consumer, &streams, batch, &from) => read,
        };
        let entries: Vec<StreamEntry> = match read {
            Ok(streams) => streams.into_iter().flat_map(|(_, e)| e).collect(),
            Err(error) => {
                if error.to_string().contains("NOGROUP") {
                    group_ready = false;
                }
                tracing::warn!(%error, "Reading intents failed; trying again.");
                if pause(&stop, &mut failures).await {
                    return;
                }
                continue;
            }
        };
        failures = 0;
        let pending = from != ">";
        if entries.is_empty() && pending {
            // Every entry left unacknowledged by a previous incarnation is
            // handed over: new ones from now on.
            from = ">".into();
            continue;
        }
        for entry in entries {
            if pending {
                // The next read of own pending entries starts after this one.
                from.clone_from(&entry.id);
            }
            delivered.insert(&entry.id);
            tokio::select! {
                () = stop.cancelled() => return,
                sent = to_engine.send(entry) => if sent.is_err() { return },
            }
        }
    }
}

/// How often the intake looks for entries it holds and never handed over,
/// and how long such an entry must have been idle.
const ORPHAN_SWEEP: Duration = Duration::from_secs(2);

/// The ids an intake handed to the engine (the latest, bounded).
#[derive(Default)]
struct Delivered {
    ids: std::collections::HashSet<String>,
    order: VecDeque<String>,
}

impl Delivered {
    const KEPT: usize = 100_000;

    /// Records `id`; false when it was handed over already.
    fn insert(&mut self, id: &str) -> bool {
        if !self.ids.insert(id.to_owned()) {
            return false;
        }
        self.order.push_back(id.to_owned());
        if self.order.len() > Self::KEPT {
            if let Some(old) = self.order.pop_front() {
                self.ids.remove(&old);
            }
        }
        true
    }
}

/// Claims every entry other consumers of the group hold pending (idle or
/// not); how many. They become this consumer's own, read back in order.
async fn take_over(
    redis: &RedisClient,
    consumer: &str,
    batch: usize,
    stop: &CancellationToken,
) -> Result<usize, crate::resource::redis::RedisError> {
    let mut cursor = "0-0".to_owned();
    let mut claimed = 0;
    // The pending list is finite and the cursor only moves forward; the bound
    // is for safety alone.
    for _ in 0..100_000 {
        if stop.is_cancelled() {
            break;
        }
        let page = redis
            .autoclaim(
                INTENTS_STREAM,
                GROUP,
                consumer,
                Duration::ZERO,
                &cursor,
                batch,
            )
            .await?;
        claimed += page.entries.len();
        if page.next_start == "0-0" {
            break;
        }
        cursor = page.next_start;
    }
    Ok(claimed)
}

/// Waits a growing delay after a failure; true when asked to stop.
async fn pause(stop: &CancellationToken, failures: &mut u32) -> bool {
    *failures += 1;
    let delay = Duration::from_millis(100).saturating_mul(1 << (*failures).min(5));
    tokio::select! {
        () = stop.cancelled() => true,
        () = tokio::time::sleep(delay) => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn states_only_move_forward() {
        let order = |state: OrderState, filled: f64| Order {
            order_id: "1".into(),
            label: "a".into(),
            instrument_name: "X".into(),
            direction: keel_deribit::private::Side::Buy,
            amount: 10.0,
            contracts: None,
            filled_amount: Some(filled),
            average_price: None,
            price: keel_deribit::private::OrderPrice::Price(1.0),
            order_type: keel_deribit::private::OrderType::Limit,
            order_state: state,
            time_in_force: keel_deribit::private::TimeInForce::GoodTilCancelled,
            post_only: false,
            reject_post_only: None,
            reduce_only: false,
            replaced: false,
            api: true,
            web: None,
            is_liquidation: false,
            creation_timestamp: 1,
            last_update_timestamp: 1,
            cancel_reason: None,
            max_show: None,
            mmp: None,
            risk_reducing: None,
            user_id: None,
            original_order_type: None,
            trigger: None,
            trigger_price: None,
            triggered: None,
        };
        assert_eq!(state_of(&order(OrderState::Open, 0.0)), "open");
        assert_eq!(state_of(&order(OrderState::Open, 5.0)), "partially_filled");
        assert_eq!(state_of(&order(OrderState::Cancelled, 5.0)), "cancelled");
        let ranks: Vec<i16> = [
            "pending",
            "sent",
            "unknown",
            "open",
            "partially_filled",
            "filled",
        ]
        .iter()
        .map(|s| rank(s))
        .collect();
        assert!(ranks.windows(2).all(|w| w[0] < w[1]));
        for terminal in ["filled", "cancelled", "rejected", "expired"] {
            assert_eq!(rank(terminal), 5);
        }
    }
}
