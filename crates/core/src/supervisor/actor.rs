//! The supervisor actor: ordered start, restarts by strategy and intensity, and
//! a shutdown in stages under one deadline.

use crate::mailbox::Tell;
use std::time::{Duration, Instant};

use crate::child::{exit_of, ChildSlot, Live};
use crate::delay::Backoff;
use crate::recorded::Recordable;
use crate::registry::{ActorState, Probe, Registry};
use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort, SupervisionEvent};
use serde::Serialize;
use tokio::sync::{broadcast, watch};
use tokio_util::sync::CancellationToken;
use tokio_util::task::AbortOnDropHandle;

use super::intensity::IntensityWindow;
use super::policy::{self, Decision, Exit};
use super::{
    ChildSpec, Restart, ShutdownReport, Stage, StopOutcome, StoppedChild, SupervisorConfig,
};

/// Messages the supervisor handles (besides ractor's supervision events).
#[derive(Debug)]
pub enum SupervisorMsg {
    /// Start every child in specification order; replies once all were tried.
    StartChildren(RpcReplyPort<()>),
    /// A restart delay has passed: start these slots (in order).
    RestartDue(Vec<usize>),
    /// Drain the whole tree in order and stop; replies with the report.
    Shutdown(RpcReplyPort<ShutdownReport>),
    /// Restart one child now (drained, then started again); replies how it went.
    RestartChild(String, RpcReplyPort<Result<(), RestartRefused>>),
    /// Answers at once: proof that the supervisor's loop takes messages (what a
    /// service manager's watchdog asks). The answer is whether the tree runs
    /// (`false` once it shuts down or gave up).
    Ping(RpcReplyPort<bool>),
}

/// Why a restart on request was not done.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum RestartRefused {
    /// No child has that name.
    #[error("no child named `{0}`")]
    Unknown(String),
    /// The tree is shutting down.
    #[error("the tree is shutting down")]
    ShuttingDown,
}

impl Recordable for SupervisorMsg {
    fn kind(&self) -> &'static str {
        match self {
            SupervisorMsg::StartChildren(_) => "StartChildren",
            SupervisorMsg::RestartDue(_) => "RestartDue",
            SupervisorMsg::Shutdown(_) => "Shutdown",
            SupervisorMsg::RestartChild(..) => "RestartChild",
            SupervisorMsg::Ping(_) => "Ping",
        }
    }

    fn summary(&self) -> String {
        match self {
            SupervisorMsg::StartChildren(_) => "start every child in order".into(),
            SupervisorMsg::RestartDue(slots) => format!("restart children at {slots:?}"),
            SupervisorMsg::Shutdown(_) => "drain the tree and stop".into(),
            SupervisorMsg::RestartChild(name, _) => format!("restart `{name}` on request"),
            SupervisorMsg::Ping(_) => "is the loop alive (the watchdog asks)".into(),
        }
    }
}

/// How a whole tree ended.
#[derive(Clone, Debug, Serialize)]
#[serde(rename_all = "snake_case", tag = "exit")]
pub enum TreeExit {
    /// Shut down on request (a signal, the handle, the admin endpoint).
    ShutDown {
        /// What the shutdown did.
        report: ShutdownReport,
    },
    /// The supervisor gave up (restart intensity exceeded, a permanent child that
    /// cannot run, or a bug in the supervisor itself) and shut the tree down.
    GaveUp {
        /// Why it gave up.
        reason: String,
        /// What the shutdown did.
        report: ShutdownReport,
    },
}

impl TreeExit {
    /// The shutdown that ended the tree.
    pub fn report(&self) -> &ShutdownReport {
        match self {
            TreeExit::ShutDown { report } | TreeExit::GaveUp { report, .. } => report,
        }
    }
}

/// A child ended; published to [`crate::RuntimeHandle::subscribe`] listeners.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ChildEvent {
    /// The child's name.
    pub name: String,
    /// `None` for a normal exit, else the failure's reason.
    pub failure: Option<String>,
    /// Whether the supervisor will start it again.
    pub restarting: bool,
}

/// What the supervisor is started with.
pub struct SupervisorArgs {
    /// Strategy, intensity, restart delays and drain deadlines.
    pub config: SupervisorConfig,
    /// The children, in start order.
    pub children: Vec<ChildSpec>,
    /// Where the tree reports.
    pub registry: Registry,
    /// The supervisor's own registry entry.
    pub probe: Probe,
    /// Cancelled when the drain is to be skipped (a second signal).
    pub skip_drain: CancellationToken,
    /// Cancelled when the shutdown begins (a request, or giving up); every
    /// child's stop token is a child of it.
    pub shutdown: CancellationToken,
    /// Set once, when the tree has ended.
    pub exit: watch::Sender<Option<TreeExit>>,
    /// Every child's end, for [`ChildEvent`] listeners.
    pub events: broadcast::Sender<ChildEvent>,
}

