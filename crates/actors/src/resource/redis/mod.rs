//! RedisActor: the Redis resource (bb8 + bb8-redis + redis), behind a circuit
//! breaker.
//!
//! No ping before each command: a broken pooled connection is caught by bb8's
//! `test_on_check_out` (one PING per checkout; bb8-redis never marks a connection
//! broken itself), and each checkout carries a whole pipelined batch.

pub mod breaker;
mod config;
mod error;
mod ops;
mod replies;

pub use breaker::{Breaker, BreakerConfig, BreakerSnapshot, BreakerState};
pub use config::{RedisConfig, MAX_READ_BLOCK, RESPONSE_TIMEOUT};
pub use error::RedisError;
pub use ops::{Claimed, Delivered, Fields, GroupProgress};
pub use replies::StreamEntry;

use std::sync::Arc;
use std::time::{Duration, Instant};

use bb8::{Pool, RunError};
use bb8_redis::RedisConnectionManager;
use futures::future::BoxFuture;
use parking_lot::Mutex;
use ractor::{ActorCell, ActorProcessingErr, RpcReplyPort, SpawnErr};
use redis::aio::MultiplexedConnection;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;

use keel_core::child::{spawn_with_probe, StartContext};
use keel_core::delay::BackoffConfig;
use keel_core::recorded::Recordable;
use keel_core::registry::Registry;

use super::{
    call, riding_out, Availability, CallStats, ConnectError, NotRunning, PoolStats, Resource,
    ResourceActor, RideOut,
};
use breaker::{Outcome, Permit};

type Reply<T> = RpcReplyPort<Result<T, RedisError>>;

/// The operations RedisActor offers. Stream and key names are logical: the
/// configured prefix is added by the actor.
#[derive(Debug)]
pub enum RedisCall {
    /// Appends entries to a stream in one pipelined round trip; replies with ids.
    XaddBulk(String, Arc<[Fields]>, Reply<Vec<String>>),
    /// Creates a consumer group (and the stream); false if it existed.
    CreateGroup {
        /// Stream.
        stream: String,
        /// Group.
        group: String,
        /// Answer.
        reply: Reply<bool>,
    },
    /// Reads new entries for a consumer, blocking at most `read_block`.
    ReadGroup {
        /// Group.
        group: String,
        /// Consumer (unique per process).
        consumer: String,
        /// Streams to read.
        streams: Vec<String>,
        /// Entries per stream at most.
        count: usize,
        /// `>` for new entries, `0` for the consumer's own pending ones.
        from: String,
        /// Answer: per stream, its entries.
        reply: Reply<Vec<(String, Vec<StreamEntry>)>>,
    },
    /// The consumer's own pending entries, with their real delivery counts.
    ReadOwnPending {
        /// Group.
        group: String,
        /// Consumer.
        consumer: String,
        /// Streams to read.
        streams: Vec<String>,
        /// Entries per stream at most.
        count: usize,
        /// Answer: per stream, its entries.
        reply: Reply<Vec<(String, Vec<Delivered>)>>,
    },
    /// Acknowledges entries.
    Ack {
        /// Stream.
        stream: String,
        /// Group.
        group: String,
        /// Entry ids.
        ids: Vec<String>,
        /// Answer: how many were pending.
        reply: Reply<u64>,
    },
    /// Takes over entries other consumers left pending for `min_idle`.
    AutoClaim {
        /// Stream.
        stream: String,
        /// Group.
        group: String,
        /// The claiming consumer.
        consumer: String,
        /// Idle time that makes an entry claimable.
        min_idle: Duration,
        /// Scan start (`0-0` first, then the previous `next_start`).
        start: String,
        /// Entries at most.
        count: usize,
        /// Answer.
        reply: Reply<Claimed>,
    },
    /// Removes entries older than an id.
    TrimMinId(String, String, Reply<u64>),
    /// Takes a lease if it is free.
    LeaseAcquire(String, String, Duration, Reply<bool>),
    /// Extends one's own lease.
    LeaseRenew(String, String, Duration, Reply<bool>),
    /// Gives one's own lease up.
    LeaseRelease(String, String, Reply<bool>),
    /// One round trip.
    Ping(Reply<Duration>),
    /// The newest entry of a stream.
    LastEntry(String, Reply<Option<StreamEntry>>),
    /// Every consumer group's progress on a stream.
    GroupProgress(String, Reply<Vec<GroupProgress>>),
}

