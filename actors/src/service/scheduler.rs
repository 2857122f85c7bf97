//! The scheduler: runs the daemon's run-once tasks (instrument sync, janitor,
//! gap repair) on intervals, each as a task child it supervises itself, never
//! two runs of the same task at once. A run that fails is logged and recorded
//! in the registry and simply runs again at its next interval.

use crate::mailbox::Tell;
use std::sync::Arc;
use std::time::{Duration, Instant};

use ractor::{Actor, ActorCell, ActorProcessingErr, ActorRef, SpawnErr, SupervisionEvent};
use serde::{Deserialize, Serialize};

use crate::child::{spawn_with_probe, ChildFactory, StartContext};
use crate::recorded::Recordable;
use crate::registry::{ActorKind, ActorState, Probe, Registry};

/// A failed run is tried again after this long (or its interval, if shorter).
const RETRY_AFTER_FAILURE: Duration = Duration::from_secs(30);

/// The `[schedule]` section.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScheduleConfig {
    /// Whether `keel run` schedules tasks at all.
    #[serde(default = "yes")]
    pub enabled: bool,
    /// Sync instruments as soon as the daemon starts.
    #[serde(default = "yes")]
    pub instruments_at_boot: bool,
    /// Instrument sync interval.
    #[serde(with = "humantime_serde", default = "hour")]
    pub instruments_every: Duration,
    /// Janitor interval.
    #[serde(with = "humantime_serde", default = "hour")]
    pub janitor_every: Duration,
    /// Gap repair interval.
    #[serde(with = "humantime_serde", default = "five_minutes")]
    pub gap_repair_every: Duration,
    /// How long a running task may take to stop when the daemon shuts down.
    #[serde(with = "humantime_serde", default = "ten_seconds")]
    pub task_shutdown_timeout: Duration,
}

fn yes() -> bool {
    true
}
fn hour() -> Duration {
    Duration::from_secs(3600)
}
fn five_minutes() -> Duration {
    Duration::from_secs(300)
}
fn ten_seconds() -> Duration {
    Duration::from_secs(10)
}

impl Default for ScheduleConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            instruments_at_boot: true,
            instruments_every: hour(),
            janitor_every: hour(),
            gap_repair_every: five_minutes(),
            task_shutdown_timeout: ten_seconds(),
        }
    }
}

/// One scheduled task.
#[derive(Clone)]
pub struct Job {
    /// Registry name of its runs.
    pub name: String,
    /// Time between runs.
    pub every: Duration,
    /// Whether to run it at start too.
    pub at_boot: bool,
    /// Starts one run.
    pub factory: Arc<dyn ChildFactory>,
}

impl std::fmt::Debug for Job {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Job")
            .field("name", &self.name)
            .field("every", &self.every)
            .field("at_boot", &self.at_boot)
            .finish_non_exhaustive()
    }
}

/// What the scheduler is started with.
#[derive(Clone, Debug)]
pub struct SchedulerArgs {
    /// The jobs.
    pub jobs: Vec<Job>,
    /// The tree's registry (its jobs are registered under the scheduler).
    pub registry: Registry,
    /// How long a running job may take to stop at shutdown.
    pub task_shutdown_timeout: Duration,
}

/// Messages the scheduler handles.
#[derive(Debug)]
pub enum SchedulerMsg {
    /// Job `n` is due.
    Due(usize),
    /// Run the named task now, as an operator asked.
    RunNow(String, ractor::RpcReplyPort<Result<(), RunRefused>>),
}

/// Why a run on request was not started.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum RunRefused {
    /// No scheduled task has that name.
    #[error("no task named `{0}`")]
    Unknown(String),
    /// A run of it is in progress.
    #[error("`{0}` is already running")]
    Running(String),
    /// No scheduler runs (or it is restarting).
    #[error("the scheduler is not running")]
    NoScheduler,
}

/// Asks the scheduler registered as `scheduler` to run `task` now.
pub async fn run_now(registry: &Registry, scheduler: &str, task: &str) -> Result<(), RunRefused> {
    let cell = registry.cell(scheduler).ok_or(RunRefused::NoScheduler)?;
    let actor: ActorRef<SchedulerMsg> = cell.into();
    let task = task.to_owned();
    match actor
        .ask(|reply| SchedulerMsg::RunNow(task, reply), None)
        .await
    {
        Ok(ractor::rpc::CallResult::Success(result)) => result,
        _ => Err(RunRefused::NoScheduler),
    }
}

impl Recordable for SchedulerMsg {
    fn kind(&self) -> &'static str {
        match self {
            SchedulerMsg::Due(_) => "Due",
            SchedulerMsg::RunNow(..) => "RunNow",
        }
    }

    fn summary(&self) -> String {
        match self {
            SchedulerMsg::Due(n) => format!("job {n} due"),
            SchedulerMsg::RunNow(name, _) => format!("run `{name}` on request"),
        }
    }
}

struct Slot {
    job: Job,
    probe: Probe,
    running: Option<(ActorCell, Instant)>,
    runs: RunStats,
}

/// Completed runs of one task, shown as its `runs` detail and in `/metrics`.
#[derive(Debug, Default, Serialize)]
struct RunStats {
    succeeded: u64,
    failed: u64,
    total_seconds: f64,
    last_seconds: Option<f64>,
}

impl RunStats {
    fn finished(&mut self, took: Duration, failed: bool) {
        if failed {
            self.failed += 1;
        } else {
            self.succeeded += 1;
        }
        self.total_seconds += took.as_secs_f64();
        self.last_seconds = Some(took.as_secs_f64());
    }
}