/// The root supervisor.
pub struct Supervisor;

/// Where a child that does not run stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Waiting {
    /// To be started (at boot, or by a restart due now).
    Idle,
    /// A restart timer is armed for it.
    Scheduled,
    /// Ended for good.
    Done,
}

struct Slot {
    spec: ChildSpec,
    child: ChildSlot,
    /// Meaningful while the child does not run.
    waiting: Waiting,
    backoff: Backoff,
}

impl Slot {
    fn is(&self, waiting: Waiting) -> bool {
        !self.child.is_running() && self.waiting == waiting
    }
}

type Timer = AbortOnDropHandle<Result<(), ractor::MessagingErr<SupervisorMsg>>>;

/// The supervisor's state between messages (opaque outside the crate).
pub struct SupervisorState {
    config: SupervisorConfig,
    slots: Vec<Slot>,
    intensity: IntensityWindow,
    shutting_down: bool,
    probe: Probe,
    skip_drain: CancellationToken,
    shutdown: CancellationToken,
    /// Restart timers, aborted with the supervisor.
    timers: Vec<Timer>,
    exit: watch::Sender<Option<TreeExit>>,
    events: broadcast::Sender<ChildEvent>,
}

impl Actor for Supervisor {
    type Msg = SupervisorMsg;
    type State = SupervisorState;
    type Arguments = SupervisorArgs;

    async fn pre_start(
        &self,
        _myself: ActorRef<Self::Msg>,
        args: SupervisorArgs,
    ) -> Result<SupervisorState, ActorProcessingErr> {
        let parent = args.probe.name().to_owned();
        let mut slots = Vec::with_capacity(args.children.len());
        for spec in args.children {
            let probe = args
                .registry
                .register(&spec.name, spec.kind, Some(&parent))?;
            slots.push(Slot {
                backoff: args.config.backoff.sequence(),
                child: ChildSlot::new(std::sync::Arc::clone(&spec.factory), probe),
                spec,
                waiting: Waiting::Idle,
            });
        }
        Ok(SupervisorState {
            intensity: IntensityWindow::new(args.config.max_restarts, args.config.period),
            config: args.config,
            slots,
            shutting_down: false,
            probe: args.probe,
            skip_drain: args.skip_drain,
            shutdown: args.shutdown,
            timers: Vec::new(),
            exit: args.exit,
            events: args.events,
        })
    }

    async fn handle(
        &self,
        myself: ActorRef<Self::Msg>,
        message: SupervisorMsg,
        state: &mut SupervisorState,
    ) -> Result<(), ActorProcessingErr> {
        match message {
            SupervisorMsg::StartChildren(reply) => {
                let all: Vec<usize> = (0..state.slots.len()).collect();
                state.start_pending(&myself, &all).await;
                if !state.shutting_down {
                    state.probe.set_state(ActorState::Running);
                }
                // The caller may have stopped waiting; the tree runs regardless.
                let _ = reply.send(());
            }
            SupervisorMsg::RestartDue(slots) => {
                for &i in &slots {
                    if state.slots[i].is(Waiting::Scheduled) {
                        state.slots[i].waiting = Waiting::Idle;
                    }
                }
                state.start_pending(&myself, &slots).await;
            }
            SupervisorMsg::RestartChild(name, reply) => {
                let result = state.restart_on_request(&myself, &name).await;
                let _ = reply.send(result);
            }
            SupervisorMsg::Ping(reply) => {
                let _ = reply.send(!state.shutting_down);
            }
            SupervisorMsg::Shutdown(reply) => {
                let report = state.shutdown_children().await;
                state.probe.set_state(ActorState::Stopped);
                state.exit.send_replace(Some(TreeExit::ShutDown {
                    report: report.clone(),
                }));
                let _ = reply.send(report);
                myself.stop(Some("shut down".into()));
            }
        }
        Ok(())
    }

    async fn handle_supervisor_evt(
        &self,
        myself: ActorRef<Self::Msg>,
        event: SupervisionEvent,
        state: &mut SupervisorState,
    ) -> Result<(), ActorProcessingErr> {
        // Never fall back to ractor's default here: it stops the supervisor
        // whenever any child ends.
        let Some((cell, exit)) = exit_of(&event) else {
            return Ok(());
        };
        // Children the supervisor stopped itself were already taken out of their
        // slot, so their events (and stale ones) match nothing and are ignored.
        if let Some(i) = state.slots.iter().position(|s| s.child.owns(&cell)) {
            state.on_exit(&myself, i, exit).await;
        }
        Ok(())
    }
}

