//! One child of a supervisor: the factory of its incarnations, its registry
//! entry, and the incarnation that runs now, if any.
//!
//! The root supervisor and the scheduler both keep their children in
//! [`ChildSlot`]s: starting an incarnation, recognising its end among
//! supervision events, and stopping it are written once, here.

use std::sync::Arc;
use std::time::{Duration, Instant};

use ractor::{ActorCell, SpawnErr, SupervisionEvent};
use tokio_util::sync::CancellationToken;

use super::stop::{stop_cell, Limit};
use super::{ChildFactory, Outage, StartContext, StopOutcome, Unrecoverable};
use crate::registry::{ActorState, Probe};

/// How a child ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Exit {
    /// It stopped itself (or finished its task).
    Normal,
    /// It returned an error, panicked, or was killed by someone else.
    Failed {
        /// The error, the panic message, or `killed`.
        reason: String,
        /// Marked with [`Unrecoverable`]: restarting cannot help.
        unrecoverable: bool,
        /// Marked with [`Outage`]: not the actor's own failure.
        outage: bool,
    },
}

impl Exit {
    /// Whether it failed.
    pub fn is_failure(&self) -> bool {
        matches!(self, Exit::Failed { .. })
    }
}

/// Which actor a supervision event says ended, and how. A kill counts as a
/// failure: whatever the actor held was lost.
pub fn exit_of(event: &SupervisionEvent) -> Option<(ActorCell, Exit)> {
    match event {
        SupervisionEvent::ActorFailed(cell, err) => Some((
            cell.clone(),
            Exit::Failed {
                reason: err.to_string(),
                unrecoverable: Unrecoverable::is(err),
                outage: Outage::is(err),
            },
        )),
        SupervisionEvent::ActorTerminated(cell, _, reason) => {
            let exit = match reason.as_deref() {
                Some("killed") => Exit::Failed {
                    reason: "killed".into(),
                    unrecoverable: false,
                    outage: false,
                },
                _ => Exit::Normal,
            };
            Some((cell.clone(), exit))
        }
        _ => None,
    }
}

/// The incarnation of a child that runs now.
#[derive(Debug)]
pub struct Live {
    name: String,
    cell: ActorCell,
    since: Instant,
    stop: CancellationToken,
}

impl Live {
    /// How long it has run.
    pub fn uptime(&self) -> Duration {
        self.since.elapsed()
    }

    /// Kills it without waiting (an owner that is itself going away).
    pub fn kill(self) {
        self.stop.cancel();
        self.cell.kill();
    }

    /// Signals it to stop, drains it within `timeout` (and before `deadline`,
    /// when a shutdown has one), and kills it after that or when `skip_drain`
    /// fires.
    pub async fn stop(
        self,
        timeout: Duration,
        deadline: Option<Instant>,
        skip_drain: &CancellationToken,
    ) -> StopOutcome {
        let limit = Limit { timeout, deadline };
        stop_cell(&self.name, &self.cell, &self.stop, limit, skip_drain).await
    }
}

/// One child: how to start it, where it reports, and its live incarnation.
pub struct ChildSlot {
    name: String,
    factory: Arc<dyn ChildFactory>,
    probe: Probe,
    live: Option<Live>,
}

impl std::fmt::Debug for ChildSlot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ChildSlot")
            .field("name", &self.name)
            .field("live", &self.live)
            .finish_non_exhaustive()
    }
}

impl ChildSlot {
    /// A slot for the child registered as `probe`, started by `factory`.
    pub fn new(factory: Arc<dyn ChildFactory>, probe: Probe) -> Self {
        Self {
            name: probe.name().to_owned(),
            factory,
            probe,
            live: None,
        }
    }

    /// The child's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The child's registry entry.
    pub fn probe(&self) -> &Probe {
        &self.probe
    }

    /// Whether an incarnation runs.
    pub fn is_running(&self) -> bool {
        self.live.is_some()
    }

    /// Starts an incarnation linked to `supervisor`. Its stop token is a child of
    /// `parent_stop`, so stopping the parent stops it too.
    pub async fn start(
        &mut self,
        supervisor: ActorCell,
        parent_stop: &CancellationToken,
        shutdown: &CancellationToken,
    ) -> Result<(), SpawnErr> {
        self.probe.set_state(ActorState::Starting);
        let stop = parent_stop.child_token();
        let ctx = StartContext {
            supervisor,
            probe: self.probe.clone(),
            stop: stop.clone(),
            shutdown: shutdown.clone(),
        };
        let cell = match self.factory.start(ctx).await {
            Ok(cell) => cell,
            Err(err) => {
                stop.cancel();
                return Err(err);
            }
        };
        self.probe.set_cell(Some(cell.clone()));
        self.probe.set_state(ActorState::Running);
        self.live = Some(Live {
            name: self.name.clone(),
            cell,
            since: Instant::now(),
            stop,
        });
        Ok(())
    }

    /// Whether `cell` is this slot's live incarnation.
    pub fn owns(&self, cell: &ActorCell) -> bool {
        self.live
            .as_ref()
            .is_some_and(|live| live.cell.get_id() == cell.get_id())
    }

    /// Takes the live incarnation out of the slot (it ended, or is about to be
    /// stopped), so its later supervision events match nothing.
    pub fn take(&mut self) -> Option<Live> {
        let live = self.live.take()?;
        self.probe.set_cell(None);
        Some(live)
    }

    /// The live incarnation ended by itself: forgets it (cancelling its stop
    /// token, so whatever it left behind stops too); how long it had run.
    pub fn ended(&mut self) -> Option<Duration> {
        let live = self.take()?;
        live.stop.cancel();
        Some(live.uptime())
    }
}
