//! The simulated exchange's shared state and the engine that trades.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Instant, SystemTime};

use parking_lot::Mutex;
use serde::Serialize;
use tokio::sync::broadcast;
use tokio_util::sync::CancellationToken;

use super::account::{Account, UserEvent};
use super::catalog::{self, Spec};
use super::config::RateLimits;
use super::faults::{Control, Fault};
use super::history::History;
use super::market::Market;
use super::SimConfig;
use crate::model::{to_ms, InstrumentInfo};

/// Ticks a session may fall behind before it is disconnected as too slow.
const FEED_BUFFER: usize = 4096;
/// Trades generated in one tick at most (a huge rate catches up over ticks).
const MAX_TRADES_PER_TICK: u64 = 20_000;
/// Book changes per instrument, and aggregated channels, every this many ms.
pub(super) const SLOT_MS: u64 = 100;

/// One instrument: its market and what it traded.
#[derive(Debug)]
pub(super) struct Venue {
    pub(super) market: Market,
    pub(super) history: History,
}

/// What the engine produced in one tick, for every session to filter.
#[derive(Debug, Default)]
pub(super) struct Tick {
    /// Per instrument index, this tick's trades as a JSON array.
    pub(super) trades: Vec<(usize, Arc<str>)>,
    /// Per instrument index, book changes as JSON objects, with their change ids.
    pub(super) books: Vec<(usize, i64, Arc<str>)>,
    /// A 100 ms boundary passed: flush aggregated channels, send tickers.
    pub(super) slot: bool,
}

#[derive(Debug)]
struct Rate {
    per_sec: f64,
    since: Instant,
    base: u64,
    generated: u64,
}

impl Rate {
    fn due(&mut self, now: Instant) -> u64 {
        let target =
            self.base + (self.per_sec * now.duration_since(self.since).as_secs_f64()) as u64;
        let due = target
            .saturating_sub(self.generated)
            .min(MAX_TRADES_PER_TICK);
        self.generated += due;
        due
    }

    fn set(&mut self, per_sec: f64, now: Instant) {
        self.base = self.generated;
        self.since = now;
        self.per_sec = per_sec;
    }
}

/// Counters served by `/sim/stats`.
#[derive(Debug, Default)]
pub(super) struct Counters {
    pub(super) connections: AtomicUsize,
    pub(super) subscriptions: AtomicUsize,
    pub(super) notifications: AtomicU64,
    pub(super) closed_slow: AtomicU64,
    pub(super) rate_limited: AtomicU64,
    faults: Mutex<BTreeMap<&'static str, u64>>,
    /// Connections subscribed to each public channel.
    channels: Mutex<BTreeMap<String, usize>>,
}

impl Counters {
    /// One more connection follows `channel`.
    pub(super) fn followed(&self, channel: String) {
        *self.channels.lock().entry(channel).or_default() += 1;
    }

    /// One connection fewer follows `channel`.
    pub(super) fn unfollowed(&self, channel: &str) {
        let mut channels = self.channels.lock();
        if let Some(n) = channels.get_mut(channel) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                channels.remove(channel);
            }
        }
    }
}

/// A bucket of request credits, refilled at a rate up to its size: Deribit's
/// rate limits, per connection or per HTTP pool.
#[derive(Debug)]
pub(super) struct Credits {
    left: f64,
    at: Instant,
    rate: f64,
    size: f64,
}

impl Credits {
    /// The request credits of `limits`, full.
    pub(super) fn requests(limits: &RateLimits) -> Self {
        Self::full(limits.max_credits as f64, limits.refill_per_sec as f64)
    }

    /// The matching engine's budget of `limits`, in requests, full.
    pub(super) fn matching(limits: &RateLimits) -> Self {
        Self::full(
            f64::from(limits.matching_burst),
            f64::from(limits.matching_rate),
        )
    }

    fn full(size: f64, rate: f64) -> Self {
        Self {
            left: size,
            at: Instant::now(),
            rate,
            size,
        }
    }

