//! Which children a configuration puts in the tree, and their registry names.

use keel_actors::resource::pg::Postgres;
use keel_actors::resource::redis::Redis;
use keel_actors::service::analyzer::{Analyzer, FoldCandles};
use keel_actors::service::consumer::ConsumerArgs;
use keel_actors::service::distributor::{Distributor, StoreTrades};
use keel_actors::service::gaps::GapRepair;
use keel_actors::service::instruments::InstrumentSync;
use keel_actors::service::janitor::Janitor;
use keel_actors::service::receiver::{Continuity, Receiver, ReceiverArgs};
use keel_actors::service::scheduler::{Job, Scheduler, SchedulerArgs};
use keel_actors::service::task::RunOnce;
use keel_actors::sim::SimActor;

use keel_actors::registry::Registry;

use crate::config::Config;
use crate::supervisor::ChildSpec;

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
/// The gap repair task's registry name.
pub const GAP_REPAIR: &str = "backfill-gaps";
/// The instrument sync task's registry name.
pub const INSTRUMENTS: &str = "instruments";
/// The janitor task's registry name.
pub const JANITOR: &str = "janitor";
/// The scheduler's registry name.
pub const SCHEDULER: &str = "scheduler";

/// Every task `keel task` knows, as typed on the command line.
pub const TASKS: &str = "backfill --gaps, instruments, janitor";

/// Every child `config` asks for, in start order: resources before the services
/// that use them.
pub fn children(config: &Config, registry: &Registry) -> Vec<ChildSpec> {
    let mut children = vec![resources::postgres(config), resources::redis(config)];
    if config.sim.in_daemon {
        let sim = config.sim.clone();
        children.push(ChildSpec::resource(SIM, move |ctx| {
            SimActor::spawn(sim.clone(), ctx)
        }));
    }
    // The distributor starts before the receiver, so a shutdown stops the
    // producer first and the consumer last.
    if config.distributor.enabled {
        let args = ConsumerArgs {
            config: config.distributor.clone(),
            sink: StoreTrades,
            instruments: config.receiver.instruments.clone(),
            registry: registry.clone(),
            redis: REDIS.into(),
            pg: PG.into(),
        };
        children.push(ChildSpec::worker(DISTRIBUTOR, move |ctx| {
            Distributor::spawn(args.clone(), ctx)
        }));
    }
    if config.analyzer.enabled {
        let args = ConsumerArgs {
            config: config.analyzer.clone(),
            sink: FoldCandles {
                resolutions: config.candles.minutes(),
            },
            instruments: config.receiver.instruments.clone(),
            registry: registry.clone(),
            redis: REDIS.into(),
            pg: PG.into(),
        };
        children.push(ChildSpec::worker(ANALYZER, move |ctx| {
            Analyzer::spawn(args.clone(), ctx)
        }));
    }
    if config.receiver.enabled {
        let args = ReceiverArgs {
            config: config.receiver.clone(),
            registry: registry.clone(),
            redis: REDIS.into(),
            pg: PG.into(),
            continuity: Continuity::default(),
        };
        children.push(ChildSpec::worker(RECEIVER, move |ctx| {
            Receiver::spawn(args.clone(), ctx)
        }));
    }
    if config.schedule.enabled {
        let schedule = &config.schedule;
        let jobs: Vec<Job> = [
            (
                "instruments",
                &[][..],
                schedule.instruments_every,
                schedule.instruments_at_boot,
            ),
            ("janitor", &[][..], schedule.janitor_every, false),
            (
                "backfill",
                &["--gaps".to_owned()][..],
                schedule.gap_repair_every,
                false,
            ),
        ]
        .into_iter()
        .filter_map(|(name, args, every, at_boot)| {
            let spec = task(config, registry, name, args)?.ok()?.pop()?;
            Some(Job {
                name: spec.name,
                every,
                at_boot,
                factory: spec.factory,
            })
        })
        .collect();
        let args = SchedulerArgs {
            jobs,
            registry: registry.clone(),
            task_shutdown_timeout: schedule.task_shutdown_timeout,
        };
        children.push(ChildSpec::worker(SCHEDULER, move |ctx| {
            Scheduler::spawn(args.clone(), ctx)
        }));
    }
    children
}

/// The resources plus the one task `name`, for `keel task`; `None` for a task
/// this build does not have.
pub fn task(
    config: &Config,
    registry: &Registry,
    name: &str,
    args: &[String],
) -> Option<Result<Vec<ChildSpec>, String>> {
    let spec = match (name, args) {
        ("backfill", [flag]) if flag == "--gaps" => {
            let work = GapRepair {
                registry: registry.clone(),
                pg: PG.into(),
                http_url: config.backfill.http_url.clone(),
                instruments: config.receiver.instruments.clone(),
                resolutions: config.candles.minutes(),
            };
            ChildSpec::task(GAP_REPAIR, move |ctx| RunOnce::spawn(work.clone(), ctx))
        }
        ("backfill", _) => return Some(Err("usage: keel task backfill --gaps".into())),
        ("instruments", []) => {
            let work = InstrumentSync {
                config: config.instruments.clone(),
                registry: registry.clone(),
                pg: PG.into(),
                http_url: config.backfill.http_url.clone(),
            };
            ChildSpec::task(INSTRUMENTS, move |ctx| RunOnce::spawn(work.clone(), ctx))
        }
        ("janitor", []) => {
            let work = Janitor {
                config: config.janitor.clone(),
                instruments: config.receiver.instruments.clone(),
                registry: registry.clone(),
                pg: PG.into(),
                redis: REDIS.into(),
            };
            ChildSpec::task(JANITOR, move |ctx| RunOnce::spawn(work.clone(), ctx))
        }
        ("instruments" | "janitor", _) => {
            return Some(Err(format!("usage: keel task {name} (no arguments)")))
        }
        _ => return None,
    };
    Some(Ok(vec![
        resources::postgres(config),
        resources::redis(config),
        spec,
    ]))
}

mod resources {
    use super::*;

    pub(super) fn postgres(config: &Config) -> ChildSpec {
        let pg = config.postgres.clone();
        ChildSpec::resource(PG, move |ctx| Postgres::spawn(pg.clone(), ctx))
    }

    pub(super) fn redis(config: &Config) -> ChildSpec {
        let redis = config.redis.clone();
        ChildSpec::resource(REDIS, move |ctx| Redis::spawn(redis.clone(), ctx))
    }
}
