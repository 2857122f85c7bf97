//! PgActor: the PostgreSQL resource (bb8 + bb8-postgres + tokio-postgres).

mod config;
mod error;
mod executor;
mod manager;
mod migrate;
mod ops;

pub use config::PostgresConfig;
pub use error::PgError;
pub use migrate::{migrate, MigrateError, Migration, MIGRATIONS};

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use bb8::Pool;
use bb8_postgres::PostgresConnectionManager;
use ractor::{ActorCell, ActorProcessingErr, RpcReplyPort, SpawnErr};
use serde::{Deserialize, Serialize};
use tokio_postgres::NoTls;
use tokio_util::sync::CancellationToken;

use keel_core::child::{spawn_with_probe, StartContext};
use keel_core::delay::BackoffConfig;
use keel_core::recorded::Recordable;
use keel_core::registry::Registry;
use keel_market::{Candle, Gap, Instrument, Trade};

use super::{
    call, riding_out, Availability, CallStats, ConnectError, NotRunning, PoolStats, Resource,
    ResourceActor, RideOut,
};

type Reply<T> = RpcReplyPort<Result<T, PgError>>;

/// Tables the janitor may prune by age.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Retained {
    /// `trades`, by trade time.
    Trades,
    /// `candles`, by bucket start.
    Candles,
}

/// The operations PgActor offers. There is deliberately no "run this SQL".
#[derive(Debug)]
pub enum PgCall {
    /// Insert or update instruments.
    UpsertInstruments(Arc<[Instrument]>, Reply<u64>),
    /// Insert trades, ignoring ones already stored; replies with how many were new.
    InsertTrades(Arc<[Trade]>, Reply<u64>),
    /// Insert or replace candles.
    /// (`true` when they come from the exchange's chart data, not folded trades.)
    UpsertCandles(Arc<[Candle]>, bool, Reply<u64>),
    /// Delete rows older than a time, in batches; replies with how many.
    DeleteOlderThan(Retained, SystemTime, Reply<u64>),
    /// One round trip to the server; replies with its latency.
    Ping(Reply<Duration>),
    /// Records missing trade ranges (idempotent).
    RecordGaps(Arc<[Gap]>, Reply<u64>),
    /// Every recorded gap.
    ListGaps(Reply<Vec<Gap>>),
    /// Deletes the recorded gaps within a repaired range.
    ClearGap(Gap, Reply<u64>),
    /// The highest stored `trade_seq` of an instrument.
    MaxSeq(String, Reply<Option<i64>>),
    /// Holes in an instrument's stored `trade_seq`s.
    FindHoles(String, Reply<Vec<Gap>>),
    /// Folds trades into candles of these resolutions (minutes), each trade once.
    FoldCandles(Arc<[Trade]>, Arc<[i32]>, Reply<u64>),
    /// Recomputes candles of an instrument over a time span from `trades`.
    RecomputeCandles(String, SystemTime, SystemTime, Arc<[i32]>, Reply<u64>),
    /// Marks a currency's instruments of some kinds that were not listed inactive.
    DeactivateInstruments {
        /// Base currency.
        currency: String,
        /// Kinds the listing covered.
        kinds: Vec<String>,
        /// Names still listed.
        keep: Vec<String>,
        /// Answer: how many were deactivated.
        reply: Reply<u64>,
    },
}

