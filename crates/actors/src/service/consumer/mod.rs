//! A consumer of the trade streams through a consumer group: the distributor
//! (trades → PostgreSQL) and the analyzer (trades → candles) are this actor with
//! different sinks.
//!
//! Each `Poll` reads one batch (its own pending entries first after a restart,
//! then claims from dead consumers when due, else new entries), hands the
//! trades to the sink, and acknowledges only after the sink committed. An entry
//! that cannot be parsed, or was delivered too often, goes to the dead-letter
//! stream with its reason and is acknowledged: it never blocks the group. A
//! drain lets the `Poll` in hand finish (read, commit, acknowledge), then the
//! mailbox refuses the next one and the actor stops.
//!
//! An outage of Redis or PostgreSQL is not the consumer's failure: its clients
//! wait for the resource and the batch in hand goes on once it is back. A group
//! Redis lost (a restart without persistence) is created again. Only its own
//! failures (a sink that rejects data, a bug) fail the actor.

mod stats;

use stats::{Counts, Progress, ProgressStats, StreamFigures};

use keel_core::mailbox::Tell;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use ractor::{Actor, ActorCell, ActorProcessingErr, ActorRef, SpawnErr};
use serde::{Deserialize, Serialize};

use crate::resource::pg::PgClient;
use crate::resource::redis::{Fields, RedisClient, StreamEntry};
use crate::resource::RideOut;
use crate::service::analyzer::Fenced;
use crate::service::leases::{LeaseRounds, Leases, Takeover};
use crate::service::streams;
use keel_core::child::{spawn_with_probe, Incarnation, StartContext};
use keel_core::logs::Repeats;
use keel_core::recorded::Recordable;
use keel_market::Trade;
use tokio_util::sync::CancellationToken;

/// The `[distributor]` and `[analyzer]` sections.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConsumerConfig {
    /// Whether the daemon runs this service.
    #[serde(default = "yes")]
    pub enabled: bool,
    /// Consumer group name; empty: the service's name.
    #[serde(default)]
    pub group: String,
    /// Consumer name; empty: `{hostname}-{pid}`, unique per process.
    #[serde(default)]
    pub consumer: String,
    /// Trades per stream per read, about (the most; a read returns what is
    /// there): reads ask for `batch` entries divided by the trades per entry
    /// of the last read, as the receiver packs several trades in an entry.
    /// Larger batches cost less per row: with 1,000 a saturated daemon
    /// committed about 50,000 rows/s, with 5,000 about 60,000 (README,
    /// "Overload").
    #[serde(default = "default_batch")]
    pub batch: usize,
    /// Entries pending this long with another consumer are claimed.
    #[serde(with = "humantime_serde", default = "default_min_idle")]
    pub claim_min_idle: Duration,
    /// How often to look for such entries.
    #[serde(with = "humantime_serde", default = "default_claim_every")]
    pub claim_every: Duration,
    /// Deliveries after which an entry is dead-lettered.
    #[serde(default = "default_max_deliveries")]
    pub max_deliveries: u64,
    /// How often the group's lag and pending count are read for the registry.
    #[serde(with = "humantime_serde", default = "default_progress_every")]
    pub progress_every: Duration,
}

fn yes() -> bool {
    true
}
fn default_batch() -> usize {
    5000
}
fn default_min_idle() -> Duration {
    Duration::from_secs(30)
}
fn default_claim_every() -> Duration {
    Duration::from_secs(10)
}
fn default_max_deliveries() -> u64 {
    5
}
fn default_progress_every() -> Duration {
    Duration::from_secs(5)
}

impl Default for ConsumerConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            group: String::new(),
            consumer: String::new(),
            batch: default_batch(),
            claim_min_idle: default_min_idle(),
            claim_every: default_claim_every(),
            max_deliveries: default_max_deliveries(),
            progress_every: default_progress_every(),
        }
    }
}

impl ConsumerConfig {
    /// Every problem, as `(key, what is expected)`.
    pub fn problems(&self) -> Vec<(String, String)> {
        use keel_core::bounds::{Check, DAY, HOUR, SECOND};
        let mut check = Check::new();
        for (key, name) in [("group", &self.group), ("consumer", &self.consumer)] {
            if name.len() > 128 || name.bytes().any(|b| !b.is_ascii_graphic()) {
                check.push(key, "at most 128 printable characters without spaces");
            }
        }
        check
            .count("batch", self.batch as u64, 1, 100_000)
            .count("max_deliveries", self.max_deliveries, 1, 1000)
            .duration("claim_min_idle", self.claim_min_idle, SECOND, DAY)
            .duration("claim_every", self.claim_every, SECOND, DAY)
            .duration("progress_every", self.progress_every, SECOND, HOUR)
            .finish()
    }

