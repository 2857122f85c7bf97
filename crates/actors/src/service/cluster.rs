//! Several Keel instances sharing one Redis: who is there, and who runs each
//! scheduled task's interval.
//!
//! The cluster actor heartbeats this instance into Redis every `renew_every`
//! (its description lives `lease_ttl`) and reads back the others, which task
//! took each interval, and every consumer group's consumers with their pending
//! entries: its `cluster` detail is what `GET /api/cluster` serves. A Redis
//! outage is waited out: the heartbeat fails, is counted, and is tried again
//! at the next beat; the instance's description expires meanwhile, as a dead
//! instance's does. A graceful stop takes the instance out at once.
//!
//! [`TaskSlots`] is the scheduler's gate: interval `n` of a task (ms since the
//! epoch divided by its period) is taken by the first instance that asks
//! (`SET` unless a record of that or a later interval by another instance
//! exists), so one instance of the fleet runs it.

use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use ractor::{Actor, ActorCell, ActorProcessingErr, ActorRef, SpawnErr};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use tokio_util::task::AbortOnDropHandle;

use crate::resource::redis::op::cluster::{Beat, Seen};
use crate::resource::redis::RedisClient;
use crate::service::consumer::consumer_name;
use crate::service::now_ms;
use keel_core::child::{spawn_with_probe, Incarnation, StartContext};
use keel_core::mailbox::Tell;
use keel_core::recorded::Recordable;
use keel_core::scheduler::RunGate;
use keel_core::stats::{Family, Samples, Stats};

/// The `[cluster]` section.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClusterConfig {
    /// Whether this instance coordinates with others through Redis.
    #[serde(default)]
    pub enabled: bool,
    /// This instance's id; empty: `{hostname}-{pid}`.
    #[serde(default)]
    pub instance: String,
    /// How long an instance's heartbeat counts without another one.
    #[serde(with = "humantime_serde", default = "default_lease_ttl")]
    pub lease_ttl: Duration,
    /// How often it heartbeats (well within `lease_ttl`).
    #[serde(with = "humantime_serde", default = "default_renew_every")]
    pub renew_every: Duration,
}

fn default_lease_ttl() -> Duration {
    Duration::from_secs(10)
}

fn default_renew_every() -> Duration {
    Duration::from_secs(3)
}

impl Default for ClusterConfig {
    fn default() -> Self {
        Self {
            enabled: false,
            instance: String::new(),
            lease_ttl: default_lease_ttl(),
            renew_every: default_renew_every(),
        }
    }
}

impl ClusterConfig {
    /// Every problem, as `(key, what is expected)`.
    pub fn problems(&self) -> Vec<(String, String)> {
        use keel_core::bounds::{Check, MINUTE, SECOND};
        let mut check = Check::new();
        check
            .duration("lease_ttl", self.lease_ttl, SECOND, 10 * MINUTE)
            .duration(
                "renew_every",
                self.renew_every,
                Duration::from_millis(100),
                10 * MINUTE,
            );
        if self.renew_every * 2 > self.lease_ttl && self.lease_ttl >= SECOND {
            check.push(
                "renew_every",
                format!(
                    "at most half of lease_ttl ({}), so one lost heartbeat does not end a lease",
                    humantime::format_duration(self.lease_ttl)
                ),
            );
        }
        if self.instance.len() > 200 || self.instance.contains(char::is_whitespace) {
            check.push("instance", "at most 200 characters, no whitespace");
        }
        check.finish()
    }

    /// This instance's id: configured, or `{hostname}-{pid}`.
    pub fn instance_id(&self) -> String {
        consumer_name(&self.instance)
    }
}

/// The scheduler's gate across the fleet: one instance takes each interval.
#[derive(Clone, Debug)]
pub struct TaskSlots {
    redis: RedisClient,
    instance: String,
}

impl TaskSlots {
    /// The gate of `instance`.
    pub fn new(redis: RedisClient, instance: String) -> Self {
        Self { redis, instance }
    }
}

impl RunGate for TaskSlots {
    fn admit(
        &self,
        task: &str,
        every: Duration,
    ) -> futures::future::BoxFuture<'static, Result<Option<String>, String>> {
        let (redis, instance, task) = (self.redis.clone(), self.instance.clone(), task.to_owned());
        Box::pin(async move {
            let period = u64::try_from(every.as_millis()).unwrap_or(u64::MAX).max(1);
            let slot = u64::try_from(now_ms()).unwrap_or(0) / period;
            let ttl = (every * 2).max(Duration::from_secs(1));
            redis
                .take_task_slot(&task, slot, &instance, ttl)
                .await
                .map_err(|e| e.to_string())
        })
    }
}