    /// Takes `cost`, after refilling since the last call; false, taking
    /// nothing, when there is not enough.
    pub(super) fn take(&mut self, cost: f64) -> bool {
        let now = Instant::now();
        self.left =
            (self.left + now.duration_since(self.at).as_secs_f64() * self.rate).min(self.size);
        self.at = now;
        if self.left < cost {
            return false;
        }
        self.left -= cost;
        true
    }
}

/// Everything sessions and the engine share.
#[derive(Debug)]
pub(super) struct Exchange {
    pub(super) config: SimConfig,
    pub(super) names: Vec<String>,
    index: HashMap<String, usize>,
    pub(super) venues: Vec<Mutex<Venue>>,
    pub(super) feed: broadcast::Sender<Arc<Tick>>,
    pub(super) control: broadcast::Sender<Control>,
    pub(super) counters: Counters,
    rate: Mutex<Rate>,
    /// Data notifications are withheld until this time (ms since the epoch).
    pub(super) stall_until_ms: AtomicU64,
    book_gaps: Vec<AtomicBool>,
    duplicates: AtomicU32,
    /// Access tokens handed out by `public/auth`.
    pub(super) tokens: Mutex<HashMap<String, String>>,
    /// Credits of the HTTP API (one pool: the simulator's clients share an address).
    http_credits: Mutex<Credits>,
    /// The matching engine's budget over HTTP, in requests (one pool, as above).
    http_matching: Mutex<Credits>,
    pub(super) started: Instant,
    /// `--replay`: the recorded session served instead of generated data.
    pub(super) recording: Option<Arc<super::replay::Recording>>,
    /// The account's orders, fills and positions. Locked before a venue.
    pub(super) account: Mutex<super::account::Account>,
    /// Open orders of the account (the engine skips the account without any).
    pub(super) resting: AtomicUsize,
    /// What happened to the account's orders, for the `user.*` channels.
    pub(super) user_feed: broadcast::Sender<Arc<UserEvent>>,
    /// Faults pending on order requests.
    pub(super) order_faults: Mutex<OrderFaults>,
    /// Connections get ids for cancel on disconnect.
    pub(super) next_connection: AtomicU64,
}

/// Faults that apply to the next order requests, across connections.
#[derive(Debug, Default)]
pub(super) struct OrderFaults {
    pub(super) drop: u32,
    pub(super) delay: (u64, u32),
    pub(super) reject: (i64, u32),
}

/// What happens to one order request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum OrderFault {
    None,
    Drop,
    Delay(u64),
    Reject(i64),
}

impl OrderFaults {
    /// Takes the fault for the next order request, if any.
    pub(super) fn take(&mut self) -> OrderFault {
        if self.reject.1 > 0 {
            self.reject.1 -= 1;
            return OrderFault::Reject(self.reject.0);
        }
        if self.drop > 0 {
            self.drop -= 1;
            return OrderFault::Drop;
        }
        if self.delay.1 > 0 {
            self.delay.1 -= 1;
            return OrderFault::Delay(self.delay.0);
        }
        OrderFault::None
    }
}

/// `/sim/stats`.
#[derive(Debug, Serialize)]
pub struct SimStats {
    /// Per instrument: trades generated and the last `trade_seq`.
    pub instruments: BTreeMap<String, InstrumentStats>,
    /// Open WebSocket connections.
    pub connections: usize,
    /// Channel subscriptions across connections.
    pub subscriptions: usize,
    /// Connections subscribed to each public channel (those followed by any).
    pub subscribers: BTreeMap<String, usize>,
    /// Subscription notifications written, across connections.
    pub notifications: u64,
    /// Connections closed for falling behind.
    pub closed_slow: u64,
    /// Requests answered with 10028.
    pub rate_limited: u64,
    /// Faults injected, by kind.
    pub faults: BTreeMap<&'static str, u64>,
    /// Current generation rate.
    pub trades_per_sec: f64,
}

/// One instrument in `/sim/stats`.
#[derive(Debug, Serialize, serde::Deserialize, PartialEq, Eq, Clone, Copy)]
pub struct InstrumentStats {
    /// Trades generated for this instrument so far.
    pub trades: u64,
    /// The last `trade_seq` (0 before any).
    pub last_trade_seq: i64,
}