impl Recordable for PgCall {
    fn kind(&self) -> &'static str {
        match self {
            PgCall::UpsertInstruments(..) => "UpsertInstruments",
            PgCall::InsertTrades(..) => "InsertTrades",
            PgCall::UpsertCandles(..) => "UpsertCandles",
            PgCall::DeleteOlderThan(..) => "DeleteOlderThan",
            PgCall::Ping(_) => "Ping",
            PgCall::RecordGaps(..) => "RecordGaps",
            PgCall::ListGaps(_) => "ListGaps",
            PgCall::ClearGap(..) => "ClearGap",
            PgCall::MaxSeq(..) => "MaxSeq",
            PgCall::FindHoles(..) => "FindHoles",
            PgCall::FoldCandles(..) => "FoldCandles",
            PgCall::RecomputeCandles(..) => "RecomputeCandles",
            PgCall::DeactivateInstruments { .. } => "DeactivateInstruments",
        }
    }

    fn summary(&self) -> String {
        match self {
            PgCall::UpsertInstruments(rows, _) => format!("{} instruments", rows.len()),
            PgCall::InsertTrades(rows, _) => format!(
                "{} trades{}",
                rows.len(),
                rows.first()
                    .map(|t| format!(", first {} #{}", t.instrument_name, t.trade_seq))
                    .unwrap_or_default()
            ),
            PgCall::UpsertCandles(rows, from_exchange, _) => format!(
                "{} candles{}",
                rows.len(),
                if *from_exchange {
                    " from the exchange"
                } else {
                    ""
                }
            ),
            PgCall::DeleteOlderThan(table, before, _) => {
                format!(
                    "{table:?} before {}",
                    humantime::format_rfc3339_seconds(*before)
                )
            }
            PgCall::Ping(_) => "ping".into(),
            PgCall::DeactivateInstruments {
                currency,
                kinds,
                keep,
                ..
            } => {
                format!("{currency} {kinds:?}, keeping {}", keep.len())
            }
            PgCall::RecordGaps(gaps, _) => format!("{} gaps", gaps.len()),
            PgCall::ListGaps(_) => "list gaps".into(),
            PgCall::ClearGap(g, _) => {
                format!("{} {}..={}", g.instrument_name, g.from_seq, g.to_seq)
            }
            PgCall::MaxSeq(name, _) | PgCall::FindHoles(name, _) => name.clone(),
            PgCall::FoldCandles(trades, resolutions, _) => {
                format!("{} trades into {:?}", trades.len(), resolutions)
            }
            PgCall::RecomputeCandles(name, from, to, _, _) => format!(
                "{name} {}..{}",
                keel_market::describe_time(*from),
                keel_market::describe_time(*to)
            ),
        }
    }
}

/// What the executor counts, shown in the registry and in health.
#[derive(Debug, Default)]
struct Counters {
    calls: AtomicU64,
    attempts: AtomicU64,
    retries: AtomicU64,
    rejected: AtomicU64,
    exhausted: AtomicU64,
}

/// Everything a PgActor call needs.
#[derive(Clone, Debug)]
pub struct PgShared {
    pool: Pool<manager::PgManager>,
    /// Set once the first connect applied the schema; calls wait for it.
    schema_ready: Arc<tokio::sync::watch::Sender<bool>>,
    config: Arc<PostgresConfig>,
    availability: Availability,
    counters: Arc<Counters>,
    stats: Arc<CallStats>,
    /// Fired when this incarnation is asked to stop: calls are no longer retried.
    stop: CancellationToken,
}

impl PgShared {
    fn timeout_ms(&self) -> u128 {
        self.config.statement_timeout.as_millis()
    }

    /// Waits (at most `limit`) until the first connect has applied the schema;
    /// false when it has not.
    async fn schema_ready(&self, limit: Duration) -> bool {
        let mut ready = self.schema_ready.subscribe();
        let waited = tokio::time::timeout(limit, ready.wait_for(|r| *r)).await;
        matches!(waited, Ok(Ok(_)))
    }

    /// The client-side bound on one attempt: the server aborts a statement at
    /// `statement_timeout`, so anything much longer is a wedged connection.
    fn attempt_limit(&self) -> Duration {
        self.config.statement_timeout * 2 + Duration::from_secs(5)
    }
}

/// The PostgreSQL resource: `ResourceActor<Postgres>` is PgActor.
#[derive(Debug, Clone)]
pub struct Postgres {
    config: PostgresConfig,
}

impl Postgres {
    /// A resource for `config` (validated beforehand by the configuration loader).
    pub fn new(config: PostgresConfig) -> Self {
        Self { config }
    }

    /// Spawns one PgActor incarnation; use as a child factory.
    pub async fn spawn(config: PostgresConfig, ctx: StartContext) -> Result<ActorCell, SpawnErr> {
        spawn_with_probe(ResourceActor::<Postgres>::default(), Self::new(config), ctx).await
    }
}

impl Resource for Postgres {
    type Call = PgCall;
    type Shared = PgShared;

