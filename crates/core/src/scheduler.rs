//! The scheduler: runs the daemon's run-once tasks (instrument sync, janitor,
//! gap repair) on intervals, each as a task child it supervises itself, never
//! two runs of the same task at once.
//!
//! Each job has exactly one timer: when it fires the job runs (unless a run is
//! still going) and the timer is armed for the next interval. A run that fails
//! (an error, a panic, or a kill) re-arms that same timer once for the retry
//! delay; the retry's own failure waits for the next interval. Its children
//! live in the same [`ChildSlot`]s the root supervisor uses.
//!
//! With a [`RunGate`] (several instances sharing one Redis), a due run first
//! asks the gate whether this instance takes the interval; one instance of the
//! fleet does, the others count the interval as run elsewhere.
use crate::mailbox::Tell;
use std::sync::Arc;
use std::time::Duration;

use ractor::{Actor, ActorCell, ActorProcessingErr, ActorRef, SpawnErr, SupervisionEvent};
use serde::Serialize;

use tokio_util::sync::CancellationToken;
use tokio_util::task::AbortOnDropHandle;

use crate::child::{
    exit_of, spawn_with_probe, ChildFactory, ChildSlot, Exit, Incarnation, StartContext,
};
use crate::recorded::Recordable;
use crate::registry::{ActorKind, ActorState, Registry};
use crate::stats::{Family, Samples, Stats};

/// A failed run is tried again after this long (or its interval, if shorter).
const RETRY_AFTER_FAILURE: Duration = Duration::from_secs(30);

/// How long the gate may take to answer before the interval is skipped.
const GATE_WAIT: Duration = Duration::from_secs(2);

/// Decides whether a due run happens in this instance, when several share
/// the work: one of them takes each interval.
pub trait RunGate: Send + Sync + 'static {
    /// `Ok(None)`: run here. `Ok(Some(who))`: instance `who` took this
    /// interval. `Err`: the gate cannot tell (its store is unreachable); the
    /// interval is skipped here.
    fn admit(
        &self,
        task: &str,
        every: Duration,
    ) -> futures::future::BoxFuture<'static, Result<Option<String>, String>>;
}

/// A shared [`RunGate`].
#[derive(Clone)]
pub struct Gate(pub Arc<dyn RunGate>);

impl std::fmt::Debug for Gate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Gate")
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
    /// The jobs, each with its own interval.
    pub jobs: Vec<Job>,
    /// The tree's registry (its jobs are registered under the scheduler).
    pub registry: Registry,
    /// How long a running job may take to stop at shutdown.
    pub task_shutdown_timeout: Duration,
    /// Asked before every due run (not a run an operator asks for); `None`:
    /// every due run happens here.
    pub gate: Option<Gate>,
}

/// Messages the scheduler handles.
#[derive(Debug)]
pub enum SchedulerMsg {
    /// Job `n`'s timer fired.
    Due {
        /// The job.
        n: usize,
        /// Which arming of its timer this is; stale ones are ignored.
        armed: u64,
        /// The run is the retry of a failed one.
        retry: bool,
    },
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
            SchedulerMsg::Due { .. } => "Due",
            SchedulerMsg::RunNow(..) => "RunNow",
        }
    }

    fn summary(&self) -> String {
        match self {
            SchedulerMsg::Due { n, retry, .. } => {
                format!("job {n} due{}", if *retry { " (retry)" } else { "" })
            }
            SchedulerMsg::RunNow(name, _) => format!("run `{name}` on request"),
        }
    }
}

struct Slot {
    job: Job,
    child: ChildSlot,
    /// The job's only timer; replaced (never added to) when re-armed.
    timer: Option<AbortOnDropHandle<Result<(), ractor::MessagingErr<SchedulerMsg>>>>,
    /// Which arming is current: a `Due` of an older one is ignored.
    armed: u64,
    /// The running run is a retry (its failure is not retried again).
    retrying: bool,
    runs: RunStats,
}