impl Exchange {
    pub(super) fn new(mut config: SimConfig) -> Result<Self, super::SimError> {
        let now = SystemTime::now();
        let recording = match &config.replay {
            Some(path) => Some(Arc::new(super::replay::Recording::load(
                path,
                config.replay_speed,
            )?)),
            None => None,
        };
        let names = match &recording {
            // The recording's instruments (and any configured), and no generated data.
            Some(recording) => {
                config.trades_per_sec = 0.0;
                let mut names = config.instruments.clone();
                for name in recording.instruments() {
                    if !names.contains(&name) {
                        names.push(name);
                    }
                }
                names
            }
            None if config.instruments.is_empty() => catalog::default_names(now),
            None => config.instruments.clone(),
        };
        let mut venues = Vec::new();
        let mut index = HashMap::new();
        for (i, name) in names.iter().enumerate() {
            let spec: Spec = catalog::spec(name, i as u64 + 1, now).ok_or_else(|| {
                super::SimError::Config(format!("`{name}` is not a Deribit-style instrument name"))
            })?;
            index.insert(name.clone(), i);
            venues.push(Mutex::new(Venue {
                market: Market::new(spec, config.seed),
                history: History::new(config.history_limit),
            }));
        }
        Ok(Self {
            rate: Mutex::new(Rate {
                per_sec: config.trades_per_sec,
                since: Instant::now(),
                base: 0,
                generated: 0,
            }),
            book_gaps: names.iter().map(|_| AtomicBool::new(false)).collect(),
            feed: broadcast::channel(FEED_BUFFER).0,
            control: broadcast::channel(64).0,
            counters: Counters::default(),
            stall_until_ms: AtomicU64::new(0),
            duplicates: AtomicU32::new(0),
            tokens: Mutex::new(HashMap::new()),
            http_credits: Mutex::new(Credits::requests(&config.rate_limits)),
            http_matching: Mutex::new(Credits::matching(&config.rate_limits)),
            started: Instant::now(),
            recording,
            account: Mutex::new(Account::new(names.len())),
            resting: AtomicUsize::new(0),
            user_feed: broadcast::channel(FEED_BUFFER).0,
            order_faults: Mutex::new(OrderFaults::default()),
            next_connection: AtomicU64::new(1),
            names,
            index,
            venues,
            config,
        })
    }

    /// Takes an HTTP request's credits, and for order entry and cancels one
    /// request of the matching engine's budget too; false when either pool
    /// is exhausted.
    pub(super) fn spend_http(&self, method: &str) -> bool {
        let limits = &self.config.rate_limits;
        if !limits.enabled {
            return true;
        }
        let cost = if method.ends_with("get_instruments") {
            limits.instruments_cost
        } else {
            limits.request_cost
        };
        let allowed = self.http_credits.lock().take(cost as f64)
            && (!super::trading::is_matching_engine(method) || self.http_matching.lock().take(1.0));
        if !allowed {
            self.counters.rate_limited.fetch_add(1, Ordering::Relaxed);
        }
        allowed
    }

    pub(super) fn instrument(&self, name: &str) -> Option<usize> {
        self.index.get(name).copied()
    }

    /// The listing of instrument `i`.
    pub(super) fn info(&self, i: usize) -> InstrumentInfo {
        self.venues[i].lock().market.spec.info.clone()
    }

    pub(super) fn infos(&self) -> Vec<InstrumentInfo> {
        self.venues
            .iter()
            .map(|v| v.lock().market.spec.info.clone())
            .collect()
    }

    pub(super) fn set_rate(&self, per_sec: f64) {
        self.rate.lock().set(per_sec, Instant::now());
        tracing::info!(trades_per_sec = per_sec, "Simulator rate changed.");
    }