/// The scheduler's state.
pub struct SchedulerState {
    slots: Vec<Slot>,
    task_shutdown_timeout: Duration,
}

/// The scheduler actor.
#[derive(Debug, Default)]
pub struct Scheduler;

impl Scheduler {
    /// Spawns the scheduler; use as a child factory.
    pub async fn spawn(args: SchedulerArgs, ctx: StartContext) -> Result<ActorCell, SpawnErr> {
        spawn_with_probe(Scheduler, args, ctx).await
    }
}

impl Actor for Scheduler {
    type Msg = SchedulerMsg;
    type State = SchedulerState;
    type Arguments = (SchedulerArgs, Probe);

    async fn pre_start(
        &self,
        myself: ActorRef<SchedulerMsg>,
        (args, probe): (SchedulerArgs, Probe),
    ) -> Result<SchedulerState, ActorProcessingErr> {
        let mut slots = Vec::new();
        for (n, job) in args.jobs.into_iter().enumerate() {
            // One entry per job, kept across its runs (and across scheduler restarts).
            let job_probe = match args.registry.probe(&job.name) {
                Some(existing) => existing,
                None => args
                    .registry
                    .register(&job.name, ActorKind::Task, Some(probe.name()))?,
            };
            job_probe.set_state(ActorState::Stopped);
            if job.at_boot {
                myself.tell(SchedulerMsg::Due(n))?;
            } else {
                myself.tell_after(job.every, move || SchedulerMsg::Due(n));
            }
            slots.push(Slot {
                job,
                probe: job_probe,
                running: None,
                runs: RunStats::default(),
            });
        }
        Ok(SchedulerState {
            slots,
            task_shutdown_timeout: args.task_shutdown_timeout,
        })
    }

    async fn handle(
        &self,
        myself: ActorRef<SchedulerMsg>,
        message: SchedulerMsg,
        state: &mut SchedulerState,
    ) -> Result<(), ActorProcessingErr> {
        let n = match message {
            SchedulerMsg::Due(n) => {
                if let Some(slot) = state.slots.get(n) {
                    myself.tell_after(slot.job.every, move || SchedulerMsg::Due(n));
                }
                n
            }
            SchedulerMsg::RunNow(name, reply) => {
                let Some(n) = state.slots.iter().position(|s| s.job.name == name) else {
                    let _ = reply.send(Err(RunRefused::Unknown(name)));
                    return Ok(());
                };
                if state.slots[n].running.is_some() {
                    let _ = reply.send(Err(RunRefused::Running(name)));
                    return Ok(());
                }
                let _ = reply.send(Ok(()));
                n
            }
        };
        let Some(slot) = state.slots.get_mut(n) else {
            return Ok(());
        };
        if slot.running.is_some() {
            tracing::info!(task = %slot.job.name, "Previous run still going; skipping this one.");
            return Ok(());
        }
        slot.probe.set_state(ActorState::Starting);
        let ctx = StartContext {
            supervisor: myself.get_cell(),
            probe: slot.probe.clone(),
        };
        match slot.job.factory.start(ctx).await {
            Ok(cell) => {
                slot.probe.set_cell(Some(cell.clone()));
                slot.probe.set_state(ActorState::Running);
                slot.running = Some((cell, Instant::now()));
            }
            Err(error) => {
                slot.probe
                    .record_final_failure(&format!("failed to start: {error}"));
                tracing::error!(task = %slot.job.name, %error, "Scheduled task could not start.");
            }
        }
        Ok(())
    }

    async fn handle_supervisor_evt(
        &self,
        myself: ActorRef<SchedulerMsg>,
        event: SupervisionEvent,
        state: &mut SchedulerState,
    ) -> Result<(), ActorProcessingErr> {
        // Never ractor's default, which would stop the scheduler with its task.
        let (cell, failure) = match event {
            SupervisionEvent::ActorTerminated(cell, _, _) => (cell, None),
            SupervisionEvent::ActorFailed(cell, error) => (cell, Some(error.to_string())),
            _ => return Ok(()),
        };
        let n = state.slots.iter().position(|s| {
            s.running
                .as_ref()
                .is_some_and(|(r, _)| r.get_id() == cell.get_id())
        });
        let Some(slot) = n.and_then(|n| state.slots.get_mut(n)) else {
            return Ok(());
        };
        if let Some((_, started)) = slot.running.take() {
            slot.runs.finished(started.elapsed(), failure.is_some());
            if let Ok(runs) = serde_json::to_value(&slot.runs) {
                slot.probe.set_detail("runs", runs);
            }
        }
        slot.probe.set_cell(None);
        match failure {
            None => slot.probe.set_state(ActorState::Stopped),
            Some(reason) => {
                let retry = slot.job.every.min(RETRY_AFTER_FAILURE);
                tracing::error!(task = %slot.job.name, %reason, retry_in = ?retry, "Scheduled task failed; it runs again soon.");
                slot.probe.record_final_failure(&reason);
                if let Some(n) = n {
                    myself.tell_after(retry, move || SchedulerMsg::Due(n));
                }
            }
        }
        Ok(())
    }

    async fn post_stop(
        &self,
        _myself: ActorRef<SchedulerMsg>,
        state: &mut SchedulerState,
    ) -> Result<(), ActorProcessingErr> {
        for slot in &mut state.slots {
            if let Some((cell, _)) = slot.running.take() {
                // Tasks are resumable, so a kill after the timeout loses nothing.
                if cell
                    .drain_and_wait(Some(state.task_shutdown_timeout))
                    .await
                    .is_err()
                {
                    cell.kill();
                }
                slot.probe.set_state(ActorState::Stopped);
            }
        }
        Ok(())
    }
}