    /// The consumer group: `group`, or `service` (the sink's name) when empty.
    pub fn group_name(&self, service: &str) -> String {
        if self.group.is_empty() {
            service.to_owned()
        } else {
            self.group.clone()
        }
    }

    /// The consumer name: configured, or unique to this process.
    pub fn consumer_name(&self) -> String {
        consumer_name(&self.consumer)
    }
}

/// `configured`, or `{hostname}-{pid}` when empty: unique to this process,
/// so several Keel processes share a group's work.
pub fn consumer_name(configured: &str) -> String {
    if !configured.is_empty() {
        return configured.to_owned();
    }
    let host = std::fs::read_to_string("/etc/hostname")
        .map(|h| h.trim().to_owned())
        .unwrap_or_else(|_| "keel".into());
    format!("{host}-{}", std::process::id())
}

/// Where a consumer's trades go. `store` must be idempotent: entries are
/// redelivered after a failure, and acknowledged only once it returned `Ok`.
pub trait TradeSink: Clone + Send + Sync + std::fmt::Debug + 'static {
    /// What the registry calls this service.
    const NAME: &'static str;

    /// Stores (or folds in) a batch.
    fn store(
        &self,
        pg: &PgClient,
        trades: Arc<[Trade]>,
    ) -> impl std::future::Future<Output = Result<u64, ActorProcessingErr>> + Send;
}

/// What a consumer is started with.
#[derive(Clone, Debug)]
pub struct ConsumerArgs<S> {
    /// Its `[distributor]` or `[analyzer]` section.
    pub config: ConsumerConfig,
    /// Where its trades go.
    pub sink: S,
    /// Instruments whose streams it reads.
    pub instruments: Vec<String>,
    /// RedisActor, reached by name in the tree's registry.
    pub redis: RedisClient,
    /// PgActor, reached by name in the tree's registry.
    pub pg: PgClient,
    /// Cluster mode (the analyzer): reads only the streams of the instruments
    /// whose lease this instance holds; kept across incarnations.
    pub leases: Option<Arc<Leases>>,
}

/// Messages a consumer handles.
#[derive(Debug)]
pub enum ConsumerMsg {
    /// Read, store and acknowledge one batch, then poll again.
    Poll,
    /// A task of its own (the lease rounds) ended when it should not have.
    TaskFailed(String),
}

impl Recordable for ConsumerMsg {
    fn kind(&self) -> &'static str {
        match self {
            ConsumerMsg::Poll => "Poll",
            ConsumerMsg::TaskFailed(_) => "TaskFailed",
        }
    }

    fn summary(&self) -> String {
        match self {
            ConsumerMsg::Poll => "read, store, acknowledge one batch".into(),
            ConsumerMsg::TaskFailed(reason) => reason.clone(),
        }
    }
}

/// The consumer actor.
#[derive(Debug)]
pub struct TradeConsumer<S>(std::marker::PhantomData<fn() -> S>);

impl<S> Default for TradeConsumer<S> {
    fn default() -> Self {
        Self(std::marker::PhantomData)
    }
}

/// Its state.
#[derive(Debug)]
pub struct ConsumerState<S> {
    sink: S,
    config: ConsumerConfig,
    consumer: String,
    streams: Vec<String>,
    redis: RedisClient,
    pg: PgClient,
    stop: tokio_util::sync::CancellationToken,
    /// Consecutive polls that found a group missing right after creating it.
    missing_groups: u32,
    own_pending_done: bool,
    /// Groups are created once per incarnation: a group Redis lost makes the
    /// next read fail with NOGROUP, and the new incarnation creates it again.
    groups_created: bool,
    last_claim: Option<Instant>,
    last_progress: Option<Instant>,
    claim_cursor: BTreeMap<String, String>,
    /// Trades per entry in the last batch read (at least 1): reads ask for
    /// `batch / per_entry` entries, so a poll holds about `batch` trades
    /// however the producer packed them.
    per_entry: usize,
    /// Dead-letter warnings, bounded: a stream full of bad entries must not flood the log.
    dead_log: Repeats,
    counts: Arc<Counts>,
    progress: Arc<ProgressStats>,
    /// Cluster mode: the leases and their rounds.
    leases: Option<(Arc<Leases>, LeaseRounds)>,
    /// Streams taken over and not yet cleared of what the group holds
    /// pending for other consumers, with the claim cursor.
    takeover: BTreeMap<String, String>,
    /// The tree is shutting down: leases are given up then.
    shutdown: CancellationToken,
    /// Redis without riding out, for giving leases up within a bound.
    plain_redis: RedisClient,
}