/// What the cluster actor is started with.
#[derive(Clone, Debug)]
pub struct ClusterArgs {
    /// The `[cluster]` section.
    pub config: ClusterConfig,
    /// RedisActor.
    pub redis: RedisClient,
    /// The scheduled tasks and their intervals, whose holders it reads.
    pub tasks: Vec<(String, Duration)>,
    /// `(stream, group)` pairs whose consumers it reads.
    pub groups: Vec<(String, String)>,
    /// The services this instance runs, as it describes itself.
    pub services: Vec<String>,
    /// The instruments its receiver takes leases for.
    pub receives: Vec<String>,
    /// The instruments its analyzer takes leases for.
    pub analyzes: Vec<String>,
    /// Heartbeats that failed, across incarnations.
    pub failures: Arc<Mutex<Failures>>,
}

impl ClusterArgs {
    /// Arguments for every incarnation.
    pub fn new(config: ClusterConfig, redis: RedisClient) -> Self {
        Self {
            config,
            redis,
            tasks: Vec::new(),
            groups: Vec::new(),
            services: Vec::new(),
            receives: Vec::new(),
            analyzes: Vec::new(),
            failures: Arc::default(),
        }
    }
}

/// Failed heartbeats.
#[derive(Clone, Debug, Default)]
pub struct Failures {
    total: u64,
    last: Option<String>,
}

/// Messages the cluster actor handles.
#[derive(Debug)]
pub enum ClusterMsg {
    /// Time to heartbeat.
    Beat,
}

impl Recordable for ClusterMsg {
    fn kind(&self) -> &'static str {
        "Beat"
    }

    fn summary(&self) -> String {
        "heartbeat".into()
    }
}

/// Keeps this instance in the cluster's member set; restarted by its supervisor.
#[derive(Debug, Default)]
pub struct Cluster;

/// Its running state.
pub struct ClusterState {
    args: ClusterArgs,
    instance: String,
    info: String,
    own: Incarnation,
    timer: Option<AbortOnDropHandle<Result<(), ractor::MessagingErr<ClusterMsg>>>>,
    view: Arc<Mutex<View>>,
    /// The last heartbeat found another process's description under this id.
    duplicate: bool,
    /// Heartbeats written by this incarnation.
    beats: u64,
}

/// What the last heartbeat saw, as `/api/cluster` and `/metrics` show it.
#[derive(Debug, Default)]
struct View {
    json: Value,
    live: u64,
    silent: u64,
    failures: u64,
}

#[derive(Debug)]
struct ViewStats(std::sync::Weak<Mutex<View>>);

const MEMBERS: Family = Family::gauge(
    "keel_cluster_members",
    "Instances in the cluster's member set by state (live: heartbeat within lease_ttl), as the last heartbeat saw them.",
);
const BEAT_FAILURES: Family = Family::counter(
    "keel_cluster_heartbeat_failures_total",
    "Heartbeats that could not be written to Redis.",
);

impl Stats for ViewStats {
    fn show(&self) -> Option<Value> {
        Some(self.0.upgrade()?.lock().json.clone())
    }

    fn export(&self, actor: &str, out: &mut Samples) {
        let Some(view) = self.0.upgrade() else {
            return;
        };
        let view = view.lock();
        for (state, n) in [("live", view.live), ("silent", view.silent)] {
            out.add(&MEMBERS, &[("actor", actor), ("state", state)], n as f64);
        }
        out.add(&BEAT_FAILURES, &[("actor", actor)], view.failures as f64);
    }
}

impl Cluster {
    /// Spawns one incarnation; use as a child factory.
    pub async fn spawn(args: ClusterArgs, ctx: StartContext) -> Result<ActorCell, SpawnErr> {
        spawn_with_probe(Cluster, args, ctx).await
    }
}

impl ClusterState {
    fn arm(&mut self, myself: &ActorRef<ClusterMsg>, after: Duration) {
        let timer = myself.tell_after(after, || ClusterMsg::Beat);
        self.timer = Some(AbortOnDropHandle::new(timer));
    }

