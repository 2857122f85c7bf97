//! Which children a configuration puts in the tree, and their registry names.

use keel_actors::market::Resolution;
use keel_actors::resource::pg::Postgres;
use keel_actors::resource::redis::Redis;
use keel_actors::service::analyzer::{Analyzer, FoldCandles};
use keel_actors::service::candles::CandleBackfill;
use keel_actors::service::consumer::ConsumerArgs;
use keel_actors::service::distributor::{Distributor, StoreTrades};
use keel_actors::service::gaps::GapRepair;
use keel_actors::service::instruments::InstrumentSync;
use keel_actors::service::janitor::Janitor;
use keel_actors::service::receiver::{Receiver, ReceiverArgs};
use keel_actors::service::scheduler::{Job, Scheduler, SchedulerArgs};
use keel_actors::service::task::RunOnce;
use keel_actors::sim::SimActor;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

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
/// The candle backfill task's registry name.
pub const CANDLE_BACKFILL: &str = "backfill-candles";
/// The instrument sync task's registry name.
pub const INSTRUMENTS: &str = "instruments";
/// The janitor task's registry name.
pub const JANITOR: &str = "janitor";
/// The scheduler's registry name.
pub const SCHEDULER: &str = "scheduler";

/// Every task `keel task` knows, as typed on the command line.
pub const TASKS: &str = "backfill --gaps, backfill --instrument X --from T --to T [--resolution R], instruments, janitor";

const BACKFILL_USAGE: &str = "usage: keel task backfill --gaps | --instrument NAME --from TIME --to TIME [--resolution 1m|5m|1h|1d] (TIME: RFC 3339 or ms since the epoch)";

/// `--instrument X --from T --to T [--resolution R]`.
fn candle_range(args: &[String]) -> Result<(String, SystemTime, SystemTime, Resolution), String> {
    let (mut instrument, mut from, mut to) = (None, None, None);
    let mut resolution = Resolution::minutes(1);
    let mut it = args.iter();
    while let Some(flag) = it.next() {
        let value = it
            .next()
            .ok_or_else(|| format!("{flag} needs a value; {BACKFILL_USAGE}"))?;
        match flag.as_str() {
            "--instrument" => instrument = Some(value.clone()),
            "--from" => from = Some(parse_time(value)?),
            "--to" => to = Some(parse_time(value)?),
            "--resolution" => resolution = Some(Resolution::try_from(value.clone())?),
            other => return Err(format!("unknown flag {other}; {BACKFILL_USAGE}")),
        }
    }
    match (instrument, from, to, resolution) {
        (Some(i), Some(f), Some(t), Some(r)) if f <= t => Ok((i, f, t, r)),
        (Some(_), Some(_), Some(_), Some(_)) => Err("--from must not be after --to".into()),
        _ => Err(BACKFILL_USAGE.into()),
    }
}

fn parse_time(text: &str) -> Result<SystemTime, String> {
    if let Ok(ms) = text.parse::<u64>() {
        return Ok(UNIX_EPOCH + Duration::from_millis(ms));
    }
    humantime::parse_rfc3339_weak(text).map_err(|e| format!("`{text}` is not a time: {e}"))
}

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
        let args = ReceiverArgs::new(config.receiver.clone(), registry.clone(), REDIS, PG);
        children.push(
            ChildSpec::worker(RECEIVER, move |ctx| Receiver::spawn(args.clone(), ctx)).producer(),
        );
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
        children.push(
            ChildSpec::worker(SCHEDULER, move |ctx| Scheduler::spawn(args.clone(), ctx)).producer(),
        );
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
        ("backfill", args) => {
            let (instrument, from, to, resolution) = match candle_range(args) {
                Ok(range) => range,
                Err(why) => return Some(Err(why)),
            };
            let work = CandleBackfill {
                instrument,
                from,
                to,
                resolution,
                registry: registry.clone(),
                pg: PG.into(),
                http_url: config.backfill.http_url.clone(),
            };
            ChildSpec::task(CANDLE_BACKFILL, move |ctx| {
                RunOnce::spawn(work.clone(), ctx)
            })
        }
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

#[cfg(test)]
mod tests {
    use super::*;

    fn args(text: &str) -> Vec<String> {
        text.split_whitespace().map(str::to_owned).collect()
    }

    #[test]
    fn candle_ranges_parse_and_bad_ones_say_why() {
        let (i, f, t, r) = candle_range(&args("--instrument BTC-PERPETUAL --from 2024-01-01T00:00:00Z --to 1704153600000 --resolution 5m")).unwrap();
        assert_eq!(i, "BTC-PERPETUAL");
        assert_eq!(f, UNIX_EPOCH + Duration::from_secs(1_704_067_200));
        assert_eq!(t, UNIX_EPOCH + Duration::from_secs(1_704_153_600));
        assert_eq!(r.as_minutes(), 5);
        for bad in [
            "--instrument X",
            "--instrument X --from soon --to 1",
            "--instrument X --from 5 --to 1",
            "--bogus 1",
        ] {
            assert!(candle_range(&args(bad)).is_err(), "{bad}");
        }
    }
}