impl SupervisorState {
    fn timeout_of(&self, i: usize) -> Duration {
        self.slots[i]
            .spec
            .shutdown_timeout
            .unwrap_or(self.config.shutdown_timeout)
    }

    /// Starts, in the given order, every listed slot that is waiting without a
    /// timer; a slot that fails to start goes through the normal failure path.
    async fn start_pending(&mut self, myself: &ActorRef<SupervisorMsg>, order: &[usize]) {
        for &i in order {
            if self.shutting_down {
                return;
            }
            if !self.slots[i].is(Waiting::Idle) {
                continue;
            }
            let slot = &mut self.slots[i];
            match slot
                .child
                .start(myself.get_cell(), &self.shutdown, &self.shutdown)
                .await
            {
                Ok(()) => {
                    tracing::info!(child = %slot.spec.name, kind = ?slot.spec.kind, "Child started.");
                }
                Err(err) => {
                    let exit = Exit::Failed {
                        reason: format!("failed to start: {err}"),
                        unrecoverable: false,
                        outage: false,
                    };
                    self.on_exit(myself, i, exit).await;
                }
            }
        }
    }

    /// Decides what happens after child `i` ended, and does it.
    async fn on_exit(&mut self, myself: &ActorRef<SupervisorMsg>, i: usize, exit: Exit) {
        let ran_for = self.slots[i].child.ended();
        self.slots[i].waiting = Waiting::Done;
        if self.shutting_down {
            return;
        }
        let slot = &self.slots[i];
        let name = slot.spec.name.clone();
        let probe = slot.child.probe().clone();
        let reason = match &exit {
            Exit::Normal => "exited normally".to_owned(),
            Exit::Failed { reason, .. } => reason.clone(),
        };
        let decision = policy::decide(slot.spec.restart, &exit);
        let _ = self.events.send(ChildEvent {
            name: name.clone(),
            failure: exit.is_failure().then(|| reason.clone()),
            restarting: decision == Decision::Restart,
        });
        match decision {
            Decision::Leave => match exit {
                Exit::Normal => {
                    probe.set_state(ActorState::Stopped);
                    tracing::info!(child = %name, "Child finished; not restarted.");
                }
                Exit::Failed { .. } => {
                    probe.record_final_failure(&reason);
                    tracing::error!(child = %name, %reason, "Child failed; not restarted.");
                }
            },
            Decision::GiveUp => {
                probe.record_final_failure(&reason);
                let why = format!("permanent child `{name}` cannot run: {reason}");
                self.give_up(myself, why).await;
            }
            Decision::Restart => {
                // An outage (the exchange went away) is restarted with backoff
                // but is not the child's own failure: it spends no intensity.
                let outage = matches!(exit, Exit::Failed { outage: true, .. });
                if !outage && self.intensity.record(Instant::now()) {
                    probe.record_final_failure(&reason);
                    let why = format!(
                        "more than {} restarts within {}; last: `{name}`: {reason}",
                        self.config.max_restarts,
                        humantime::format_duration(self.config.period),
                    );
                    self.give_up(myself, why).await;
                    return;
                }
                self.schedule_restart(myself, i, &reason, ran_for).await;
            }
        }
    }

    /// Stops the siblings the strategy restarts with child `i` and arms one timer
    /// that starts them all again in order.
    async fn schedule_restart(
        &mut self,
        myself: &ActorRef<SupervisorMsg>,
        i: usize,
        reason: &str,
        ran_for: Option<Duration>,
    ) {
        let stable_after = self.config.stable_after;
        let slot = &mut self.slots[i];
        if ran_for.is_some_and(|ran| ran >= stable_after) {
            slot.backoff.reset();
        }
        let delay = slot.backoff.next_delay();
        slot.child.probe().record_restart(reason);
        slot.waiting = Waiting::Scheduled;
        tracing::warn!(
            child = %slot.spec.name, %reason, delay = %humantime::format_duration(delay),
            "Child failed; restarting after delay."
        );

        let scope = policy::scope(self.config.strategy, i, self.slots.len());
        for j in scope.clone().rev().filter(|&j| j != i) {
            let timeout = self.timeout_of(j);
            let sibling = &mut self.slots[j];
            if sibling.is(Waiting::Done) {
                continue;
            }
            if let Some(live) = sibling.child.take() {
                sibling.child.probe().set_state(ActorState::Draining);
                live.stop(timeout, None, &self.skip_drain).await;
            }
            if sibling.spec.restart == Restart::Temporary {
                sibling.waiting = Waiting::Done;
                sibling.child.probe().set_state(ActorState::Stopped);
            } else {
                sibling.child.probe().record_sibling_restart();
                sibling.waiting = Waiting::Scheduled;
            }
        }
        let due: Vec<usize> = scope
            .filter(|&j| self.slots[j].is(Waiting::Scheduled))
            .collect();
        self.timers.retain(|t| !t.is_finished());
        let timer = myself.tell_after(delay, move || SupervisorMsg::RestartDue(due));
        self.timers.push(AbortOnDropHandle::new(timer));
    }