impl<S: TradeSink> TradeConsumer<S> {
    /// Spawns one incarnation; use as a child factory.
    pub async fn spawn(args: ConsumerArgs<S>, ctx: StartContext) -> Result<ActorCell, SpawnErr> {
        spawn_with_probe(Self::default(), args, ctx).await
    }
}

impl<S: TradeSink> Actor for TradeConsumer<S> {
    type Msg = ConsumerMsg;
    type State = ConsumerState<S>;
    type Arguments = (ConsumerArgs<S>, Incarnation);

    async fn pre_start(
        &self,
        myself: ActorRef<ConsumerMsg>,
        (mut args, own): (ConsumerArgs<S>, Incarnation),
    ) -> Result<ConsumerState<S>, ActorProcessingErr> {
        let probe = own.probe.clone();
        let consumer = args.config.consumer_name();
        args.config.group = args.config.group_name(S::NAME);
        probe.set_detail("consumer", consumer.clone());
        probe.set_detail("group", args.config.group.clone());
        let (counts, progress) = (Arc::<Counts>::default(), Arc::<ProgressStats>::default());
        probe.set_stats(S::NAME, Arc::clone(&counts));
        probe.set_stats("group_progress", Arc::clone(&progress));
        let leases = args.leases.clone().map(|leases| {
            let takeover = Takeover::Analyzer(args.pg.clone());
            let rounds = LeaseRounds::start(
                &leases,
                args.redis.clone(),
                takeover,
                &myself,
                &probe,
                ConsumerMsg::TaskFailed,
            );
            (leases, rounds)
        });
        myself.tell(ConsumerMsg::Poll)?;
        Ok(ConsumerState {
            sink: args.sink,
            streams: args
                .instruments
                .iter()
                .map(|i| streams::trade_stream(i))
                .collect(),
            plain_redis: args.redis.clone(),
            redis: args.redis.riding_out(RideOut::new(&own)),
            pg: args.pg.riding_out(RideOut::new(&own)),
            config: args.config,
            consumer,
            leases,
            takeover: BTreeMap::new(),
            shutdown: own.shutdown.clone(),
            stop: own.stop,
            missing_groups: 0,
            own_pending_done: false,
            groups_created: false,
            last_claim: None,
            last_progress: None,
            claim_cursor: BTreeMap::new(),
            per_entry: 1,
            dead_log: Repeats::default(),
            counts,
            progress,
        })
    }

    async fn handle(
        &self,
        myself: ActorRef<ConsumerMsg>,
        message: ConsumerMsg,
        state: &mut ConsumerState<S>,
    ) -> Result<(), ActorProcessingErr> {
        if let ConsumerMsg::TaskFailed(reason) = message {
            return Err(reason.into());
        }
        match state.poll().await {
            Ok(()) => state.missing_groups = 0,
            // Another instance took these instruments over: nothing of the
            // batch was stored or acknowledged, and their streams are no
            // longer read here.
            Err(error) if error.downcast_ref::<Fenced>().is_some() => {
                if let (Some(Fenced(instruments)), Some((leases, _))) =
                    (error.downcast_ref::<Fenced>(), &state.leases)
                {
                    for instrument in instruments {
                        leases.fenced_out(instrument, 0);
                    }
                }
                tracing::warn!(%error, "Fold refused: another analyzer took the instrument over.");
            }
            Err(error) if missing_group(&error) => {
                // Redis lost the group (restarted without persistence, or
                // flushed): what it held is gone, and gap repair finds those
                // trades; the consumer carries on from the new stream. Never a
                // failure: a flapping Redis can lose it again before a poll
                // goes through, so each loss in a row waits a little longer.
                tracing::warn!(%error, lost_in_a_row = state.missing_groups + 1,
                    "Consumer group missing; creating it again.");
                state.missing_groups += 1;
                state.groups_created = false;
                state.own_pending_done = false;
                state.claim_cursor.clear();
                if state.missing_groups > 1 {
                    let delay =
                        Duration::from_millis(200).saturating_mul(state.missing_groups.min(10));
                    tokio::select! {
                        () = state.stop.cancelled() => {}
                        () = tokio::time::sleep(delay) => {}
                    }
                }
            }
            // Asked to stop while a resource was out: nothing more to do here
            // (what was not acknowledged is delivered again later).
            Err(error) if state.stop.is_cancelled() => {
                tracing::debug!(%error, "Stopping with the batch in hand unfinished.");
                return Ok(());
            }
            Err(error) => return Err(error),
        }
        // Refused once a drain has begun: the batch in hand was the last.
        let _ = myself.tell(ConsumerMsg::Poll);
        Ok(())
    }

