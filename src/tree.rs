//! Which children a configuration puts in the tree, and their registry names.

use keel_actors::resource::pg::{PgClient, Postgres};
use keel_actors::resource::redis::{Redis, RedisClient};
use keel_actors::service::analyzer::{Analyzer, FoldCandles};
use keel_actors::service::candles::CandleBackfill;
use keel_actors::service::cluster::{Cluster, ClusterArgs, TaskSlots};
use keel_actors::service::consumer::{ConsumerArgs, ConsumerConfig, TradeSink};
use keel_actors::service::distributor::{Distributor, StoreTrades};
use keel_actors::service::executor::{Executor, ExecutorArgs};
use keel_actors::service::gaps::GapRepair;
use keel_actors::service::instruments::InstrumentSync;
use keel_actors::service::janitor::Janitor;
use keel_actors::service::leases::{Kind, Leases};
use keel_actors::service::receiver::{Receiver, ReceiverArgs};
use keel_actors::service::task::{RunOnce, TaskWork};
use keel_core::scheduler::{Gate, Job, Scheduler, SchedulerArgs};
use keel_deribit::sim::SimActor;
use keel_market::{NotAResolution, Resolution};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use keel_core::registry::Registry;

use crate::config::Config;
use keel_core::supervisor::ChildSpec;

/// PgActor's registry name.
pub const PG: &str = "pg";
/// RedisActor's registry name.
pub const REDIS: &str = "redis";
/// The embedded simulator's registry name.
pub const SIM: &str = "sim";
/// The receiver's registry name.
pub const RECEIVER: &str = "receiver";
/// The distributor's registry name.
pub const DISTRIBUTOR: &str = "distributor";
/// The analyzer's registry name.
pub const ANALYZER: &str = "analyzer";
/// The executor's registry name.
pub const EXECUTOR: &str = "executor";
/// The gap repair task's registry name.
pub const GAP_REPAIR: &str = "backfill-gaps";
/// The candle backfill task's registry name.
pub const CANDLE_BACKFILL: &str = "backfill-candles";
/// The instrument sync task's registry name.
pub const INSTRUMENTS: &str = "instruments";
/// The janitor task's registry name.
pub const JANITOR: &str = "janitor";
/// The scheduler's registry name.
pub const SCHEDULER: &str = "scheduler";
/// The cluster membership actor's registry name.
pub const CLUSTER: &str = "cluster";

/// A run-once task, as `keel task` names it.
#[derive(Clone, Debug, PartialEq, Eq, clap::Subcommand)]
pub enum TaskRequest {
    /// Repair trades (`--gaps`), or fetch the exchange's candles for a range.
    Backfill(BackfillRequest),
    /// Sync instruments from the exchange's listing.
    Instruments,
    /// Delete by age and trim the streams.
    Janitor,
}

/// `keel task backfill`: `--gaps`, or `--instrument X --from T --to T [--resolution R]`.
#[derive(Clone, Debug, PartialEq, Eq, clap::Args)]
pub struct BackfillRequest {
    /// Repair every recorded gap, every hole in the stored sequence and the tail
    /// behind the exchange.
    #[arg(long, conflicts_with_all = ["instrument", "from", "to", "resolution"])]
    pub gaps: bool,
    /// The instrument whose candles to fetch.
    #[arg(long, required_unless_present = "gaps", requires_all = ["from", "to"])]
    pub instrument: Option<String>,
    /// Start (RFC 3339, or ms since the epoch).
    #[arg(long, value_parser = parse_time)]
    pub from: Option<SystemTime>,
    /// End (RFC 3339, or ms since the epoch).
    #[arg(long, value_parser = parse_time)]
    pub to: Option<SystemTime>,
    /// Candle resolution: 1m, 5m, 1h or 1d (default 1m).
    #[arg(long, value_parser = parse_resolution)]
    pub resolution: Option<Resolution>,
}

impl BackfillRequest {
    /// `backfill --gaps`.
    pub fn gaps() -> Self {
        Self {
            gaps: true,
            instrument: None,
            from: None,
            to: None,
            resolution: None,
        }
    }
}

impl TaskRequest {
    /// Parses the words after `keel task` (`["backfill", "--gaps"]`), as the
    /// command line does.
    pub fn parse(words: &[&str]) -> Result<Self, clap::Error> {
        #[derive(clap::Parser)]
        struct Words {
            #[command(subcommand)]
            task: TaskRequest,
        }
        let argv = std::iter::once("task").chain(words.iter().copied());
        <Words as clap::Parser>::try_parse_from(argv).map(|w| w.task)
    }
}

