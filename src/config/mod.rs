//! Keel's configuration: one TOML file, overridden by `KEEL__SECTION__KEY`
//! environment variables, with secrets from `*_file` keys, validated as a whole
//! before anything starts.

mod admin;
mod env;
mod error;
mod load;
mod schedule;
mod secret_files;

pub use admin::AdminConfig;
pub use error::{ConfigError, Problem};
pub use load::DEFAULT_PATH;
pub use schedule::ScheduleConfig;

use serde::{Deserialize, Serialize};

use keel_actors::resource::pg::PostgresConfig;
use keel_actors::resource::redis::RedisConfig;
use keel_actors::service::analyzer::CandlesConfig;
use keel_actors::service::cluster::ClusterConfig;
use keel_actors::service::consumer::ConsumerConfig;
use keel_actors::service::executor::ExecutorConfig;
use keel_actors::service::instruments::InstrumentsConfig;
use keel_actors::service::janitor::JanitorConfig;
use keel_actors::service::receiver::ReceiverConfig;
use keel_deribit::sim::SimConfig;

use keel_core::supervisor::SupervisorConfig;

/// The whole configuration. Every section has defaults, so an empty file is valid.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Restart and shutdown policy of the root supervisor.
    #[serde(default)]
    pub supervisor: SupervisorConfig,
    /// What the registry keeps about each actor.
    #[serde(default)]
    pub registry: RegistryConfig,
    /// PgActor: the PostgreSQL pool.
    #[serde(default)]
    pub postgres: PostgresConfig,
    /// RedisActor: the Redis pool and its circuit breaker.
    #[serde(default)]
    pub redis: RedisConfig,
    /// `keel sim`, the local exchange.
    #[serde(default)]
    pub sim: SimConfig,
    /// The receiver: exchange WebSocket to Redis.
    #[serde(default)]
    pub receiver: ReceiverConfig,
    /// The distributor: Redis to PostgreSQL.
    #[serde(default)]
    pub distributor: ConsumerConfig,
    /// The analyzer: Redis to candles.
    #[serde(default)]
    pub analyzer: ConsumerConfig,
    /// Which candles are maintained.
    #[serde(default)]
    pub candles: CandlesConfig,
    /// The executor: intents to orders on the exchange (off unless enabled).
    #[serde(default)]
    pub executor: ExecutorConfig,
    /// History repair.
    #[serde(default)]
    pub backfill: BackfillConfig,
    /// Instrument sync.
    #[serde(default)]
    pub instruments: InstrumentsConfig,
    /// Retention.
    #[serde(default)]
    pub janitor: JanitorConfig,
    /// When `keel run` runs the tasks.
    #[serde(default)]
    pub schedule: ScheduleConfig,
    /// Several instances sharing one Redis.
    #[serde(default)]
    pub cluster: ClusterConfig,
    /// `[admin]`: the HTTP endpoint operators and `keel ctl` use.
    #[serde(default)]
    pub admin: AdminConfig,
    /// Logging limits.
    #[serde(default)]
    pub log: LogConfig,
}

/// The `[log]` section.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LogConfig {
    /// Lines each warning site that outside input can repeat (malformed frames,
    /// rejected trades, dead letters, refused requests) may log per minute; the
    /// next line says how many were suppressed.
    #[serde(default = "default_repeats_per_minute")]
    pub repeats_per_minute: u32,
}

fn default_repeats_per_minute() -> u32 {
    keel_core::logs::DEFAULT_REPEATS_PER_MINUTE
}

impl Default for LogConfig {
    fn default() -> Self {
        Self {
            repeats_per_minute: default_repeats_per_minute(),
        }
    }
}

impl LogConfig {
    fn problems(&self) -> Vec<(String, String)> {
        keel_core::bounds::Check::new()
            .count(
                "repeats_per_minute",
                self.repeats_per_minute.into(),
                1,
                10_000,
            )
            .finish()
    }
}

/// The `[backfill]` section.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BackfillConfig {
    /// The exchange's HTTP base URL (`https://www.deribit.com` in production).
    #[serde(default = "default_http_url")]
    pub http_url: String,
}

fn default_http_url() -> String {
    "http://127.0.0.1:8765".into()
}

impl BackfillConfig {
    fn problems(&self) -> Vec<(String, String)> {
        keel_core::bounds::Check::new()
            .url("http_url", &self.http_url, &["http", "https"])
            .finish()
    }
}

impl Default for BackfillConfig {
    fn default() -> Self {
        Self {
            http_url: default_http_url(),
        }
    }
}

/// The `[registry]` section.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RegistryConfig {
    /// How many recent messages each actor keeps for inspection (0: count only).
    #[serde(default = "default_message_ring")]
    pub message_ring: usize,
    /// Whether actors count handled messages and mailbox depths and keep the ring.
    /// On in production; `false` exists to measure what inspection costs.
    #[serde(default = "default_record_messages")]
    pub record_messages: bool,
}

fn default_record_messages() -> bool {
    true
}

fn default_message_ring() -> usize {
    keel_core::registry::DEFAULT_RING_CAPACITY
}

impl RegistryConfig {
    fn problems(&self) -> Vec<(String, String)> {
        keel_core::bounds::Check::new()
            .count("message_ring", self.message_ring as u64, 0, 100_000)
            .finish()
    }
}

impl Default for RegistryConfig {
    fn default() -> Self {
        Self {
            message_ring: default_message_ring(),
            record_messages: default_record_messages(),
        }
    }
}

impl Config {
    /// Every semantic problem in the configuration, with full keys.
    fn problems(&self) -> Vec<(String, String)> {
        let sections = [
            ("supervisor", self.supervisor.problems()),
            ("postgres", self.postgres.problems()),
            ("redis", self.redis.problems()),
            ("sim", self.sim.problems()),
            ("receiver", self.receiver.problems()),
            ("distributor", self.distributor.problems()),
            ("analyzer", self.analyzer.problems()),
            ("executor", self.executor.problems()),
            ("admin", self.admin.problems()),
            ("registry", self.registry.problems()),
            ("candles", self.candles.problems()),
            ("backfill", self.backfill.problems()),
            ("instruments", self.instruments.problems()),
            ("janitor", self.janitor.problems()),
            ("schedule", self.schedule.problems()),
            ("cluster", self.cluster.problems()),
            ("log", self.log.problems()),
        ];
        let mut problems: Vec<(String, String)> = sections
            .into_iter()
            .flat_map(|(section, problems)| {
                problems
                    .into_iter()
                    .map(move |(key, expected)| (format!("{section}.{key}"), expected))
            })
            .collect();
        // The stream's trimming must never reach what a group has not read.
        if self.receiver.max_backlog >= self.redis.stream_maxlen {
            problems.push((
                "receiver.max_backlog".into(),
                format!(
                    "less than redis.stream_maxlen ({}), so trimming never removes unread entries",
                    self.redis.stream_maxlen
                ),
            ));
        }
        problems
    }

    /// The configuration as TOML, secrets redacted (what `keel check` prints).
    pub fn to_redacted_toml(&self) -> Result<String, toml::ser::Error> {
        toml::to_string_pretty(self)
    }
}