impl Recordable for RedisCall {
    fn kind(&self) -> &'static str {
        match self {
            RedisCall::XaddBulk(..) => "XaddBulk",
            RedisCall::CreateGroup { .. } => "CreateGroup",
            RedisCall::ReadGroup { .. } => "ReadGroup",
            RedisCall::ReadOwnPending { .. } => "ReadOwnPending",
            RedisCall::Ack { .. } => "Ack",
            RedisCall::AutoClaim { .. } => "AutoClaim",
            RedisCall::TrimMinId(..) => "TrimMinId",
            RedisCall::LeaseAcquire(..) => "LeaseAcquire",
            RedisCall::LeaseRenew(..) => "LeaseRenew",
            RedisCall::LeaseRelease(..) => "LeaseRelease",
            RedisCall::Ping(_) => "Ping",
            RedisCall::LastEntry(..) => "LastEntry",
            RedisCall::GroupProgress(..) => "GroupProgress",
        }
    }

    fn summary(&self) -> String {
        match self {
            RedisCall::XaddBulk(stream, entries, _) => {
                format!("{} entries to {stream}", entries.len())
            }
            RedisCall::CreateGroup { stream, group, .. } => format!("group {group} on {stream}"),
            RedisCall::ReadGroup {
                group,
                consumer,
                streams,
                count,
                ..
            } => {
                format!(
                    "{group}/{consumer} up to {count} from {}",
                    streams.join(",")
                )
            }
            RedisCall::ReadOwnPending {
                group,
                consumer,
                streams,
                ..
            } => format!("{group}/{consumer} own pending on {}", streams.join(",")),
            RedisCall::Ack {
                stream, group, ids, ..
            } => {
                format!("{} ids on {stream} for {group}", ids.len())
            }
            RedisCall::AutoClaim {
                stream,
                group,
                consumer,
                min_idle,
                ..
            } => {
                format!("{group}/{consumer} on {stream}, idle >= {min_idle:?}")
            }
            RedisCall::TrimMinId(stream, id, _) => format!("{stream} below {id}"),
            RedisCall::LeaseAcquire(key, owner, ttl, _) => format!("{key} for {owner}, {ttl:?}"),
            RedisCall::LeaseRenew(key, owner, ttl, _) => format!("{key} for {owner}, {ttl:?}"),
            RedisCall::LeaseRelease(key, owner, _) => format!("{key} by {owner}"),
            RedisCall::Ping(_) => "ping".into(),
            RedisCall::LastEntry(stream, _) | RedisCall::GroupProgress(stream, _) => stream.clone(),
        }
    }
}

/// Everything a RedisActor call needs.
#[derive(Clone, Debug)]
pub struct RedisShared {
    pool: Pool<RedisConnectionManager>,
    config: Arc<RedisConfig>,
    breaker: Arc<Mutex<Breaker>>,
    writes: Arc<Semaphore>,
    availability: Availability,
    stats: Arc<CallStats>,
}

impl RedisShared {
    fn key(&self, name: &str) -> String {
        format!("{}{name}", self.config.key_prefix)
    }

    /// Per-stream results keyed by stream name again, the prefix taken off.
    fn unprefixed<T>(&self, streams: Vec<(String, T)>) -> Vec<(String, T)> {
        let prefix = &self.config.key_prefix;
        streams
            .into_iter()
            .map(|(key, value)| {
                let name = key.strip_prefix(prefix.as_str()).unwrap_or(&key).to_owned();
                (name, value)
            })
            .collect()
    }