    async fn beat(&mut self) {
        let cfg = &self.args.config;
        let now = now_ms();
        let beat = Beat {
            instance: self.instance.clone(),
            info: self.info.clone(),
            ttl: cfg.lease_ttl,
            forget_after: cfg.lease_ttl * 30,
            now_ms: now,
            tasks: self.args.tasks.iter().map(|(t, _)| t.clone()).collect(),
            instruments: self.args.receives.clone(),
            analyzed: self.args.analyzes.clone(),
            groups: self.args.groups.clone(),
        };
        let bound = cfg.renew_every.max(Duration::from_secs(1));
        let outcome = match tokio::time::timeout(bound, self.args.redis.cluster_beat(beat)).await {
            Ok(Ok(seen)) => Ok(seen),
            Ok(Err(e)) => Err(e.to_string()),
            Err(_) => Err(format!("no answer within {bound:?}")),
        };
        if let Ok(seen) = &outcome {
            let gone = gone_consumers(seen, now, cfg.lease_ttl);
            let forget = self.forget(gone);
            if tokio::time::timeout(bound, forget).await.is_err() {
                tracing::debug!("Removing consumers that left took longer than {bound:?}.");
            }
        }
        let mut view = self.view.lock();
        match outcome {
            Ok(seen) => {
                let (mut json, live, silent) =
                    describe(&self.instance, cfg.lease_ttl, now, &self.args.tasks, &seen);
                // Another process heartbeating under this id overwrote our
                // description since our last beat. (At the first beat it may
                // be a predecessor's, restarted under a configured id.)
                let duplicate =
                    self.beats > 0 && seen.previous.as_ref().is_some_and(|p| *p != self.info);
                self.beats += 1;
                if duplicate && !self.duplicate {
                    tracing::error!(instance = %self.instance, "Another process heartbeats under this instance id: give each instance its own [cluster] instance.");
                }
                self.duplicate = duplicate;
                if let Value::Object(map) = &mut json {
                    map.insert("duplicate_id".into(), Value::Bool(duplicate));
                }
                view.json = json;
                view.live = live;
                view.silent = silent;
                self.args.failures.lock().last = None;
            }
            Err(reason) => {
                let mut failures = self.args.failures.lock();
                failures.total += 1;
                if failures.last.is_none() {
                    tracing::warn!(%reason, "Cluster heartbeat failed; this instance drops out of the member set if it keeps failing.");
                }
                failures.last = Some(reason.clone());
                if let Value::Object(map) = &mut view.json {
                    map.insert("heartbeat".into(), json!({ "failing": reason }));
                }
            }
        }
        view.failures = self.args.failures.lock().total;
    }
}

/// Consumers of the groups that left: nothing pending, idle longer than an
/// instance is remembered (30 lease TTLs), and no live member of that name.
/// Without removing them, every restart (a new `{hostname}-{pid}`) would add
/// one for good.
fn gone_consumers(seen: &Seen, now: i64, ttl: Duration) -> Vec<(String, String, String)> {
    let forget_ms = u64::try_from((ttl * 30).as_millis()).unwrap_or(u64::MAX);
    let ttl_ms = i64::try_from(ttl.as_millis()).unwrap_or(i64::MAX);
    let live = |name: &str| {
        seen.members
            .iter()
            .any(|(id, beat, _)| id == name && now.saturating_sub(*beat) <= ttl_ms)
    };
    seen.consumers
        .iter()
        .flat_map(|(stream, group, consumers)| {
            consumers
                .iter()
                .filter(|c| c.pending == 0 && c.idle_ms >= forget_ms && !live(&c.name))
                .map(move |c| (stream.clone(), group.clone(), c.name.clone()))
        })
        .collect()
}

impl ClusterState {
    /// Removes consumers that left (each only while it has nothing pending).
    async fn forget(&self, gone: Vec<(String, String, String)>) {
        for (stream, group, consumer) in gone {
            match self
                .args
                .redis
                .forget_consumer(&stream, &group, &consumer)
                .await
            {
                Ok(()) => {
                    tracing::info!(%consumer, %group, %stream, "Removed a consumer that left the group.")
                }
                Err(error) => {
                    tracing::debug!(%error, %consumer, "Could not remove a consumer that left.")
                }
            }
        }
    }
}