    async fn post_stop(
        &self,
        _myself: ActorRef<ConsumerMsg>,
        state: &mut ConsumerState<S>,
    ) -> Result<(), ActorProcessingErr> {
        // Leases outlive a restart; at a shutdown they go to the other
        // instances at once (the batch in hand was acknowledged).
        if let Some((_, rounds)) = state.leases.take() {
            let release = state.shutdown.is_cancelled();
            rounds.stop(&state.plain_redis, release).await;
        }
        Ok(())
    }
}

/// The reason PostgreSQL gave for rejecting a batch because of its data (a value
/// out of range, a NUL byte, a constraint other than the idempotence key), or
/// `None` for any other failure (those fail the poll, and nothing is
/// dead-lettered on their account).
fn data_error(error: &ActorProcessingErr) -> Option<String> {
    use crate::resource::pg::PgError;
    match error.downcast_ref::<PgError>()? {
        PgError::Rejected {
            sqlstate, message, ..
        } if sqlstate.starts_with("22") || (sqlstate.starts_with("23") && sqlstate != "23505") => {
            Some(format!(
                "PostgreSQL rejected it: SQLSTATE {sqlstate}: {message}"
            ))
        }
        _ => None,
    }
}

/// Whether a poll failed because a consumer group (or its stream) is gone.
fn missing_group(error: &ActorProcessingErr) -> bool {
    error
        .downcast_ref::<crate::resource::redis::RedisError>()
        .and_then(|e| e.code())
        == Some("NOGROUP")
}

/// How long a consumer holding no lease waits before looking again.
const NOTHING_HELD: Duration = Duration::from_millis(250);

/// An entry and how often it has been delivered (0: unknown, first read).
type Delivery = (String, StreamEntry, u64);

/// A trade's entry (its place in the batch) and its place in that entry when
/// the entry holds several (`b`).
type Place = (usize, Option<usize>);