/// A `--from` or `--to` that is neither milliseconds nor an RFC 3339 time.
#[derive(Debug, Clone, thiserror::Error)]
#[error("`{text}` is not a time (milliseconds since the epoch, or RFC 3339): {reason}")]
pub struct NotATime {
    text: String,
    reason: humantime::TimestampError,
}

fn parse_time(text: &str) -> Result<SystemTime, NotATime> {
    if let Ok(ms) = text.parse::<u64>() {
        return Ok(UNIX_EPOCH + Duration::from_millis(ms));
    }
    humantime::parse_rfc3339_weak(text).map_err(|reason| NotATime {
        text: text.to_owned(),
        reason,
    })
}

fn parse_resolution(text: &str) -> Result<Resolution, NotAResolution> {
    Resolution::try_from(text.to_owned())
}

/// The typed clients of a tree's resources, handed to every actor that uses them.
#[derive(Clone, Debug)]
struct Clients {
    pg: PgClient,
    redis: RedisClient,
}

impl Clients {
    fn of(registry: &Registry) -> Self {
        Self {
            pg: PgClient::new(registry.clone(), PG),
            redis: RedisClient::new(registry.clone(), REDIS),
        }
    }
}

/// Every child `config` asks for, in start order: resources before the services
/// that use them.
pub fn children(config: &Config, registry: &Registry) -> Vec<ChildSpec> {
    let clients = Clients::of(registry);
    let mut children = resources(config);
    if config.sim.in_daemon {
        let sim = config.sim.clone();
        children.push(ChildSpec::resource(SIM, move |ctx| {
            SimActor::spawn(sim.clone(), ctx)
        }));
    }
    if config.cluster.enabled {
        let args = cluster_args(config, &clients);
        children.push(ChildSpec::worker(CLUSTER, move |ctx| {
            Cluster::spawn(args.clone(), ctx)
        }));
    }
    // The distributor starts before the receiver, so a shutdown stops the
    // producer first and the consumer last.
    if config.distributor.enabled {
        let args = consumer(config, &config.distributor, StoreTrades, &clients);
        children.push(ChildSpec::worker(DISTRIBUTOR, move |ctx| {
            Distributor::spawn(args.clone(), ctx)
        }));
    }
    if config.analyzer.enabled {
        let mut sink = FoldCandles::new(config.candles.minutes());
        // With several instances, one folds each instrument, under its lease.
        let leases = config
            .cluster
            .enabled
            .then(|| Arc::new(leases(config, Kind::Analyzer)));
        if let Some(leases) = &leases {
            sink = sink.with_leases(Arc::clone(leases));
        }
        let mut args = consumer(config, &config.analyzer, sink, &clients);
        args.leases = leases;
        children.push(ChildSpec::worker(ANALYZER, move |ctx| {
            Analyzer::spawn(args.clone(), ctx)
        }));
    }
    // A producer: a shutdown stops it first, so it cancels its orders while
    // PostgreSQL and Redis still run.
    if config.executor.enabled {
        let mut executor = config.executor.clone();
        if config.cluster.enabled && executor.consumer.is_empty() {
            executor.consumer = config.cluster.instance_id();
        }
        let args = ExecutorArgs::new(executor, clients.redis.clone(), clients.pg.clone());
        children.push(
            ChildSpec::worker(EXECUTOR, move |ctx| Executor::spawn(args.clone(), ctx)).producer(),
        );
    }
    if config.receiver.enabled {
        let Clients { pg, redis } = clients.clone();
        // The consumers this tree runs bound how far ahead of them it publishes.
        let groups = [
            (&config.distributor, StoreTrades::NAME),
            (&config.analyzer, FoldCandles::NAME),
        ]
        .into_iter()
        .filter(|(consumer, _)| consumer.enabled)
        .map(|(consumer, service)| consumer.group_name(service))
        .collect();
        let mut args =
            ReceiverArgs::new(config.receiver.clone(), redis, pg).with_backlog_groups(groups);
        if config.cluster.enabled {
            args = args.with_leases(leases(config, Kind::Receiver));
        }
        children.push(
            ChildSpec::worker(RECEIVER, move |ctx| Receiver::spawn(args.clone(), ctx)).producer(),
        );
    }
    if config.schedule.enabled {
        let schedule = &config.schedule;
        let jobs = [
            (
                TaskRequest::Instruments,
                schedule.instruments_every,
                schedule.instruments_at_boot,
            ),
            (TaskRequest::Janitor, schedule.janitor_every, false),
            (
                TaskRequest::Backfill(BackfillRequest::gaps()),
                schedule.gap_repair_every,
                false,
            ),
        ];
        let jobs = jobs
            .into_iter()
            .filter_map(|(request, every, at_boot)| {
                let spec = task_spec(config, &clients, &request).ok()?;
                let (name, factory) = (spec.name, spec.factory);
                Some(Job {
                    name,
                    every,
                    at_boot,
                    factory,
                })
            })
            .collect();
        // With several instances, one of them runs each interval.
        let gate = config.cluster.enabled.then(|| {
            let slots = TaskSlots::new(clients.redis.clone(), config.cluster.instance_id());
            Gate(Arc::new(slots))
        });
        let args = SchedulerArgs {
            jobs,
            registry: registry.clone(),
            task_shutdown_timeout: schedule.task_shutdown_timeout,
            gate,
        };
        children.push(
            ChildSpec::worker(SCHEDULER, move |ctx| Scheduler::spawn(args.clone(), ctx)).producer(),
        );
    }
    children
}