/// The cluster as one heartbeat saw it: `(view, live members, silent members)`.
fn describe(
    instance: &str,
    ttl: Duration,
    now: i64,
    periods: &[(String, Duration)],
    seen: &Seen,
) -> (Value, u64, u64) {
    let ttl_ms = i64::try_from(ttl.as_millis()).unwrap_or(i64::MAX);
    let tasks: Vec<(String, Option<(u64, String)>)> = seen
        .tasks
        .iter()
        .map(|(task, held)| {
            let holder = held.as_deref().and_then(|h| {
                let (slot, who) = h.split_once(':')?;
                Some((slot.parse().ok()?, who.to_owned()))
            });
            (task.clone(), holder)
        })
        .collect();
    let holders = |leases: &[(String, Option<String>)]| -> Vec<(String, Option<(String, u64)>)> {
        leases
            .iter()
            .map(|(instrument, held)| {
                let holder = held.as_deref().and_then(|h| {
                    let (who, token) = h.rsplit_once(':')?;
                    Some((who.to_owned(), token.parse().ok()?))
                });
                (instrument.clone(), holder)
            })
            .collect()
    };
    let receivers = holders(&seen.receivers);
    let analyzers = holders(&seen.analyzers);
    let (mut live, mut silent) = (0, 0);
    let members: Vec<Value> = seen
        .members
        .iter()
        .map(|(id, beat_ms, info)| {
            let age = now.saturating_sub(*beat_ms).max(0);
            let is_live = age <= ttl_ms;
            if is_live {
                live += 1;
            } else {
                silent += 1;
            }
            let of = |kind: &'static str, leases: &'_ [(String, Option<(String, u64)>)]| {
                leases
                    .iter()
                    .filter(|(_, h)| h.as_ref().is_some_and(|(who, _)| who == id))
                    .map(move |(instrument, _)| format!("{kind}:{instrument}"))
                    .collect::<Vec<_>>()
            };
            let held: Vec<String> = of("receiver", &receivers)
                .into_iter()
                .chain(of("analyzer", &analyzers))
                .chain(
                    tasks
                        .iter()
                        .filter(|(_, h)| h.as_ref().is_some_and(|(_, who)| who == id))
                        .map(|(task, _)| format!("task:{task}")),
                )
                .collect();
            json!({
                "id": id,
                "self": id == instance,
                "live": is_live,
                "heartbeat_age_ms": age,
                "about": info.as_deref().and_then(|i| serde_json::from_str::<Value>(i).ok()),
                "leases": held,
            })
        })
        .collect();
    let tasks: Vec<Value> = tasks
        .iter()
        .map(|(task, holder)| {
            let period = periods
                .iter()
                .find(|(t, _)| t == task)
                .map_or(0, |(_, every)| {
                    u64::try_from(every.as_millis()).unwrap_or(0)
                });
            match holder {
                Some((slot, who)) => json!({"task": task, "every_ms": period,
                    "interval_start_ms": slot.saturating_mul(period), "instance": who}),
                None => json!({"task": task, "every_ms": period,
                    "interval_start_ms": null, "instance": null}),
            }
        })
        .collect();
    let rows = |leases: &[(String, Option<(String, u64)>)]| -> Vec<Value> {
        leases
            .iter()
            .map(|(instrument, holder)| match holder {
                Some((who, token)) => {
                    json!({"instrument": instrument, "instance": who, "token": token})
                }
                None => json!({"instrument": instrument, "instance": null, "token": null}),
            })
            .collect()
    };
    let groups: Vec<Value> = seen
        .consumers
        .iter()
        .map(|(stream, group, consumers)| {
            json!({
                "stream": stream,
                "group": group,
                "consumers": consumers.iter().map(|c| json!({
                    "name": c.name, "pending": c.pending, "idle_ms": c.idle_ms,
                })).collect::<Vec<_>>(),
            })
        })
        .collect();
    let view = json!({
        "instance": instance,
        "lease_ttl_ms": ttl_ms,
        "read_at_ms": now,
        "heartbeat": "ok",
        "members": members,
        "receivers": rows(&receivers),
        "analyzers": rows(&analyzers),
        "tasks": tasks,
        "groups": groups,
    });
    (view, live, silent)
}

impl Actor for Cluster {
    type Msg = ClusterMsg;
    type State = ClusterState;
    type Arguments = (ClusterArgs, Incarnation);

    async fn pre_start(
        &self,
        myself: ActorRef<ClusterMsg>,
        (args, own): (ClusterArgs, Incarnation),
    ) -> Result<ClusterState, ActorProcessingErr> {
        let instance = args.config.instance_id();
        let host = std::fs::read_to_string("/etc/hostname")
            .map(|h| h.trim().to_owned())
            .unwrap_or_default();
        let info = json!({
            "host": host,
            "pid": std::process::id(),
            "started_ms": now_ms(),
            "version": env!("CARGO_PKG_VERSION"),
            "services": args.services,
            "receives": args.receives,
            "analyzes": args.analyzes,
        })
        .to_string();
        let view = Arc::new(Mutex::new(View {
            json: json!({"instance": instance, "heartbeat": "not yet", "members": [],
                         "receivers": [], "analyzers": [], "tasks": [], "groups": []}),
            ..View::default()
        }));
        own.probe
            .set_stats("cluster", ViewStats(Arc::downgrade(&view)));
        own.probe.set_detail("instance", instance.clone());
        let mut state = ClusterState {
            args,
            instance,
            info,
            own,
            timer: None,
            view,
            duplicate: false,
            beats: 0,
        };
        state.arm(&myself, Duration::ZERO);
        Ok(state)
    }

