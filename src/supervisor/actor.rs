//! The supervisor actor: ordered start, restarts by strategy and intensity, and
//! ordered shutdown.

use keel_actors::mailbox::Tell;
use std::mem;
use std::time::Instant;

use keel_actors::child::{StartContext, Unrecoverable};
use keel_actors::delay::Backoff;
use keel_actors::recorded::Recordable;
use keel_actors::registry::{ActorKind, ActorState, Probe, Registry};
use ractor::{Actor, ActorCell, ActorProcessingErr, ActorRef, RpcReplyPort, SupervisionEvent};
use serde::Serialize;
use tokio::sync::{broadcast, watch};
use tokio_util::sync::CancellationToken;

use super::intensity::IntensityWindow;
use super::policy::{self, Decision, Exit};
use super::stop::stop_child;
use super::{ChildSpec, Restart, ShutdownReport, StopOutcome, StoppedChild, SupervisorConfig};

/// Messages the supervisor handles (besides ractor's supervision events).
#[derive(Debug)]
pub(crate) enum SupervisorMsg {
    /// Start every child in specification order; replies once all were tried.
    StartChildren(RpcReplyPort<()>),
    /// A restart delay has passed: start these slots (in order).
    RestartDue(Vec<usize>),
    /// Drain the whole tree in order and stop; replies with the report.
    Shutdown(RpcReplyPort<ShutdownReport>),
    /// Restart one child now (drained, then started again); replies how it went.
    RestartChild(String, RpcReplyPort<Result<(), RestartRefused>>),
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
        }
    }

    fn summary(&self) -> String {
        match self {
            SupervisorMsg::StartChildren(_) => "start every child in order".into(),
            SupervisorMsg::RestartDue(slots) => format!("restart children at {slots:?}"),
            SupervisorMsg::Shutdown(_) => "drain the tree and stop".into(),
            SupervisorMsg::RestartChild(name, _) => format!("restart `{name}` on request"),
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
pub(crate) struct SupervisorArgs {
    pub(crate) config: SupervisorConfig,
    pub(crate) children: Vec<ChildSpec>,
    pub(crate) registry: Registry,
    pub(crate) probe: Probe,
    pub(crate) skip_drain: CancellationToken,
    pub(crate) exit: watch::Sender<Option<TreeExit>>,
    pub(crate) events: broadcast::Sender<ChildEvent>,
}

/// The root supervisor.
pub(crate) struct Supervisor;

enum Run {
    Running {
        cell: ActorCell,
        since: Instant,
    },
    /// Not running; `scheduled` while a restart timer is armed for it.
    Waiting {
        scheduled: bool,
    },
    Done,
}

struct Slot {
    spec: ChildSpec,
    probe: Probe,
    run: Run,
    backoff: Backoff,
}

pub(crate) struct SupervisorState {
    config: SupervisorConfig,
    slots: Vec<Slot>,
    intensity: IntensityWindow,
    shutting_down: bool,
    probe: Probe,
    skip_drain: CancellationToken,
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
                spec,
                probe,
                run: Run::Waiting { scheduled: false },
            });
        }
        Ok(SupervisorState {
            intensity: IntensityWindow::new(args.config.max_restarts, args.config.period),
            config: args.config,
            slots,
            shutting_down: false,
            probe: args.probe,
            skip_drain: args.skip_drain,
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
                    if let Run::Waiting { scheduled } = &mut state.slots[i].run {
                        *scheduled = false;
                    }
                }
                state.start_pending(&myself, &slots).await;
            }
            SupervisorMsg::RestartChild(name, reply) => {
                let result = state.restart_on_request(&myself, &name).await;
                let _ = reply.send(result);
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
        let (cell, exit) = match event {
            SupervisionEvent::ActorFailed(cell, err) => {
                let exit = Exit::Failed {
                    reason: err.to_string(),
                    unrecoverable: Unrecoverable::is(&err),
                };
                (cell, exit)
            }
            SupervisionEvent::ActorTerminated(cell, _, reason) => {
                let exit = match reason.as_deref() {
                    Some("killed") => Exit::Failed {
                        reason: "killed".into(),
                        unrecoverable: false,
                    },
                    _ => Exit::Normal,
                };
                (cell, exit)
            }
            _ => return Ok(()),
        };
        // Children the supervisor stopped itself were already taken out of their
        // slot, so their events (and stale ones) match nothing and are ignored.
        if let Some(i) = state.slot_running(&cell) {
            state.on_exit(&myself, i, exit).await;
        }
        Ok(())
    }
}

impl SupervisorState {
    fn slot_running(&self, cell: &ActorCell) -> Option<usize> {
        self.slots.iter().position(|slot| match &slot.run {
            Run::Running { cell: c, .. } => c.get_id() == cell.get_id(),
            _ => false,
        })
    }