/// The cluster actor's arguments: the scheduled tasks and the consumer groups
/// it reports on, and the services this instance runs.
fn cluster_args(config: &Config, clients: &Clients) -> ClusterArgs {
    let mut args = ClusterArgs::new(config.cluster.clone(), clients.redis.clone());
    if config.schedule.enabled {
        let schedule = &config.schedule;
        args.tasks = [
            (INSTRUMENTS, schedule.instruments_every),
            (JANITOR, schedule.janitor_every),
            (GAP_REPAIR, schedule.gap_repair_every),
        ]
        .map(|(task, every)| (task.to_owned(), every))
        .to_vec();
    }
    for (consumer, service) in [
        (&config.distributor, StoreTrades::NAME),
        (&config.analyzer, FoldCandles::NAME),
    ] {
        let group = consumer.group_name(service);
        for instrument in &config.receiver.instruments {
            let stream = keel_actors::service::streams::trade_stream(instrument);
            args.groups.push((stream, group.clone()));
        }
    }
    if config.executor.enabled {
        args.groups.push((
            keel_actors::service::executor::intent::INTENTS_STREAM.to_owned(),
            keel_actors::service::executor::GROUP.to_owned(),
        ));
    }
    let services = [
        (config.receiver.enabled, RECEIVER),
        (config.distributor.enabled, DISTRIBUTOR),
        (config.analyzer.enabled, ANALYZER),
        (config.executor.enabled, EXECUTOR),
        (config.schedule.enabled, SCHEDULER),
    ];
    if config.receiver.enabled {
        args.receives = config.receiver.instruments.clone();
    }
    if config.analyzer.enabled {
        args.analyzes = config.receiver.instruments.clone();
    }
    args.services = services
        .into_iter()
        .filter(|(on, _)| *on)
        .map(|(_, name)| name.to_owned())
        .collect();
    args
}

/// What is wrong with a task request's values (the command line checked their
/// form).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RequestError {
    /// A range that ends before it starts.
    #[error("--from must not be after --to")]
    Backwards,
    /// `backfill` without `--gaps` or a complete range.
    #[error("backfill needs --gaps, or --instrument X --from T --to T [--resolution R]")]
    Incomplete,
}

/// The resources plus the one task `request` asks for, for `keel task`.
pub fn task(
    config: &Config,
    registry: &Registry,
    request: &TaskRequest,
) -> Result<Vec<ChildSpec>, RequestError> {
    let spec = task_spec(config, &Clients::of(registry), request)?;
    let mut children = resources(config);
    children.push(spec);
    Ok(children)
}

/// PgActor and RedisActor, in start order.
fn resources(config: &Config) -> Vec<ChildSpec> {
    let (pg, redis) = (config.postgres.clone(), config.redis.clone());
    vec![
        ChildSpec::resource(PG, move |ctx| Postgres::spawn(pg.clone(), ctx)),
        ChildSpec::resource(REDIS, move |ctx| Redis::spawn(redis.clone(), ctx)),
    ]
}

/// A stream consumer's arguments: the distributor's or the analyzer's.
fn consumer<S>(
    config: &Config,
    consumer: &ConsumerConfig,
    sink: S,
    clients: &Clients,
) -> ConsumerArgs<S> {
    let mut consumer = consumer.clone();
    // In a cluster the instance id names this instance's consumers too.
    if config.cluster.enabled && consumer.consumer.is_empty() {
        consumer.consumer = config.cluster.instance_id();
    }
    ConsumerArgs {
        config: consumer,
        sink,
        instruments: config.receiver.instruments.clone(),
        redis: clients.redis.clone(),
        pg: clients.pg.clone(),
        leases: None,
    }
}