impl Slot {
    /// (Re)arms the job's one timer to fire after `after`.
    fn arm(&mut self, myself: &ActorRef<SchedulerMsg>, n: usize, after: Duration, retry: bool) {
        self.armed += 1;
        let armed = self.armed;
        let timer = myself.tell_after(after, move || SchedulerMsg::Due { n, armed, retry });
        self.timer = Some(AbortOnDropHandle::new(timer));
    }
}

/// Completed runs of one task, shown as its `runs` detail and in `/metrics`.
#[derive(Clone, Debug, Default, Serialize)]
struct RunStats {
    succeeded: u64,
    failed: u64,
    /// Intervals another instance took.
    elsewhere: u64,
    /// Intervals skipped because the gate could not tell who takes them.
    undecided: u64,
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

const RUNS: Family = Family::counter("keel_task_runs_total", "Completed task runs by outcome.");
const NOT_RUN: Family = Family::counter(
    "keel_task_intervals_not_run_total",
    "Due intervals not run here: another instance took them (elsewhere), or Redis could not say who does (undecided).",
);
const DURATION: Family =
    Family::histogram("keel_task_run_duration_seconds", "Time task runs took.");
const LAST: Family = Family::gauge(
    "keel_task_last_run_duration_seconds",
    "Time the last run of each task took.",
);

impl Stats for RunStats {
    fn show(&self) -> Option<serde_json::Value> {
        serde_json::to_value(self).ok()
    }

    fn export(&self, task: &str, out: &mut Samples) {
        for (outcome, n) in [("succeeded", self.succeeded), ("failed", self.failed)] {
            out.add(&RUNS, &[("task", task), ("outcome", outcome)], n as f64);
        }
        for (reason, n) in [("elsewhere", self.elsewhere), ("undecided", self.undecided)] {
            out.add(&NOT_RUN, &[("task", task), ("reason", reason)], n as f64);
        }
        // Sum and count only: the +Inf bucket holds every run.
        let count = self.succeeded + self.failed;
        out.add_histogram(&DURATION, &[("task", task)], self.total_seconds, count, &[]);
        let last = self.last_seconds.unwrap_or(0.0);
        out.add(&LAST, &[("task", task)], last);
    }
}

/// The scheduler's state.
pub struct SchedulerState {
    slots: Vec<Slot>,
    task_shutdown_timeout: Duration,
    stop: CancellationToken,
    shutdown: CancellationToken,
    skip_drain: CancellationToken,
    gate: Option<Gate>,
}

/// A killed scheduler skips `post_stop`; its runs must not outlive it.
impl Drop for SchedulerState {
    fn drop(&mut self) {
        for slot in &mut self.slots {
            if let Some(live) = slot.child.take() {
                live.kill();
            }
        }
    }
}

/// Starts each job's run-once child when its interval is due, one run at a time.
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
    type Arguments = (SchedulerArgs, Incarnation);

    async fn pre_start(
        &self,
        myself: ActorRef<SchedulerMsg>,
        (args, own): (SchedulerArgs, Incarnation),
    ) -> Result<SchedulerState, ActorProcessingErr> {
        let mut slots = Vec::new();
        for (n, job) in args.jobs.into_iter().enumerate() {
            // One entry per job, kept across its runs (and across scheduler restarts).
            let job_probe = match args.registry.probe(&job.name) {
                Some(existing) => existing,
                None => {
                    args.registry
                        .register(&job.name, ActorKind::Task, Some(own.probe.name()))?
                }
            };
            job_probe.set_state(ActorState::Stopped);
            let mut slot = Slot {
                child: ChildSlot::new(Arc::clone(&job.factory), job_probe),
                timer: None,
                armed: 0,
                retrying: false,
                runs: RunStats::default(),
                job,
            };
            let first = if slot.job.at_boot {
                Duration::ZERO
            } else {
                slot.job.every
            };
            slot.arm(&myself, n, first, false);
            slots.push(slot);
        }
        Ok(SchedulerState {
            slots,
            task_shutdown_timeout: args.task_shutdown_timeout,
            stop: own.stop,
            shutdown: own.shutdown,
            skip_drain: CancellationToken::new(),
            gate: args.gate,
        })
    }