    fn timeout_of(&self, i: usize) -> std::time::Duration {
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
            if !matches!(self.slots[i].run, Run::Waiting { scheduled: false }) {
                continue;
            }
            let slot = &mut self.slots[i];
            slot.probe.set_state(ActorState::Starting);
            let ctx = StartContext {
                supervisor: myself.get_cell(),
                probe: slot.probe.clone(),
            };
            match slot.spec.factory.start(ctx).await {
                Ok(cell) => {
                    slot.probe.set_cell(Some(cell.clone()));
                    slot.run = Run::Running {
                        cell,
                        since: Instant::now(),
                    };
                    slot.probe.set_state(ActorState::Running);
                    tracing::info!(child = %slot.spec.name, kind = ?slot.spec.kind, "Child started.");
                }
                Err(err) => {
                    let exit = Exit::Failed {
                        reason: format!("failed to start: {err}"),
                        unrecoverable: false,
                    };
                    self.on_exit(myself, i, exit).await;
                }
            }
        }
    }

    /// Decides what happens after child `i` ended, and does it.
    async fn on_exit(&mut self, myself: &ActorRef<SupervisorMsg>, i: usize, exit: Exit) {
        let since = match mem::replace(&mut self.slots[i].run, Run::Done) {
            Run::Running { since, .. } => Some(since),
            _ => None,
        };
        self.slots[i].probe.set_cell(None);
        if self.shutting_down {
            return;
        }
        let slot = &self.slots[i];
        let name = slot.spec.name.clone();
        let reason = match &exit {
            Exit::Normal => "exited normally".to_owned(),
            Exit::Failed { reason, .. } => reason.clone(),
        };
        let decision = policy::decide(slot.spec.restart, &exit);
        let _ = self.events.send(ChildEvent {
            name: name.clone(),
            failure: matches!(exit, Exit::Failed { .. }).then(|| reason.clone()),
            restarting: decision == Decision::Restart,
        });
        match decision {
            Decision::Leave => match exit {
                Exit::Normal => {
                    slot.probe.set_state(ActorState::Stopped);
                    tracing::info!(child = %name, "Child finished; not restarted.");
                }
                Exit::Failed { .. } => {
                    slot.probe.record_final_failure(&reason);
                    tracing::error!(child = %name, %reason, "Child failed; not restarted.");
                }
            },
            Decision::GiveUp => {
                slot.probe.record_final_failure(&reason);
                let why = format!("permanent child `{name}` cannot run: {reason}");
                self.give_up(myself, why).await;
            }
            Decision::Restart => {
                if self.intensity.record(Instant::now()) {
                    slot.probe.record_final_failure(&reason);
                    let why = format!(
                        "more than {} restarts within {}; last: `{name}`: {reason}",
                        self.config.max_restarts,
                        humantime::format_duration(self.config.period),
                    );
                    self.give_up(myself, why).await;
                    return;
                }
                self.schedule_restart(myself, i, &reason, since).await;
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
        since: Option<Instant>,
    ) {
        let stable_after = self.config.stable_after;
        let slot = &mut self.slots[i];
        if since.is_some_and(|s| s.elapsed() >= stable_after) {
            slot.backoff.reset();
        }
        let delay = slot.backoff.next_delay();
        slot.probe.record_restart(reason);
        slot.run = Run::Waiting { scheduled: true };
        tracing::warn!(
            child = %slot.spec.name, %reason, delay = %humantime::format_duration(delay),
            "Child failed; restarting after delay."
        );

        let scope = policy::scope(self.config.strategy, i, self.slots.len());
        for j in scope.clone().rev().filter(|&j| j != i) {
            let timeout = self.timeout_of(j);
            let sibling = &mut self.slots[j];
            let was = mem::replace(&mut sibling.run, Run::Done);
            match was {
                Run::Done => continue,
                Run::Running { cell, .. } => {
                    sibling.probe.set_cell(None);
                    sibling.probe.set_state(ActorState::Draining);
                    stop_child(&sibling.spec.name, &cell, timeout, &self.skip_drain).await;
                }
                Run::Waiting { .. } => {}
            }
            if sibling.spec.restart == Restart::Temporary {
                sibling.probe.set_state(ActorState::Stopped);
            } else {
                sibling.probe.record_sibling_restart();
                sibling.run = Run::Waiting { scheduled: true };
            }
        }
        let due: Vec<usize> = scope
            .filter(|&j| matches!(self.slots[j].run, Run::Waiting { scheduled: true }))
            .collect();
        myself.tell_after(delay, move || SupervisorMsg::RestartDue(due));
    }

    /// Drains child `name` and starts it again at once, as an operator asked.
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
        if let Run::Running { cell, .. } =
            mem::replace(&mut slot.run, Run::Waiting { scheduled: false })
        {
            slot.probe.set_cell(None);
            slot.probe.set_state(ActorState::Draining);
            stop_child(&slot.spec.name, &cell, timeout, &self.skip_drain).await;
        }
        slot.probe.record_restart("restarted on request");
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

    /// Drains every child: workers and tasks in reverse start order, then resources
    /// in reverse start order. No restarts happen from here on.
    async fn shutdown_children(&mut self) -> ShutdownReport {
        self.shutting_down = true;
        self.probe.set_state(ActorState::Draining);
        let started = Instant::now();
        let indices = (0..self.slots.len()).rev();
        let order: Vec<usize> = indices
            .clone()
            .filter(|&i| self.slots[i].spec.kind != ActorKind::Resource)
            .chain(indices.filter(|&i| self.slots[i].spec.kind == ActorKind::Resource))
            .collect();
        let mut stopped = Vec::with_capacity(order.len());
        for i in order {
            let timeout = self.timeout_of(i);
            let slot = &mut self.slots[i];
            let outcome = match mem::replace(&mut slot.run, Run::Done) {
                Run::Done => continue,
                Run::Waiting { .. } => StopOutcome::NotRunning,
                Run::Running { cell, .. } => {
                    slot.probe.set_cell(None);
                    slot.probe.set_state(ActorState::Draining);
                    stop_child(&slot.spec.name, &cell, timeout, &self.skip_drain).await
                }
            };
            slot.probe.set_state(ActorState::Stopped);
            tracing::info!(child = %slot.spec.name, ?outcome, "Child stopped.");
            stopped.push(StoppedChild {
                name: slot.spec.name.clone(),
                kind: slot.spec.kind,
                outcome,
            });
        }
        ShutdownReport {
            stopped,
            took: started.elapsed(),
        }
    }
}