    fn open(
        self,
        availability: Availability,
        stop: CancellationToken,
    ) -> Result<PgShared, ActorProcessingErr> {
        let driver = self.config.driver_config()?;
        let manager = manager::PgManager(PostgresConnectionManager::new(driver, NoTls));
        let pool = super::pool::build(
            manager,
            self.config.max_size,
            self.config.checkout_timeout,
            &availability,
        );
        availability
            .probe()
            .set_detail("max_size", self.config.max_size);
        Ok(PgShared {
            pool,
            schema_ready: Arc::new(tokio::sync::watch::channel(false).0),
            config: Arc::new(self.config),
            availability,
            counters: Arc::default(),
            stats: Arc::default(),
            stop,
        })
    }

    fn connect_backoff(shared: &PgShared) -> BackoffConfig {
        shared.config.connect_backoff.clone()
    }

    fn health_every(shared: &PgShared) -> Duration {
        shared.config.health_every
    }

    async fn check(shared: &PgShared) -> Result<(), String> {
        super::pool::check(&shared.pool).await
    }

    async fn connect(shared: &PgShared) -> Result<(), ConnectError> {
        // A connection of its own, not a pooled checkout: the pool would only say
        // "timed out", while this attempt gets what the server or the OS said.
        let mut conn = shared.pool.dedicated_connection().await.map_err(|e| {
            let cause = super::describe(&e);
            match error::permanent_fix(&e) {
                Some(fix) => ConnectError::Permanent { cause, fix },
                None => ConnectError::Retry(cause),
            }
        })?;
        match migrate(&mut conn).await {
            Ok(_) => {
                shared.schema_ready.send_replace(true);
                Ok(())
            }
            Err(MigrateError::Driver(e)) if e.as_db_error().is_none() => {
                Err(ConnectError::Retry(super::describe(&e)))
            }
            Err(e) => Err(ConnectError::Fatal(format!("schema migration failed: {e}"))),
        }
    }

    async fn serve(shared: PgShared, call: PgCall) {
        let ms = shared.timeout_ms();
        match call {
            PgCall::InsertTrades(rows, reply) => {
                let result = executor::execute(&shared, "insert_trades", true, |c| {
                    let rows = Arc::clone(&rows);
                    Box::pin(async move { ops::insert_trades(c, ms, &rows).await })
                })
                .await;
                let _ = reply.send(result);
            }
            PgCall::UpsertInstruments(rows, reply) => {
                let result = executor::execute(&shared, "upsert_instruments", true, |c| {
                    let rows = Arc::clone(&rows);
                    Box::pin(async move { ops::upsert_instruments(c, ms, &rows).await })
                })
                .await;
                let _ = reply.send(result);
            }
            PgCall::UpsertCandles(rows, from_exchange, reply) => {
                let result = executor::execute(&shared, "upsert_candles", true, |c| {
                    let rows = Arc::clone(&rows);
                    Box::pin(async move { ops::upsert_candles(c, ms, &rows, from_exchange).await })
                })
                .await;
                let _ = reply.send(result);
            }
            PgCall::DeleteOlderThan(table, before, reply) => {
                let _ = reply.send(delete_older_than(&shared, table, before).await);
            }
            PgCall::RecordGaps(gaps, reply) => {
                let result = executor::execute(&shared, "record_gaps", true, |c| {
                    let gaps = Arc::clone(&gaps);
                    Box::pin(async move { ops::record_gaps(c, ms, &gaps).await })
                })
                .await;
                let _ = reply.send(result);
            }
            PgCall::ListGaps(reply) => {
                let result =
                    executor::execute(&shared, "list_gaps", true, |c| Box::pin(ops::list_gaps(c)))
                        .await;
                let _ = reply.send(result);
            }
            PgCall::ClearGap(gap, reply) => {
                let result = executor::execute(&shared, "clear_gap", true, |c| {
                    let gap = gap.clone();
                    Box::pin(async move { ops::clear_gap(c, &gap).await })
                })
                .await;
                let _ = reply.send(result);
            }
            PgCall::MaxSeq(name, reply) => {
                let result = executor::execute(&shared, "max_seq", true, |c| {
                    let name = name.clone();
                    Box::pin(async move { ops::max_seq(c, &name).await })
                })
                .await;
                let _ = reply.send(result);
            }
            PgCall::FindHoles(name, reply) => {
                let result = executor::execute(&shared, "find_holes", true, |c| {
                    let name = name.clone();
                    Box::pin(async move { ops::find_holes(c, &name).await })
                })
                .await;
                let _ = reply.send(result);
            }
            PgCall::FoldCandles(trades, resolutions, reply) => {
                let result = executor::execute(&shared, "fold_candles", true, |c| {
                    let (trades, resolutions) = (Arc::clone(&trades), Arc::clone(&resolutions));
                    Box::pin(async move { ops::fold_candles(c, ms, &trades, &resolutions).await })
                })
                .await;
                let _ = reply.send(result);
            }
            PgCall::RecomputeCandles(name, from, to, resolutions, reply) => {
                let result = executor::execute(&shared, "recompute_candles", true, |c| {
                    let (name, resolutions) = (name.clone(), Arc::clone(&resolutions));
                    Box::pin(async move {
                        ops::recompute_candles(c, ms, &name, from, to, &resolutions).await
                    })
                })
                .await;
                let _ = reply.send(result);
            }
            PgCall::DeactivateInstruments {
                currency,
                kinds,
                keep,
                reply,
            } => {
                let result = executor::execute(&shared, "deactivate_instruments", true, |c| {
                    let (currency, kinds, keep) = (currency.clone(), kinds.clone(), keep.clone());
                    Box::pin(async move {
                        ops::deactivate_instruments(c, &currency, &kinds, &keep).await
                    })
                })
                .await;
                let _ = reply.send(result);
            }
            PgCall::Ping(reply) => {
                let started = Instant::now();
                let result = executor::execute(&shared, "ping", true, |c| Box::pin(ops::ping(c)))
                    .await
                    .map(|()| started.elapsed());
                let _ = reply.send(result);
            }
        }
    }