    /// Drains child `name` and starts it again at once, as an operator asked.
    /// Not counted against the restart intensity: nothing failed.
    async fn restart_on_request(
        &mut self,
        myself: &ActorRef<SupervisorMsg>,
        name: &str,
    ) -> Result<(), RestartRefused> {
        if self.shutting_down {
            return Err(RestartRefused::ShuttingDown);
        }
        let i = self
            .slots
            .iter()
            .position(|s| s.spec.name == name)
            .ok_or_else(|| RestartRefused::Unknown(name.to_owned()))?;
        let timeout = self.timeout_of(i);
        let slot = &mut self.slots[i];
        if let Some(live) = slot.child.take() {
            slot.child.probe().set_state(ActorState::Draining);
            live.stop(timeout, None, &self.skip_drain).await;
        }
        slot.waiting = Waiting::Idle;
        slot.child.probe().record_restart("restarted on request");
        tracing::info!(child = %name, "Restarting child on request.");
        self.start_pending(myself, &[i]).await;
        Ok(())
    }

    async fn give_up(&mut self, myself: &ActorRef<SupervisorMsg>, reason: String) {
        tracing::error!(%reason, "Supervisor gives up; shutting the tree down.");
        let report = self.shutdown_children().await;
        self.probe.record_final_failure(&reason);
        self.exit.send_replace(Some(TreeExit::GaveUp {
            reason: reason.clone(),
            report,
        }));
        myself.stop(Some(reason));
    }

    /// Stops every child in stages under one deadline: producers, then
    /// consumers, then resources; the children of a stage concurrently, each
    /// within its own timeout and the deadline. Every child's stop token fires
    /// at once, so nothing waits for an absent resource or retries any more.
    /// No restarts happen from here on.
    async fn shutdown_children(&mut self) -> ShutdownReport {
        self.shutting_down = true;
        self.shutdown.cancel();
        self.timers.clear();
        self.probe.set_state(ActorState::Draining);
        let started = Instant::now();
        let deadline = started + self.config.shutdown_deadline;
        let mut stopped = Vec::with_capacity(self.slots.len());
        for stage in [Stage::Producer, Stage::Consumer, Stage::Resource] {
            // Reverse start order within a stage, for the log and the report.
            let mut lives: Vec<(usize, Live, Duration)> = Vec::new();
            let mut idle: Vec<usize> = Vec::new();
            for i in (0..self.slots.len()).rev() {
                if self.slots[i].spec.stage != stage {
                    continue;
                }
                let timeout = self.timeout_of(i);
                let slot = &mut self.slots[i];
                match slot.child.take() {
                    Some(live) => {
                        slot.child.probe().set_state(ActorState::Draining);
                        lives.push((i, live, timeout));
                    }
                    None if slot.waiting != Waiting::Done => idle.push(i),
                    None => {}
                }
            }
            let skip = &self.skip_drain;
            let outcomes =
                futures::future::join_all(lives.into_iter().map(|(i, live, timeout)| async move {
                    (i, live.stop(timeout, Some(deadline), skip).await)
                }))
                .await;
            let idle = idle.into_iter().map(|i| (i, StopOutcome::NotRunning));
            let mut outcomes: Vec<(usize, StopOutcome)> =
                outcomes.into_iter().chain(idle).collect();
            outcomes.sort_by_key(|(i, _)| std::cmp::Reverse(*i));
            for (i, outcome) in outcomes {
                let slot = &mut self.slots[i];
                slot.waiting = Waiting::Done;
                slot.child.probe().set_state(ActorState::Stopped);
                tracing::info!(child = %slot.spec.name, ?outcome, "Child stopped.");
                stopped.push(StoppedChild {
                    name: slot.spec.name.clone(),
                    kind: slot.spec.kind,
                    outcome,
                });
            }
        }
        ShutdownReport {
            stopped,
            took: started.elapsed(),
        }
    }
}