    async fn handle(
        &self,
        myself: ActorRef<SchedulerMsg>,
        message: SchedulerMsg,
        state: &mut SchedulerState,
    ) -> Result<(), ActorProcessingErr> {
        let (n, retry, asked) = match message {
            SchedulerMsg::Due { n, armed, retry } => {
                let Some(slot) = state.slots.get_mut(n) else {
                    return Ok(());
                };
                if slot.armed != armed {
                    return Ok(());
                }
                // The chain goes on whatever this run does.
                let every = slot.job.every;
                slot.arm(&myself, n, every, false);
                (n, retry, false)
            }
            SchedulerMsg::RunNow(name, reply) => {
                let Some(n) = state.slots.iter().position(|s| s.job.name == name) else {
                    let _ = reply.send(Err(RunRefused::Unknown(name)));
                    return Ok(());
                };
                if state.slots[n].child.is_running() {
                    let _ = reply.send(Err(RunRefused::Running(name)));
                    return Ok(());
                }
                let _ = reply.send(Ok(()));
                (n, false, true)
            }
        };
        if state.stop.is_cancelled() {
            return Ok(());
        }
        let Some(slot) = state.slots.get_mut(n) else {
            return Ok(());
        };
        if slot.child.is_running() {
            tracing::info!(task = %slot.job.name, "Previous run still going; skipping this one.");
            return Ok(());
        }
        // An operator's request runs here, whoever took the interval.
        if let (Some(gate), false) = (&state.gate, asked) {
            let admitted =
                tokio::time::timeout(GATE_WAIT, gate.0.admit(&slot.job.name, slot.job.every)).await;
            match &admitted {
                Ok(Ok(None)) => {}
                Ok(Ok(Some(who))) => {
                    slot.runs.elsewhere += 1;
                    tracing::debug!(task = %slot.job.name, instance = %who, "This interval runs elsewhere.");
                }
                Ok(Err(reason)) => {
                    slot.runs.undecided += 1;
                    tracing::warn!(task = %slot.job.name, %reason, "Cannot tell which instance runs this interval; skipped here.");
                }
                Err(_) => {
                    slot.runs.undecided += 1;
                    tracing::warn!(task = %slot.job.name, wait = ?GATE_WAIT, "No answer on which instance runs this interval; skipped here.");
                }
            }
            if !matches!(admitted, Ok(Ok(None))) {
                slot.child.probe().set_stats("runs", slot.runs.clone());
                return Ok(());
            }
        }
        slot.retrying = retry;
        if let Err(error) = slot
            .child
            .start(myself.get_cell(), &state.stop, &state.shutdown)
            .await
        {
            slot.child
                .probe()
                .record_final_failure(&format!("failed to start: {error}"));
            tracing::error!(task = %slot.job.name, %error, "Scheduled task could not start.");
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
        let Some((cell, exit)) = exit_of(&event) else {
            return Ok(());
        };
        let Some(n) = state.slots.iter().position(|s| s.child.owns(&cell)) else {
            return Ok(());
        };
        let slot = &mut state.slots[n];
        let took = slot.child.ended().unwrap_or_default();
        slot.runs.finished(took, exit.is_failure());
        slot.child.probe().set_stats("runs", slot.runs.clone());
        match exit {
            Exit::Normal => slot.child.probe().set_state(ActorState::Stopped),
            Exit::Failed { reason, .. } => {
                slot.child.probe().record_final_failure(&reason);
                if slot.retrying || state.stop.is_cancelled() {
                    tracing::warn!(task = %slot.job.name, %reason, "Scheduled task failed again; it runs at its next interval.");
                } else {
                    let retry = slot.job.every.min(RETRY_AFTER_FAILURE);
                    tracing::warn!(task = %slot.job.name, %reason, retry_in = ?retry, "Scheduled task failed; retrying once.");
                    slot.arm(&myself, n, retry, true);
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
        state.stop.cancel();
        for slot in &mut state.slots {
            slot.timer = None;
            if let Some(live) = slot.child.take() {
                // Tasks are resumable, so a kill after the timeout loses nothing.
                live.stop(state.task_shutdown_timeout, None, &state.skip_drain)
                    .await;
                slot.child.probe().set_state(ActorState::Stopped);
            }
        }
        Ok(())
    }
}