    fn pool_stats(shared: &PgShared) -> PoolStats {
        super::pool::stats(shared.pool.state(), shared.config.max_size)
    }

    fn details(shared: &PgShared) -> serde_json::Value {
        let c = &shared.counters;
        serde_json::json!({
            "calls": c.calls.load(Ordering::Relaxed),
            "attempts": c.attempts.load(Ordering::Relaxed),
            "retries": c.retries.load(Ordering::Relaxed),
            "rejected": c.rejected.load(Ordering::Relaxed),
            "gave_up": c.exhausted.load(Ordering::Relaxed),
        })
    }

    fn call_stats(shared: &PgShared) -> &CallStats {
        &shared.stats
    }
}

/// Batches of `delete_batch` rows, each its own short transaction, so no lock is
/// held for long.
async fn delete_older_than(
    shared: &PgShared,
    table: Retained,
    before: SystemTime,
) -> Result<u64, PgError> {
    let limit = i64::from(shared.config.delete_batch);
    let ms = shared.timeout_ms();
    let mut total = 0;
    loop {
        let n = executor::execute(shared, "delete_older_than", true, |c| {
            Box::pin(ops::delete_batch(c, ms, table, before, limit))
        })
        .await?;
        total += n;
        if n < limit as u64 {
            return Ok(total);
        }
    }
}

/// How workers reach PgActor: by name, so restarts are invisible to them.
///
/// A client made with [`PgClient::riding_out`] waits out an outage of PgActor
/// (server unreachable, PgActor restarting) instead of failing with it.
#[derive(Clone, Debug)]
pub struct PgClient {
    registry: Registry,
    name: String,
    ride: Option<RideOut>,
}

impl PgClient {
    /// A client for the PgActor registered as `name`.
    pub fn new(registry: Registry, name: impl Into<String>) -> Self {
        Self {
            registry,
            name: name.into(),
            ride: None,
        }
    }

    /// The same client, waiting out outages on behalf of `ride`'s caller.
    pub fn riding_out(mut self, ride: RideOut) -> Self {
        self.ride = Some(ride);
        self
    }

    /// The same client, failing at once with an outage.
    pub fn plain(&self) -> Self {
        Self {
            ride: None,
            ..self.clone()
        }
    }

    /// Whether PgActor says it reaches its server now.
    pub fn is_ready(&self) -> bool {
        self.registry
            .ready(&self.name)
            .is_some_and(|ready| *ready.borrow())
    }