impl<S: TradeSink> ConsumerState<S> {
    async fn poll(&mut self) -> Result<(), ActorProcessingErr> {
        if let Some((leases, _)) = &self.leases {
            // Only the streams of instruments held, and held still by this
            // instance's clock (one paused past its lease reads nothing).
            let held: Vec<String> = leases
                .owned_now()
                .into_iter()
                .filter(|i| leases.token(i).is_some())
                .map(|i| streams::trade_stream(&i))
                .collect();
            for stream in &held {
                if !self.streams.contains(stream) {
                    self.takeover.insert(stream.clone(), "0-0".into());
                    self.groups_created = false;
                }
            }
            self.takeover.retain(|stream, _| held.contains(stream));
            self.streams = held;
            if self.streams.is_empty() {
                tokio::select! {
                    () = self.stop.cancelled() => {}
                    () = tokio::time::sleep(NOTHING_HELD) => {}
                }
                return Ok(());
            }
        }
        if !self.groups_created {
            for stream in &self.streams {
                self.redis.create_group(stream, &self.config.group).await?;
            }
            self.groups_created = true;
        }
        let due = self
            .last_progress
            .is_none_or(|at| at.elapsed() >= self.config.progress_every);
        if due {
            self.last_progress = Some(Instant::now());
            self.publish_progress().await;
        }
        let batch = self.next_batch().await?;
        if batch.is_empty() {
            return Ok(());
        }
        // Each trade is known by its entry's place in the batch and, in an
        // entry holding several, its own place in the entry.
        let mut trades: Vec<(Place, Trade)> = Vec::with_capacity(batch.len());
        let mut acks: BTreeMap<&str, Vec<String>> = BTreeMap::new();
        let mut dead: Vec<(Place, String)> = Vec::new();
        for (i, (stream, entry, deliveries)) in batch.iter().enumerate() {
            let verdict = if *deliveries > self.config.max_deliveries {
                Err(format!("delivered {deliveries} times"))
            } else {
                streams::decode(entry).map_err(|e| e.to_string())
            };
            match verdict {
                Ok(decoded) => {
                    // `decode` reads `t` first: an entry without it was packed.
                    let packed = entry.field(streams::TRADE_FIELD).is_none();
                    for (j, trade) in decoded.into_iter().enumerate() {
                        let place = (i, packed.then_some(j));
                        match trade {
                            Ok(trade) => trades.push((place, trade)),
                            Err(e) => dead.push((place, e.to_string())),
                        }
                    }
                }
                Err(reason) => dead.push(((i, None), reason)),
            }
            acks.entry(stream.as_str())
                .or_default()
                .push(entry.id.clone());
        }
        let items = trades.len() + dead.len();
        self.per_entry = items.div_ceil(batch.len()).max(1);
        if !trades.is_empty() {
            let count = trades.len() as u64;
            let (new, rejected) = self.store_isolating(trades).await?;
            Counts::add(&self.counts.stored, new);
            let duplicates = count.saturating_sub(new + rejected.len() as u64);
            Counts::add(&self.counts.duplicates, duplicates);
            dead.extend(rejected);
        }
        if !dead.is_empty() {
            let fields: Arc<[Fields]> = dead
                .iter()
                .map(|((i, index), reason)| {
                    let (stream, entry, _) = &batch[*i];
                    self.dead_log.warn(|suppressed| {
                        tracing::warn!(%stream, id = %entry.id, index, %reason, suppressed, "Entry dead-lettered.");
                    });
                    // A trade of a packed entry goes alone, as a `t` entry of
                    // its own text; a whole entry goes as it was.
                    let mut fields = match index {
                        Some(j) => vec![
                            (
                                streams::TRADE_FIELD.to_owned(),
                                streams::trade_text(entry, *j).unwrap_or_default(),
                            ),
                            ("index".into(), j.to_string().into_bytes()),
                        ],
                        None => entry.fields.clone(),
                    };
                    fields.push(("stream".into(), stream.clone().into_bytes()));
                    fields.push(("id".into(), entry.id.clone().into_bytes()));
                    fields.push(("reason".into(), reason.clone().into_bytes()));
                    fields.push(("group".into(), self.config.group.clone().into_bytes()));
                    fields
                })
                .collect();
            self.redis
                .xadd_bulk(streams::DEAD_LETTER_STREAM, fields)
                .await?;
            Counts::add(&self.counts.dead_lettered, dead.len() as u64);
        }
        // Acknowledged only now: what is not committed (or dead-lettered) is
        // delivered again.
        for (stream, ids) in acks {
            self.redis.ack(stream, &self.config.group, ids).await?;
        }
        Ok(())
    }

    /// Hands `trades` to the sink; when PostgreSQL rejects the batch for its
    /// data (SQLSTATE class 22 or 23), splits it in halves until the rows it
    /// rejects are alone, stores the rest, and returns those rows (by batch
    /// index) with the server's reason. Any other error fails the poll.
    async fn store_isolating<K: Copy>(
        &self,
        trades: Vec<(K, Trade)>,
    ) -> Result<(u64, Vec<(K, String)>), ActorProcessingErr> {
        let (indices, rows): (Vec<K>, Vec<Trade>) = trades.into_iter().unzip();
        // The whole batch first, without copying a row; only a batch
        // PostgreSQL rejected for its data is split (and its rows copied).
        let rows: Arc<[Trade]> = rows.into();
        let mut stored = 0;
        let mut rejected = Vec::new();
        let mut parts = Vec::new();
        parts.push(0..rows.len());
        while let Some(part) = parts.pop() {
            let batch = if part.len() == rows.len() {
                Arc::clone(&rows)
            } else {
                Arc::from(&rows[part.clone()])
            };
            match self.sink.store(&self.pg, batch).await {
                Ok(new) => stored += new,
                Err(error) => match data_error(&error) {
                    Some(reason) if part.len() == 1 => rejected.push((indices[part.start], reason)),
                    Some(_) => {
                        let middle = part.start + part.len() / 2;
                        parts.push(middle..part.end);
                        parts.push(part.start..middle);
                    }
                    None => return Err(error),
                },
            }
        }
        Ok((stored, rejected))
    }