    /// Applies a fault; returns what it did, or why it could not.
    pub(super) fn inject(&self, fault: &Fault) -> Result<String, super::FaultError> {
        let done = match fault {
            Fault::Disconnect => self.tell(Control::Disconnect, "closing every connection"),
            Fault::Stall { ms } => {
                let until = to_ms(SystemTime::now()) + ms;
                self.stall_until_ms.fetch_max(until, Ordering::AcqRel);
                format!("no data for {ms} ms")
            }
            Fault::IgnoreTestRequest => self.tell(
                Control::IgnoreTestRequest,
                "ignoring the next test_request answers",
            ),
            Fault::Malformed { count } => {
                self.tell(Control::Malformed(*count), "sending garbage frames")
            }
            Fault::BookGap { instrument } => match instrument {
                Some(name) => {
                    let i = self
                        .instrument(name)
                        .ok_or_else(|| super::FaultError::UnknownInstrument(name.clone()))?;
                    self.book_gaps[i].store(true, Ordering::Release);
                    format!("skipping a change_id of {name}")
                }
                None => {
                    self.book_gaps
                        .iter()
                        .for_each(|g| g.store(true, Ordering::Release));
                    "skipping a change_id of every instrument".into()
                }
            },
            Fault::DuplicateTrades { count } => {
                self.duplicates.fetch_max(*count, Ordering::AcqRel);
                format!("re-sending the last {count} trades of each instrument")
            }
            Fault::RateLimit => {
                self.tell(Control::RateLimit, "answering the next requests with 10028")
            }
            Fault::SlowConsumer { ms } => {
                self.tell(Control::SlowConsumer(*ms), "not reading from connections")
            }
            Fault::SilenceHeartbeats { ms } => self.tell(
                Control::SilenceHeartbeats(*ms),
                "sending no heartbeats on open connections",
            ),
            Fault::DropOrderAnswers { count } => {
                self.order_faults.lock().drop += count;
                format!("executing the next {count} order requests without answering")
            }
            Fault::DelayOrderAnswers { ms, count } => {
                self.order_faults.lock().delay = (*ms, *count);
                format!("answering the next {count} order requests {ms} ms late")
            }
            Fault::RejectOrders { code, count } => {
                self.order_faults.lock().reject = (*code, *count);
                format!("refusing the next {count} order requests with {code}")
            }
        };
        *self.counters.faults.lock().entry(fault.name()).or_default() += 1;
        tracing::warn!(fault = fault.name(), %done, "Fault injected.");
        Ok(done)
    }

    fn tell(&self, control: Control, what: &str) -> String {
        let sessions = self.control.send(control).unwrap_or(0);
        format!("{what} ({sessions} connections)")
    }

    pub(super) fn stats(&self) -> SimStats {
        let instruments = self
            .names
            .iter()
            .zip(&self.venues)
            .map(|(name, venue)| {
                let seq = venue.lock().market.trade_seq;
                let stats = InstrumentStats {
                    trades: u64::try_from(seq).unwrap_or(0),
                    last_trade_seq: seq,
                };
                (name.clone(), stats)
            })
            .collect();
        SimStats {
            instruments,
            connections: self.counters.connections.load(Ordering::Relaxed),
            subscriptions: self.counters.subscriptions.load(Ordering::Relaxed),
            subscribers: self.counters.channels.lock().clone(),
            notifications: self.counters.notifications.load(Ordering::Relaxed),
            closed_slow: self.counters.closed_slow.load(Ordering::Relaxed),
            rate_limited: self.counters.rate_limited.load(Ordering::Relaxed),
            faults: self.counters.faults.lock().clone(),
            trades_per_sec: self.rate.lock().per_sec,
        }
    }

    /// Generates one tick's trades and book changes and publishes them.
    /// How long the engine sleeps between ticks: about one trade's time at the
    /// current rate, between 1 ms and a book slot. A quiet exchange wakes ten
    /// times a second, not a thousand; how many trades are due is computed from
    /// the clock, so the period changes no trade.
    fn tick_period(&self) -> std::time::Duration {
        let per_sec = self.rate.lock().per_sec;
        let slot = SLOT_MS as f64 / 1000.0;
        let period = if per_sec > 0.0 {
            (1.0 / per_sec).clamp(0.001, slot)
        } else {
            slot
        };
        std::time::Duration::from_secs_f64(period)
    }

