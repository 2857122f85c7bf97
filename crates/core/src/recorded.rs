//! The one place message recording is implemented: a wrapper actor that counts and
//! records every message before handing it to the actor it wraps.
//!
//! It also takes each message off the mailbox depth that [`crate::mailbox::Tell`]
//! counted on the way in.
//!
//! An actor gets registry recording by being spawned through
//! [`crate::child::spawn_recorded`] and by describing its messages with
//! [`Recordable`]; it writes no recording code of its own.

use ractor::{Actor, ActorProcessingErr, ActorRef, SupervisionEvent};

use crate::mailbox;
use crate::registry::Probe;

/// How a message describes itself to the operator.
pub trait Recordable {
    /// The message's type as shown to operators (for an enum, its variant).
    fn kind(&self) -> &'static str;

    /// A short description of the message. It is stored and served by the admin
    /// endpoint, so it must never contain a secret (a [`crate::secret::Secret`]
    /// formats as `***`, so formatting one is safe).
    fn summary(&self) -> String;
}

/// Wraps an actor so that each handled message is counted and kept in its
/// registry entry; everything else is delegated unchanged.
#[derive(Debug)]
pub struct Recorded<A> {
    inner: A,
    probe: Probe,
}

impl<A> Recorded<A> {
    /// Wraps `inner`, recording into `probe`.
    pub fn new(inner: A, probe: Probe) -> Self {
        Self { inner, probe }
    }
}

impl<A> Actor for Recorded<A>
where
    A: Actor,
    A::Msg: Recordable,
{
    type Msg = A::Msg;
    type State = A::State;
    type Arguments = A::Arguments;

    async fn pre_start(
        &self,
        myself: ActorRef<Self::Msg>,
        args: Self::Arguments,
    ) -> Result<Self::State, ActorProcessingErr> {
        let id = myself.get_id();
        self.probe.enter_incarnation(id);
        let started = self.inner.pre_start(myself, args).await;
        if started.is_err() {
            mailbox::leave(id);
        }
        started
    }

    async fn post_start(
        &self,
        myself: ActorRef<Self::Msg>,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        self.inner.post_start(myself, state).await
    }

    async fn post_stop(
        &self,
        myself: ActorRef<Self::Msg>,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        let id = myself.get_id();
        let stopped = self.inner.post_stop(myself, state).await;
        mailbox::leave(id);
        stopped
    }

    async fn handle(
        &self,
        myself: ActorRef<Self::Msg>,
        message: Self::Msg,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        self.probe
            .record_delivery_with(message.kind(), || message.summary());
        self.inner.handle(myself, message, state).await
    }

    async fn handle_supervisor_evt(
        &self,
        myself: ActorRef<Self::Msg>,
        message: SupervisionEvent,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        self.probe
            .record_message_with(supervision_kind(&message), || supervision_summary(&message));
        self.inner
            .handle_supervisor_evt(myself, message, state)
            .await
    }
}

fn supervision_kind(event: &SupervisionEvent) -> &'static str {
    match event {
        SupervisionEvent::ActorStarted(_) => "ActorStarted",
        SupervisionEvent::ActorTerminated(..) => "ActorTerminated",
        SupervisionEvent::ActorFailed(..) => "ActorFailed",
        SupervisionEvent::ProcessGroupChanged(_) => "ProcessGroupChanged",
    }
}

fn supervision_summary(event: &SupervisionEvent) -> String {
    match event {
        SupervisionEvent::ActorStarted(cell) => format!("actor {} started", cell.get_id()),
        SupervisionEvent::ActorTerminated(cell, _, reason) => format!(
            "actor {} terminated: {}",
            cell.get_id(),
            reason.as_deref().unwrap_or("no reason")
        ),
        SupervisionEvent::ActorFailed(cell, err) => {
            format!("actor {} failed: {err}", cell.get_id())
        }
        SupervisionEvent::ProcessGroupChanged(_) => "process group changed".to_owned(),
    }
}