    /// The group's lag (entries not delivered yet) and pending count (delivered,
    /// not acknowledged), per stream and in total, for the registry. Best effort:
    /// a Redis that cannot answer fails the next read, which is where it counts.
    async fn publish_progress(&self) {
        let mut streams = BTreeMap::new();
        let (mut lag, mut pending, mut lag_known) = (0u64, 0u64, true);
        let redis = self.redis.plain();
        for stream in &self.streams {
            let groups = match redis.group_progress(stream).await {
                Ok(groups) => groups,
                Err(err) => {
                    tracing::debug!(%stream, %err, "Group progress unavailable.");
                    return;
                }
            };
            let Some(mine) = groups.into_iter().find(|g| g.group == self.config.group) else {
                continue;
            };
            pending += mine.pending;
            match mine.lag {
                Some(n) => lag += n,
                None => lag_known = false,
            }
            let figures = StreamFigures {
                lag: mine.lag,
                pending: mine.pending,
                oldest_pending: mine.oldest_pending,
                last_delivered: mine.last_delivered,
            };
            streams.insert(stream.clone(), figures);
        }
        // Redis cannot tell the lag of a stream trimmed past undelivered entries.
        let lag = lag_known.then_some(lag);
        let progress = Progress {
            lag,
            pending,
            streams,
        };
        *self.progress.0.lock() = Some(progress);
    }

    async fn next_batch(&mut self) -> Result<Vec<Delivery>, ActorProcessingErr> {
        let group = self.config.group.clone();
        let count = (self.config.batch / self.per_entry).max(1);
        if !self.own_pending_done {
            let read = self
                .redis
                .read_own_pending(&group, &self.consumer, &self.streams, count)
                .await?;
            let batch: Vec<Delivery> = read
                .into_iter()
                .flat_map(|(stream, entries)| {
                    entries
                        .into_iter()
                        .map(move |d| (stream.clone(), d.entry, d.deliveries))
                })
                .collect();
            if batch.is_empty() {
                self.own_pending_done = true;
            } else {
                return Ok(batch);
            }
        }
        // A stream taken over: first every entry the group holds pending for
        // another consumer (the previous holder's), whatever its idle time, so
        // its trades are folded before any newer one.
        let taken: Vec<(String, String)> = self
            .takeover
            .iter()
            .map(|(s, c)| (s.clone(), c.clone()))
            .collect();
        for (stream, cursor) in taken {
            let result = self
                .redis
                .autoclaim(
                    &stream,
                    &group,
                    &self.consumer,
                    Duration::ZERO,
                    &cursor,
                    count,
                )
                .await?;
            let done = result.next_start == "0-0";
            if done {
                self.takeover.remove(&stream);
            } else {
                self.takeover.insert(stream.clone(), result.next_start);
            }
            if !result.entries.is_empty() {
                tracing::info!(%stream, claimed = result.entries.len(),
                    "Taken over: claimed what the previous holder left pending.");
                return Ok(result
                    .entries
                    .into_iter()
                    .map(|d| (stream.clone(), d.entry, d.deliveries))
                    .collect());
            }
        }
        let due = self
            .last_claim
            .is_none_or(|at| at.elapsed() >= self.config.claim_every);
        if due {
            self.last_claim = Some(Instant::now());
            // Between polls nothing is delivered to this consumer and not yet
            // handled, unless a reply was lost (a read that timed out after
            // Redis delivered): the next poll reads those again, rather than
            // leaving them for another consumer's claim `claim_min_idle` later.
            self.own_pending_done = false;
            let mut claimed = Vec::new();
            for stream in &self.streams {
                let cursor = self
                    .claim_cursor
                    .get(stream)
                    .cloned()
                    .unwrap_or_else(|| "0-0".into());
                let result = self
                    .redis
                    .autoclaim(
                        stream,
                        &group,
                        &self.consumer,
                        self.config.claim_min_idle,
                        &cursor,
                        count,
                    )
                    .await?;
                self.claim_cursor.insert(stream.clone(), result.next_start);
                claimed.extend(
                    result
                        .entries
                        .into_iter()
                        .map(|d| (stream.clone(), d.entry, d.deliveries)),
                );
            }
            if !claimed.is_empty() {
                tracing::info!(
                    claimed = claimed.len(),
                    "Claimed entries left pending by another consumer."
                );
                return Ok(claimed);
            }
        }
        let read = self
            .redis
            .read_group(&group, &self.consumer, &self.streams, count)
            .await?;
        Ok(flatten(read, 1))
    }
}

fn flatten(read: Vec<(String, Vec<StreamEntry>)>, deliveries: u64) -> Vec<Delivery> {
    read.into_iter()
        .flat_map(|(stream, entries)| {
            entries
                .into_iter()
                .map(move |e| (stream.clone(), e, deliveries))
        })
        .collect()
}