    fn tick(&self, next_instrument: &mut usize, last_slot: &mut u64) {
        let now_ms = to_ms(SystemTime::now());
        let due = self.rate.lock().due(Instant::now());
        let n = self.venues.len();
        let mut batches: Vec<Vec<crate::model::PublicTrade>> = vec![Vec::new(); n];
        // The account is locked before a venue, and only when it has orders
        // a trade could fill.
        let mut account = (self.resting.load(Ordering::Acquire) > 0).then(|| self.account.lock());
        let mut events = Vec::new();
        for _ in 0..due {
            let i = *next_instrument % n;
            *next_instrument = (*next_instrument + 1) % n;
            let mut venue = self.venues[i].lock();
            let mut trade = venue.market.next_trade(now_ms);
            if let Some(account) = account.as_mut() {
                if let Some(event) = account.on_walk(i, &mut trade, &venue.market) {
                    events.push(event);
                }
            }
            venue.history.push(trade.clone());
            batches[i].push(trade);
        }
        if let Some(account) = account.take() {
            self.resting.store(account.resting(), Ordering::Release);
        }
        let duplicates = self.duplicates.swap(0, Ordering::AcqRel);
        if duplicates > 0 {
            for (i, batch) in batches.iter_mut().enumerate() {
                let again = self.venues[i].lock().history.last(duplicates as usize);
                batch.splice(0..0, again);
            }
        }
        let mut tick = Tick::default();
        for (i, batch) in batches.into_iter().enumerate() {
            if !batch.is_empty() {
                if let Ok(json) = serde_json::to_string(&batch) {
                    tick.trades.push((i, json.into()));
                }
            }
        }
        let slot = now_ms / SLOT_MS;
        if slot != *last_slot {
            *last_slot = slot;
            tick.slot = true;
            for i in 0..n {
                let mut venue = self.venues[i].lock();
                let mut change = venue.market.next_book_change(now_ms);
                if self.book_gaps[i].swap(false, Ordering::AcqRel) {
                    // Applied but never published: the next change's
                    // prev_change_id will not match what subscribers saw.
                    change = venue.market.next_book_change(now_ms);
                }
                if let Ok(json) = serde_json::to_string(&change) {
                    tick.books.push((i, change.change_id, json.into()));
                }
            }
        }
        if !tick.trades.is_empty() || tick.slot {
            let _ = self.feed.send(Arc::new(tick));
        }
        for event in events {
            let _ = self.user_feed.send(Arc::new(event));
        }
    }
}

/// Runs the engine until `stop`: a tick every millisecond.
pub(super) async fn run_engine(exchange: Arc<Exchange>, stop: CancellationToken) {
    let mut next_instrument = 0;
    let mut last_slot = 0;
    let mut day = exchange.trading_day(to_ms(SystemTime::now()));
    loop {
        tokio::select! {
            () = stop.cancelled() => return,
            () = tokio::time::sleep(exchange.tick_period()) => {
                exchange.tick(&mut next_instrument, &mut last_slot);
                let today = exchange.trading_day(to_ms(SystemTime::now()));
                if today != day {
                    day = today;
                    exchange.end_day();
                }
            }
        }
    }
}

impl Exchange {
    /// The trading day `now_ms` falls in (days end at `day_end` after
    /// midnight UTC).
    fn trading_day(&self, now_ms: u64) -> u64 {
        let end = super::trading::to_ms_duration(self.config.day_end);
        (now_ms + 86_400_000 - end) / 86_400_000
    }

    /// The day's end: resting `good_til_day` orders are cancelled.
    fn end_day(&self) {
        let selection = super::account::Selection {
            day_orders: true,
            ..super::account::Selection::default()
        };
        let cancelled = self.cancel_selected(&selection, "settlement");
        if cancelled > 0 {
            tracing::info!(
                cancelled,
                "Trading day ended: good_til_day orders cancelled."
            );
        }
    }
}