    /// Runs one call behind the breaker: refused at once while open, and only
    /// connection-class failures count against it.
    async fn guarded<T>(
        &self,
        op: &'static str,
        work: impl for<'c> FnOnce(
            &'c mut MultiplexedConnection,
        ) -> BoxFuture<'c, Result<T, redis::RedisError>>,
    ) -> Result<T, RedisError> {
        let started = Instant::now();
        let result = self.breaker_guarded(op, work).await;
        let class = result.as_ref().err().map(RedisError::class);
        self.stats.record(op, started.elapsed(), class);
        result
    }

    async fn breaker_guarded<T>(
        &self,
        op: &'static str,
        work: impl for<'c> FnOnce(
            &'c mut MultiplexedConnection,
        ) -> BoxFuture<'c, Result<T, redis::RedisError>>,
    ) -> Result<T, RedisError> {
        let admitted = self.breaker.lock().admit(Instant::now());
        let permit = match admitted {
            Ok(permit) => permit,
            Err(rejected) => {
                self.publish_breaker();
                return Err(RedisError::CircuitOpen {
                    op,
                    retry_after: rejected.retry_after,
                });
            }
        };
        let checkout = {
            let _waiting = self.stats.waiting();
            self.pool.get().await
        };
        let result = match checkout {
            Ok(mut conn) => work(&mut conn)
                .await
                .map_err(|e| RedisError::from_driver(op, &e)),
            Err(RunError::TimedOut) => Err(RedisError::Connection {
                op,
                cause: crate::resource::availability::CHECKOUT_TIMED_OUT.into(),
            }),
            Err(RunError::User(e)) => Err(RedisError::from_driver(op, &e)),
        };
        let outcome = match &result {
            Err(RedisError::Connection { cause, .. }) => {
                self.availability.mark_unreachable(cause);
                Outcome::Failed
            }
            _ => {
                self.availability.mark_ready();
                Outcome::Answered
            }
        };
        self.breaker.lock().record(Instant::now(), permit, outcome);
        if permit == Permit::Probe || outcome == Outcome::Failed {
            self.publish_breaker();
        }
        result
    }

    fn publish_breaker(&self) {
        let snapshot = self.breaker.lock().snapshot();
        if let Ok(value) = serde_json::to_value(&snapshot) {
            self.availability.probe().set_detail("breaker", value);
        }
    }
}

/// The Redis resource: `ResourceActor<Redis>` is RedisActor.
#[derive(Debug, Clone)]
pub struct Redis {
    config: RedisConfig,
}

impl Redis {
    /// A resource for `config` (validated beforehand by the configuration loader).
    pub fn new(config: RedisConfig) -> Self {
        Self { config }
    }

    /// Spawns one RedisActor incarnation; use as a child factory.
    pub async fn spawn(config: RedisConfig, ctx: StartContext) -> Result<ActorCell, SpawnErr> {
        spawn_with_probe(ResourceActor::<Redis>::default(), Self::new(config), ctx).await
    }
}

impl Resource for Redis {
    type Call = RedisCall;
    type Shared = RedisShared;

    fn open(
        self,
        availability: Availability,
        _stop: CancellationToken,
    ) -> Result<RedisShared, ActorProcessingErr> {
        let manager = RedisConnectionManager::new(self.config.connection_info()?)?;
        let pool = super::pool::build(
            manager,
            self.config.max_size,
            self.config.checkout_timeout,
            &availability,
        );
        let shared = RedisShared {
            pool,
            breaker: Arc::new(Mutex::new(Breaker::new(self.config.breaker.clone()))),
            writes: Arc::new(Semaphore::new(self.config.write_concurrency)),
            config: Arc::new(self.config),
            availability,
            stats: Arc::default(),
        };
        shared.publish_breaker();
        Ok(shared)
    }

    fn connect_backoff(shared: &RedisShared) -> BackoffConfig {
        shared.config.connect_backoff.clone()
    }

    fn health_every(shared: &RedisShared) -> Duration {
        shared.config.health_every
    }

    async fn check(shared: &RedisShared) -> Result<(), String> {
        super::pool::check(&shared.pool).await?;
        // The server is back: the breaker need not wait out its open interval.
        shared.breaker.lock().server_answered(Instant::now());
        Ok(())
    }