/// Cluster mode: `kind`'s leases of this instance on the configured instruments.
fn leases(config: &Config, kind: Kind) -> Leases {
    let cluster = &config.cluster;
    Leases::new(
        kind,
        cluster.instance_id(),
        cluster.lease_ttl,
        cluster.renew_every,
        config.receiver.instruments.clone(),
    )
}

/// A run-once task doing `work`, registered as `name`.
fn run_once<W: TaskWork>(name: &str, work: W) -> ChildSpec {
    ChildSpec::task(name, move |ctx| RunOnce::spawn(work.clone(), ctx))
}

/// The task child itself.
fn task_spec(
    config: &Config,
    clients: &Clients,
    request: &TaskRequest,
) -> Result<ChildSpec, RequestError> {
    let pg = clients.pg.clone();
    let http_url = config.backfill.http_url.clone();
    let ca_file = config.receiver.ca_file.clone();
    Ok(match request {
        TaskRequest::Backfill(BackfillRequest { gaps: true, .. }) => {
            let work = GapRepair {
                pg,
                http_url,
                ca_file,
                instruments: config.receiver.instruments.clone(),
                resolutions: config.candles.minutes(),
            };
            run_once(GAP_REPAIR, work)
        }
        TaskRequest::Backfill(BackfillRequest {
            instrument: Some(instrument),
            from: Some(from),
            to: Some(to),
            resolution,
            ..
        }) => {
            if from > to {
                return Err(RequestError::Backwards);
            }
            let resolution = resolution.unwrap_or(Resolution::ONE_MINUTE);
            let work = CandleBackfill {
                instrument: instrument.clone(),
                from: *from,
                to: *to,
                resolution,
                pg,
                http_url,
                ca_file,
            };
            run_once(CANDLE_BACKFILL, work)
        }
        TaskRequest::Backfill(_) => return Err(RequestError::Incomplete),
        TaskRequest::Instruments => {
            let work = InstrumentSync {
                config: config.instruments.clone(),
                pg,
                http_url,
                ca_file,
            };
            run_once(INSTRUMENTS, work)
        }
        TaskRequest::Janitor => {
            let work = Janitor {
                config: config.janitor.clone(),
                instruments: config.receiver.instruments.clone(),
                pg,
                redis: clients.redis.clone(),
            };
            run_once(JANITOR, work)
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn task_requests_parse_as_the_command_line_writes_them_and_bad_ones_say_why() {
        assert_eq!(
            TaskRequest::parse(&["backfill", "--gaps"]).ok(),
            Some(TaskRequest::Backfill(BackfillRequest::gaps()))
        );
        let words = "backfill --instrument BTC-PERPETUAL --from 2024-01-01T00:00:00Z --to 1704153600000 --resolution 5m";
        let words: Vec<&str> = words.split_whitespace().collect();
        let Ok(TaskRequest::Backfill(b)) = TaskRequest::parse(&words) else {
            panic!("parses");
        };
        assert_eq!(b.instrument.as_deref(), Some("BTC-PERPETUAL"));
        assert_eq!(
            b.from,
            Some(UNIX_EPOCH + Duration::from_secs(1_704_067_200))
        );
        assert_eq!(b.to, Some(UNIX_EPOCH + Duration::from_secs(1_704_153_600)));
        assert_eq!(b.resolution.map(|r| r.as_minutes()), Some(5));
        for (bad, names) in [
            ("backfill --instrument X", "--from"),
            ("backfill --instrument X --from soon --to 1", "soon"),
            ("backfill --bogus 1", "--bogus"),
            ("backfill --gaps --instrument X", "--instrument"),
            ("janitor --gaps", "--gaps"),
            ("defrag", "defrag"),
        ] {
            let words: Vec<&str> = bad.split_whitespace().collect();
            let error = TaskRequest::parse(&words).expect_err(bad);
            assert!(error.to_string().contains(names), "{bad}: {error}");
        }
        let config = Config::default();
        let registry = Registry::default();
        let backwards =
            TaskRequest::parse(&["backfill", "--instrument", "X", "--from", "5", "--to", "1"])
                .unwrap();
        let refused = task(&config, &registry, &backwards).map(|_| ());
        assert_eq!(refused, Err(RequestError::Backwards));
    }
}