    async fn call<T: Send + 'static>(
        &self,
        make: impl Fn(Reply<T>) -> PgCall,
    ) -> Result<T, PgError> {
        riding_out(&self.registry, &self.name, self.ride.as_ref(), || {
            call(&self.registry, &self.name, &make)
        })
        .await
    }

    /// Inserts trades idempotently; returns how many were new.
    pub async fn insert_trades(&self, trades: Arc<[Trade]>) -> Result<u64, PgError> {
        self.call(|r| PgCall::InsertTrades(Arc::clone(&trades), r))
            .await
    }

    /// Inserts or updates instruments.
    pub async fn upsert_instruments(&self, rows: Arc<[Instrument]>) -> Result<u64, PgError> {
        self.call(|r| PgCall::UpsertInstruments(Arc::clone(&rows), r))
            .await
    }

    /// Inserts or replaces candles.
    pub async fn upsert_candles(&self, rows: Arc<[Candle]>) -> Result<u64, PgError> {
        self.call(|r| PgCall::UpsertCandles(Arc::clone(&rows), false, r))
            .await
    }

    /// Inserts or replaces candles taken from the exchange's chart data; the
    /// analyzer never folds trades on top of them.
    pub async fn upsert_exchange_candles(&self, rows: Arc<[Candle]>) -> Result<u64, PgError> {
        self.call(|r| PgCall::UpsertCandles(Arc::clone(&rows), true, r))
            .await
    }

    /// Deletes rows of `table` older than `before`, in batches.
    pub async fn delete_older_than(
        &self,
        table: Retained,
        before: SystemTime,
    ) -> Result<u64, PgError> {
        self.call(|r| PgCall::DeleteOlderThan(table, before, r))
            .await
    }

    /// One round trip to the server.
    pub async fn ping(&self) -> Result<Duration, PgError> {
        self.call(PgCall::Ping).await
    }

    /// Records missing trade ranges.
    pub async fn record_gaps(&self, gaps: Arc<[Gap]>) -> Result<u64, PgError> {
        self.call(|r| PgCall::RecordGaps(Arc::clone(&gaps), r))
            .await
    }

    /// Every recorded gap.
    pub async fn list_gaps(&self) -> Result<Vec<Gap>, PgError> {
        self.call(PgCall::ListGaps).await
    }

    /// Deletes the recorded gaps within a repaired range.
    pub async fn clear_gap(&self, gap: Gap) -> Result<u64, PgError> {
        self.call(|r| PgCall::ClearGap(gap.clone(), r)).await
    }

    /// The highest stored `trade_seq` of `instrument`.
    pub async fn max_seq(&self, instrument: &str) -> Result<Option<i64>, PgError> {
        self.call(|r| PgCall::MaxSeq(instrument.to_owned(), r))
            .await
    }

    /// Holes in `instrument`'s stored `trade_seq`s.
    pub async fn find_holes(&self, instrument: &str) -> Result<Vec<Gap>, PgError> {
        self.call(|r| PgCall::FindHoles(instrument.to_owned(), r))
            .await
    }

    /// Folds trades into candles of `resolutions` (minutes), each trade once.
    pub async fn fold_candles(
        &self,
        trades: Arc<[Trade]>,
        resolutions: Arc<[i32]>,
    ) -> Result<u64, PgError> {
        self.call(|r| PgCall::FoldCandles(Arc::clone(&trades), Arc::clone(&resolutions), r))
            .await
    }

    /// Recomputes `instrument`'s candles over `[from, to]` from the stored trades.
    pub async fn recompute_candles(
        &self,
        instrument: &str,
        from: SystemTime,
        to: SystemTime,
        resolutions: Arc<[i32]>,
    ) -> Result<u64, PgError> {
        self.call(|r| {
            PgCall::RecomputeCandles(instrument.to_owned(), from, to, Arc::clone(&resolutions), r)
        })
        .await
    }

    /// Marks `currency`'s instruments of `kinds` not in `keep` inactive.
    pub async fn deactivate_instruments(
        &self,
        currency: &str,
        kinds: Vec<String>,
        keep: Vec<String>,
    ) -> Result<u64, PgError> {
        self.call(|reply| PgCall::DeactivateInstruments {
            currency: currency.to_owned(),
            kinds: kinds.clone(),
            keep: keep.clone(),
            reply,
        })
        .await
    }

    /// Status, pool figures and the executor's counters (no I/O).
    pub async fn health(&self) -> Result<super::Health, NotRunning> {
        super::health::<PgCall>(&self.registry, &self.name).await
    }
}