    async fn handle(
        &self,
        myself: ActorRef<ClusterMsg>,
        ClusterMsg::Beat: ClusterMsg,
        state: &mut ClusterState,
    ) -> Result<(), ActorProcessingErr> {
        if state.own.stop.is_cancelled() {
            return Ok(());
        }
        state.beat().await;
        let every = state.args.config.renew_every;
        state.arm(&myself, every);
        Ok(())
    }

    async fn post_stop(
        &self,
        _myself: ActorRef<ClusterMsg>,
        state: &mut ClusterState,
    ) -> Result<(), ActorProcessingErr> {
        state.timer = None;
        // Best effort: an instance that cannot say it left ages out.
        let leave = state.args.redis.cluster_leave(&state.instance);
        if let Ok(Err(e)) = tokio::time::timeout(Duration::from_secs(1), leave).await {
            tracing::debug!(error = %e, "Could not take this instance out of the cluster.");
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::resource::redis::op::cluster::ConsumerSeen;

    #[test]
    fn a_heartbeat_slower_than_half_the_lease_or_a_spaced_id_is_refused() {
        assert!(ClusterConfig::default().problems().is_empty());
        let slow = ClusterConfig {
            renew_every: Duration::from_secs(6),
            ..ClusterConfig::default()
        };
        assert_eq!(slow.problems()[0].0, "renew_every");
        let spaced = ClusterConfig {
            instance: "a b".into(),
            ..ClusterConfig::default()
        };
        assert_eq!(spaced.problems()[0].0, "instance");
        let short = ClusterConfig {
            lease_ttl: Duration::from_millis(500),
            renew_every: Duration::from_millis(200),
            ..ClusterConfig::default()
        };
        assert_eq!(short.problems()[0].0, "lease_ttl");
    }

    #[test]
    fn a_consumer_is_forgotten_only_idle_empty_and_without_a_live_member() {
        let ttl = Duration::from_secs(10);
        let old = 300_001;
        let consumer = |name: &str, pending, idle_ms| ConsumerSeen {
            name: name.into(),
            pending,
            idle_ms,
        };
        let seen = Seen {
            members: vec![("live".into(), 99_000, None), ("dead".into(), 1_000, None)],
            consumers: vec![(
                "s".into(),
                "g".into(),
                vec![
                    consumer("dead", 0, old),
                    consumer("dead-holding", 3, old),
                    consumer("recent", 0, 1_000),
                    consumer("live", 0, old),
                ],
            )],
            ..Seen::default()
        };
        let gone = gone_consumers(&seen, 100_000, ttl);
        assert_eq!(gone, [("s".into(), "g".into(), "dead".into())]);
    }

    #[test]
    fn the_view_marks_silent_members_and_names_who_took_each_interval() {
        let seen = Seen {
            previous: None,
            members: vec![
                ("a".into(), 99_000, Some(r#"{"pid":1}"#.into())),
                ("b".into(), 80_000, None),
            ],
            tasks: vec![
                ("janitor".into(), Some("27:b".into())),
                ("instruments".into(), None),
            ],
            receivers: vec![("X".into(), Some("a:7".into())), ("Y".into(), None)],
            analyzers: vec![("X".into(), Some("b:3".into()))],
            consumers: vec![(
                "trades:X".into(),
                "distributor".into(),
                vec![ConsumerSeen {
                    name: "a".into(),
                    pending: 3,
                    idle_ms: 10,
                }],
            )],
        };
        let periods = [("janitor".to_owned(), Duration::from_secs(3600))];
        let (view, live, silent) = describe("a", Duration::from_secs(10), 100_000, &periods, &seen);
        assert_eq!((live, silent), (1, 1));
        assert_eq!(view["members"][0]["self"], true);
        assert_eq!(view["members"][0]["about"]["pid"], 1);
        assert_eq!(view["members"][1]["live"], false);
        assert_eq!(view["members"][1]["heartbeat_age_ms"], 20_000);
        assert_eq!(
            view["members"][1]["leases"],
            json!(["analyzer:X", "task:janitor"])
        );
        assert_eq!(view["tasks"][0]["interval_start_ms"], 27 * 3_600_000);
        assert_eq!(view["tasks"][1]["instance"], Value::Null);
        assert_eq!(view["groups"][0]["consumers"][0]["pending"], 3);
        assert_eq!(view["members"][0]["leases"][0], "receiver:X");
        assert_eq!(view["receivers"][0]["token"], 7);
        assert_eq!(view["receivers"][1]["instance"], Value::Null);
    }
}
