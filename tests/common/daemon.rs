//! The daemon's tree as the service tests run it: real PostgreSQL and Redis,
//! isolated per test, and an in-process `keel sim` as the exchange.

use std::time::Duration;

use keel::config::{BackfillConfig, Config};
use keel_actors::resource::pg::PostgresConfig;
use keel_actors::resource::redis::RedisConfig;
use keel_actors::service::receiver::ReceiverConfig;
use keel_core::secret::Secret;
use keel_deribit::sim::{self, SimConfig, SimHandle};

use super::db::{TestDb, PG_PORT};
use super::redis::{TestPrefix, REDIS_PORT};

/// The daemon's configuration for one test: its own database and key prefix,
/// the receiver and backfill pointed at `sim` (or at a closed port without one).
///
/// Supervisor, backoff, breaker and timeouts are the defaults an operator runs.
pub fn config(db: &TestDb, prefix: &TestPrefix, sim: Option<&SimHandle>) -> Config {
    Config {
        postgres: PostgresConfig {
            url: db.url(PG_PORT),
            ..PostgresConfig::default()
        },
        redis: RedisConfig {
            url: format!("redis://127.0.0.1:{REDIS_PORT}/0"),
            key_prefix: prefix.prefix.clone(),
            ..RedisConfig::default()
        },
        receiver: ReceiverConfig {
            url: sim.map_or_else(|| "ws://127.0.0.1:9/ws/api/v2".into(), SimHandle::ws_url),
            instruments: vec!["BTC-PERPETUAL".into()],
            heartbeat: Duration::from_secs(1),
            stall_timeout: Duration::from_secs(5),
            ..ReceiverConfig::default()
        },
        backfill: BackfillConfig {
            http_url: sim.map_or_else(|| "http://127.0.0.1:9".into(), SimHandle::http_url),
        },
        ..Config::default()
    }
}

/// A simulator on a free port trading BTC-PERPETUAL at `trades_per_sec`.
pub async fn sim(trades_per_sec: f64) -> SimHandle {
    sim::start(SimConfig {
        listen: "127.0.0.1:0".parse().unwrap(),
        instruments: vec!["BTC-PERPETUAL".into()],
        trades_per_sec,
        client_id: Some("k".into()),
        client_secret: Some(Secret::new("s")),
        min_heartbeat: Duration::from_secs(1),
        ..SimConfig::default()
    })
    .await
    .unwrap()
}