    async fn connect(shared: &RedisShared) -> Result<(), ConnectError> {
        // A connection of its own, not a pooled checkout, so the attempt gets what
        // the server or the OS said; the redis crate sets no connect timeout.
        let limit = shared.config.checkout_timeout.max(Duration::from_secs(1));
        let attempt = async {
            let mut conn = shared.pool.dedicated_connection().await?;
            ops::ping(&mut conn).await
        };
        match tokio::time::timeout(limit, attempt).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => {
                let cause = super::describe(&e);
                Err(match error::permanent_fix(&e) {
                    Some(fix) => ConnectError::Permanent { cause, fix },
                    None => ConnectError::Retry(cause),
                })
            }
            Err(_) => Err(ConnectError::Retry(format!(
                "no answer within {}",
                humantime::format_duration(limit)
            ))),
        }
    }

    async fn serve(shared: RedisShared, call: RedisCall) {
        match call {
            RedisCall::XaddBulk(stream, entries, reply) => {
                let key = shared.key(&stream);
                let maxlen = shared.config.stream_maxlen;
                let result = match shared.writes.acquire().await {
                    Ok(_permit) => {
                        shared
                            .guarded("xadd_bulk", |c| {
                                Box::pin(
                                    async move { ops::xadd_bulk(c, &key, maxlen, &entries).await },
                                )
                            })
                            .await
                    }
                    Err(_) => Err(RedisError::NotRunning(NotRunning("redis".into()))),
                };
                let _ = reply.send(result);
            }
            RedisCall::CreateGroup {
                stream,
                group,
                reply,
            } => {
                let key = shared.key(&stream);
                let result = shared
                    .guarded("create_group", |c| {
                        Box::pin(async move { ops::create_group(c, &key, &group).await })
                    })
                    .await;
                let _ = reply.send(result);
            }
            RedisCall::ReadGroup {
                group,
                consumer,
                streams,
                count,
                from,
                reply,
            } => {
                let keys: Vec<String> = streams.iter().map(|s| shared.key(s)).collect();
                let block = shared.config.read_block;
                let result = shared
                    .guarded("read_group", |c| {
                        Box::pin(async move {
                            ops::read_group(c, &group, &consumer, &keys, count, block, &from).await
                        })
                    })
                    .await
                    .map(|streams| shared.unprefixed(streams));
                let _ = reply.send(result);
            }
            RedisCall::ReadOwnPending {
                group,
                consumer,
                streams,
                count,
                reply,
            } => {
                let keys: Vec<String> = streams.iter().map(|s| shared.key(s)).collect();
                let result = shared
                    .guarded("read_own_pending", |c| {
                        Box::pin(async move {
                            ops::read_own_pending(c, &group, &consumer, &keys, count).await
                        })
                    })
                    .await
                    .map(|streams| shared.unprefixed(streams));
                let _ = reply.send(result);
            }
            RedisCall::Ack {
                stream,
                group,
                ids,
                reply,
            } => {
                let key = shared.key(&stream);
                let result = shared
                    .guarded("ack", |c| {
                        Box::pin(async move { ops::ack(c, &key, &group, &ids).await })
                    })
                    .await;
                let _ = reply.send(result);
            }
            RedisCall::AutoClaim {
                stream,
                group,
                consumer,
                min_idle,
                start,
                count,
                reply,
            } => {
                let key = shared.key(&stream);
                let result = shared
                    .guarded("autoclaim", |c| {
                        Box::pin(async move {
                            ops::autoclaim(c, &key, &group, &consumer, min_idle, &start, count)
                                .await
                        })
                    })
                    .await;
                let _ = reply.send(result);
            }
            RedisCall::TrimMinId(stream, min_id, reply) => {
                let key = shared.key(&stream);
                let result = shared
                    .guarded("trim_min_id", |c| {
                        Box::pin(async move { ops::trim_min_id(c, &key, &min_id).await })
                    })
                    .await;
                let _ = reply.send(result);
            }
            RedisCall::LeaseAcquire(key, owner, ttl, reply) => {
                let key = shared.key(&key);
                let result = shared
                    .guarded("lease_acquire", |c| {
                        Box::pin(async move { ops::lease_acquire(c, &key, &owner, ttl).await })
                    })
                    .await;
                let _ = reply.send(result);
            }
            RedisCall::LeaseRenew(key, owner, ttl, reply) => {
                let key = shared.key(&key);
                let result = shared
                    .guarded("lease_renew", |c| {
                        Box::pin(async move { ops::lease_renew(c, &key, &owner, ttl).await })
                    })
                    .await;
                let _ = reply.send(result);
            }
            RedisCall::LeaseRelease(key, owner, reply) => {
                let key = shared.key(&key);
                let result = shared
                    .guarded("lease_release", |c| {
                        Box::pin(async move { ops::lease_release(c, &key, &owner).await })
                    })
                    .await;
                let _ = reply.send(result);
            }
            RedisCall::LastEntry(stream, reply) => {
                let key = shared.key(&stream);
                let result = shared
                    .guarded("last_entry", |c| {
                        Box::pin(async move { ops::last_entry(c, &key).await })
                    })
                    .await;
                let _ = reply.send(result);
            }
            RedisCall::GroupProgress(stream, reply) => {
                let key = shared.key(&stream);
                let result = shared
                    .guarded("group_progress", |c| {
                        Box::pin(async move { ops::group_progress(c, &key).await })
                    })
                    .await;
                let _ = reply.send(result);
            }
            RedisCall::Ping(reply) => {
                let started = Instant::now();
                let result = shared
                    .guarded("ping", |c| Box::pin(ops::ping(c)))
                    .await
                    .map(|()| started.elapsed());
                let _ = reply.send(result);
            }
        }
    }

    fn pool_stats(shared: &RedisShared) -> PoolStats {
        super::pool::stats(shared.pool.state(), shared.config.max_size)
    }

    fn details(shared: &RedisShared) -> serde_json::Value {
        let snapshot = shared.breaker.lock().snapshot();
        serde_json::json!({
            "breaker": snapshot,
            "checkouts": shared.pool.state().statistics.get_started,
        })
    }

    fn call_stats(shared: &RedisShared) -> &CallStats {
        &shared.stats
    }
}

