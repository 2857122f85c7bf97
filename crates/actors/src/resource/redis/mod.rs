//! RedisActor: the Redis resource (bb8 + bb8-redis + redis), behind a circuit
//! breaker.
//!
//! No ping before each command: a broken pooled connection is caught by bb8's
//! `test_on_check_out` (one PING per checkout of a connection idle 500 ms or
//! more, see `manager`; one whose call failed for a connection's reason is
//! dropped), and each checkout carries a whole pipelined batch.

pub mod breaker;
mod config;
mod error;
mod manager;
pub mod op;
mod replies;

pub use breaker::{Breaker, BreakerConfig, BreakerSnapshot, BreakerState};
pub use config::{RedisConfig, MAX_READ_BLOCK, RESPONSE_TIMEOUT};
pub use error::RedisError;
pub use op::{Claimed, Delivered, Fields, GroupProgress, RedisOp};
pub use replies::StreamEntry;

use std::sync::Arc;
use std::time::{Duration, Instant};

use bb8::{Pool, RunError};
use bb8_redis::RedisConnectionManager;
use manager::RedisManager;
use parking_lot::Mutex;
use ractor::{ActorCell, ActorProcessingErr, SpawnErr};
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;

use keel_core::child::StartContext;
use keel_core::delay::BackoffConfig;

use super::{
    Availability, CallStats, Client, ConnectError, PoolStats, Resource, ResourceActor, Unreachable,
};
use breaker::{BreakerView, Outcome};

/// Everything a RedisActor call needs.
#[derive(Clone, Debug)]
pub struct RedisShared {
    pool: Pool<RedisManager>,
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

    fn keys(&self, names: &[String]) -> Vec<String> {
        names.iter().map(|name| self.key(name)).collect()
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
    async fn guarded<O: RedisOp>(&self, work: &O) -> Result<O::Output, RedisError> {
        let op = O::NAME;
        let started = Instant::now();
        let result = self.breaker_guarded(work).await;
        let class = result.as_ref().err().map(RedisError::class);
        self.stats.record(op, started.elapsed(), class);
        result
    }

    async fn breaker_guarded<O: RedisOp>(&self, work: &O) -> Result<O::Output, RedisError> {
        let op = O::NAME;
        let admitted = self.breaker.lock().admit(Instant::now());
        let permit = match admitted {
            Ok(permit) => permit,
            Err(rejected) => {
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
        let timed_out = matches!(checkout, Err(RunError::TimedOut));
        let result = match checkout {
            Ok(mut conn) => {
                let result = work
                    .attempt(&mut conn, self)
                    .await
                    .map_err(|e| RedisError::from_driver(op, &e));
                if matches!(result, Err(RedisError::Connection { .. })) {
                    // It may be mid-reply or dead: the pool replaces it.
                    conn.poison();
                }
                result
            }
            Err(RunError::TimedOut) => Err(RedisError::Connection {
                op,
                cause: crate::resource::availability::CHECKOUT_TIMED_OUT.into(),
            }),
            Err(RunError::User(e)) => Err(RedisError::from_driver(op, &e)),
        };
        let outcome = match &result {
            Err(RedisError::Connection { cause, .. }) => {
                self.availability.mark_unreachable(&if timed_out {
                    Unreachable::CheckoutTimedOut
                } else {
                    Unreachable::Said(cause.clone())
                });
                Outcome::Failed
            }
            _ => {
                self.availability.mark_ready();
                Outcome::Answered
            }
        };
        self.breaker.lock().record(Instant::now(), permit, outcome);
        result
    }

    fn publish_breaker(&self) {
        let view = BreakerView(Arc::downgrade(&self.breaker));
        self.availability.probe().set_stats("breaker", view);
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
        ResourceActor::spawn(Self::new(config), ctx).await
    }
}

impl Resource for Redis {
    type Shared = RedisShared;

    fn open(
        self,
        availability: Availability,
        _stop: CancellationToken,
    ) -> Result<RedisShared, ActorProcessingErr> {
        let manager = RedisManager(RedisConnectionManager::new(self.config.connection_info()?)?);
        let pool = super::pool::build(
            manager,
            self.config.max_size,
            self.config.checkout_timeout,
            &availability,
            error::permanent_fix,
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

    async fn check(shared: &RedisShared) -> Result<(), Unreachable> {
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
            op::ping(&mut conn).await
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

/// How workers reach RedisActor: by name, so restarts are invisible to them. Each
/// operation in `op/` adds its method.
pub type RedisClient = Client<RedisShared>;
