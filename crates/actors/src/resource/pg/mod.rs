//! PgActor: the PostgreSQL resource (bb8 + bb8-postgres + tokio-postgres).

mod config;
mod error;
mod executor;
mod manager;
mod migrate;
pub mod op;
mod tls;

pub use config::{PostgresConfig, SslMode};
pub use error::PgError;
pub use migrate::{migrate, MigrateError, Migration, MIGRATIONS};
pub use op::{FillRow, LiveOrder, NewOrder, OrderUpdate, PgOp, Retained, StoredFills};
pub use tls::connector as tls_connector;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bb8::Pool;
use bb8_postgres::PostgresConnectionManager;
use ractor::{ActorCell, ActorProcessingErr, SpawnErr};
use tokio_util::sync::CancellationToken;

use keel_core::child::StartContext;
use keel_core::delay::BackoffConfig;

use super::{
    Availability, CallStats, Client, ConnectError, PoolStats, Resource, ResourceActor, Unreachable,
};

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
        ResourceActor::spawn(Self::new(config), ctx).await
    }
}

impl Resource for Postgres {
    type Shared = PgShared;

    fn open(
        self,
        availability: Availability,
        stop: CancellationToken,
    ) -> Result<PgShared, ActorProcessingErr> {
        let driver = self.config.driver_config()?;
        let tls = tls::connector(&self.config)?;
        let manager = manager::PgManager(PostgresConnectionManager::new(driver, tls));
        let pool = super::pool::build(
            manager,
            self.config.max_size,
            self.config.checkout_timeout,
            &availability,
            error::permanent_fix,
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

    async fn check(shared: &PgShared) -> Result<(), Unreachable> {
        let mut conn = shared.pool.get().await.map_err(|e| match e {
            bb8::RunError::User(e) => Unreachable::Said(super::describe(&e)),
            bb8::RunError::TimedOut => Unreachable::CheckoutTimedOut,
        })?;
        // A round trip always: the checkout skips it for a connection
        // handed back moments ago.
        match tokio::time::timeout(shared.attempt_limit(), conn.simple_query("")).await {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(e)) => {
                conn.poison();
                Err(Unreachable::Said(super::describe(&e)))
            }
            Err(_) => {
                conn.poison();
                Err(Unreachable::Said(format!(
                    "no answer within {}",
                    humantime::format_duration(shared.attempt_limit())
                )))
            }
        }
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

/// How workers reach PgActor: by name, so restarts are invisible to them. Each
/// operation in `op/` adds its method.
pub type PgClient = Client<PgShared>;