/// How workers reach RedisActor: by name, so restarts are invisible to them.
///
/// A client made with [`RedisClient::riding_out`] waits out an outage of Redis
/// (unreachable, circuit open, RedisActor restarting) instead of failing with it.
#[derive(Clone, Debug)]
pub struct RedisClient {
    registry: Registry,
    name: String,
    ride: Option<RideOut>,
}

impl RedisClient {
    /// A client for the RedisActor registered as `name`.
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

    /// Whether RedisActor says it reaches its server now.
    pub fn is_ready(&self) -> bool {
        self.registry
            .ready(&self.name)
            .is_some_and(|ready| *ready.borrow())
    }

    async fn call<T: Send + 'static>(
        &self,
        make: impl Fn(Reply<T>) -> RedisCall,
    ) -> Result<T, RedisError> {
        riding_out(&self.registry, &self.name, self.ride.as_ref(), || {
            call(&self.registry, &self.name, &make)
        })
        .await
    }

    /// Appends entries to `stream` in one pipelined round trip; returns their ids.
    /// A retry after a connection failure may append some entries twice (the
    /// consumers' inserts are idempotent).
    pub async fn xadd_bulk(
        &self,
        stream: &str,
        entries: Arc<[Fields]>,
    ) -> Result<Vec<String>, RedisError> {
        self.call(|r| RedisCall::XaddBulk(stream.to_owned(), Arc::clone(&entries), r))
            .await
    }

    /// Creates `group` on `stream` (and the stream); false if it existed.
    pub async fn create_group(&self, stream: &str, group: &str) -> Result<bool, RedisError> {
        self.call(|reply| RedisCall::CreateGroup {
            stream: stream.to_owned(),
            group: group.to_owned(),
            reply,
        })
        .await
    }

    /// New entries for `consumer` of `group` on `streams`.
    pub async fn read_group(
        &self,
        group: &str,
        consumer: &str,
        streams: &[String],
        count: usize,
    ) -> Result<Vec<(String, Vec<StreamEntry>)>, RedisError> {
        self.read_group_from(group, consumer, streams, count, ">")
            .await
    }

    /// Entries for `consumer` from `from`: `>` for new ones, `0` for its own
    /// pending ones (read but never acknowledged before a restart).
    pub async fn read_group_from(
        &self,
        group: &str,
        consumer: &str,
        streams: &[String],
        count: usize,
        from: &str,
    ) -> Result<Vec<(String, Vec<StreamEntry>)>, RedisError> {
        self.call(|reply| RedisCall::ReadGroup {
            group: group.to_owned(),
            consumer: consumer.to_owned(),
            streams: streams.to_vec(),
            count,
            from: from.to_owned(),
            reply,
        })
        .await
    }

    /// `consumer`'s own pending entries on `streams` (read and never
    /// acknowledged, e.g. before a restart), each with its real delivery count.
    pub async fn read_own_pending(
        &self,
        group: &str,
        consumer: &str,
        streams: &[String],
        count: usize,
    ) -> Result<Vec<(String, Vec<Delivered>)>, RedisError> {
        self.call(|reply| RedisCall::ReadOwnPending {
            group: group.to_owned(),
            consumer: consumer.to_owned(),
            streams: streams.to_vec(),
            count,
            reply,
        })
        .await
    }

    /// Every consumer group's progress on `stream`.
    pub async fn group_progress(&self, stream: &str) -> Result<Vec<GroupProgress>, RedisError> {
        self.call(|r| RedisCall::GroupProgress(stream.to_owned(), r))
            .await
    }

    /// The newest entry of `stream`.
    pub async fn last_entry(&self, stream: &str) -> Result<Option<StreamEntry>, RedisError> {
        self.call(|r| RedisCall::LastEntry(stream.to_owned(), r))
            .await
    }

    /// Acknowledges `ids` on `stream` for `group`.
    pub async fn ack(
        &self,
        stream: &str,
        group: &str,
        ids: Vec<String>,
    ) -> Result<u64, RedisError> {
        self.call(|reply| RedisCall::Ack {
            stream: stream.to_owned(),
            group: group.to_owned(),
            ids: ids.clone(),
            reply,
        })
        .await
    }

    /// Takes over entries left pending by other consumers for at least `min_idle`.
    pub async fn autoclaim(
        &self,
        stream: &str,
        group: &str,
        consumer: &str,
        min_idle: Duration,
        start: &str,
        count: usize,
    ) -> Result<Claimed, RedisError> {
        self.call(|reply| RedisCall::AutoClaim {
            stream: stream.to_owned(),
            group: group.to_owned(),
            consumer: consumer.to_owned(),
            min_idle,
            start: start.to_owned(),
            count,
            reply,
        })
        .await
    }

    /// Removes entries of `stream` older than `min_id`.
    pub async fn trim_min_id(&self, stream: &str, min_id: &str) -> Result<u64, RedisError> {
        self.call(|r| RedisCall::TrimMinId(stream.to_owned(), min_id.to_owned(), r))
            .await
    }

    /// Takes the lease `key` for `owner` if it is free.
    pub async fn lease_acquire(
        &self,
        key: &str,
        owner: &str,
        ttl: Duration,
    ) -> Result<bool, RedisError> {
        self.call(|r| RedisCall::LeaseAcquire(key.to_owned(), owner.to_owned(), ttl, r))
            .await
    }

    /// Extends `owner`'s lease `key`.
    pub async fn lease_renew(
        &self,
        key: &str,
        owner: &str,
        ttl: Duration,
    ) -> Result<bool, RedisError> {
        self.call(|r| RedisCall::LeaseRenew(key.to_owned(), owner.to_owned(), ttl, r))
            .await
    }

    /// Gives `owner`'s lease `key` up.
    pub async fn lease_release(&self, key: &str, owner: &str) -> Result<bool, RedisError> {
        self.call(|r| RedisCall::LeaseRelease(key.to_owned(), owner.to_owned(), r))
            .await
    }

    /// One round trip.
    pub async fn ping(&self) -> Result<Duration, RedisError> {
        self.call(RedisCall::Ping).await
    }

    /// Status, pool figures and breaker (no I/O).
    pub async fn health(&self) -> Result<super::Health, NotRunning> {
        super::health::<RedisCall>(&self.registry, &self.name).await
    }
}
