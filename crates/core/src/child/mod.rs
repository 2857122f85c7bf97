//! The contract between a supervisor and the children it starts, and the
//! bookkeeping every supervisor (the root one, the scheduler) shares: one slot
//! per child, how a child's end is read, and how a child is stopped.

mod slot;
mod stop;

pub use slot::{exit_of, ChildSlot, Exit, Live};
pub use stop::StopOutcome;

use std::error::Error;
use std::fmt;
use std::future::Future;
use std::pin::Pin;

use ractor::{Actor, ActorCell, ActorProcessingErr, SpawnErr};
use tokio_util::sync::CancellationToken;

use crate::recorded::{Recordable, Recorded};
use crate::registry::Probe;

/// What a child needs to start one incarnation of itself.
#[derive(Debug)]
pub struct StartContext {
    /// The supervisor the new actor must be linked to.
    pub supervisor: ActorCell,
    /// The child's registry entry; it keeps one across restarts.
    pub probe: Probe,
    /// Cancelled when this incarnation is asked to stop, or the tree to shut down.
    pub stop: CancellationToken,
    /// Cancelled when the whole tree begins to shut down.
    pub shutdown: CancellationToken,
}

impl StartContext {
    /// What the new incarnation itself keeps.
    pub fn incarnation(&self) -> Incarnation {
        Incarnation {
            probe: self.probe.clone(),
            stop: self.stop.clone(),
            shutdown: self.shutdown.clone(),
        }
    }
}

/// What one incarnation of a child knows about its own life: its registry entry
/// and when to stop.
///
/// `stop` fires when the supervisor begins to stop this incarnation (a drain, a
/// restart on request, a sibling's restart) and when the tree begins to shut
/// down: from then on nothing waits for a resource to come back and nothing is
/// retried, so the drain that follows ends within its deadline. `shutdown` fires
/// only for the tree, so an actor can tell a restart from the end.
#[derive(Clone, Debug)]
pub struct Incarnation {
    /// The child's registry entry.
    pub probe: Probe,
    /// This incarnation should stop: finish what is in hand, wait for nothing.
    pub stop: CancellationToken,
    /// The tree is shutting down.
    pub shutdown: CancellationToken,
}

impl Incarnation {
    /// One that nothing ever stops, for tests and tools that run an actor's work
    /// outside a tree.
    pub fn detached(probe: Probe) -> Self {
        Self {
            probe,
            stop: CancellationToken::new(),
            shutdown: CancellationToken::new(),
        }
    }
}

/// A boxed start future, as returned by [`ChildFactory::start`].
pub type StartFuture = Pin<Box<dyn Future<Output = Result<ActorCell, SpawnErr>> + Send>>;

/// Starts fresh incarnations of one child; the supervisor calls it at boot and on
/// every restart.
///
/// `start` must return once the actor's `pre_start` has run, and `pre_start` must not
/// wait on a server that may be down: a resource reports `connecting` in its
/// registry details and connects in the background, so a missing database never
/// blocks or crashes the tree.
pub trait ChildFactory: Send + Sync + 'static {
    /// Spawns a new incarnation linked to `ctx.supervisor`.
    fn start(&self, ctx: StartContext) -> StartFuture;
}

impl<F, Fut> ChildFactory for F
where
    F: Fn(StartContext) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<ActorCell, SpawnErr>> + Send + 'static,
{
    fn start(&self, ctx: StartContext) -> StartFuture {
        Box::pin(self(ctx))
    }
}

/// Spawns `actor` linked to the context's supervisor, with its messages recorded
/// in its registry entry. This is how every Keel actor is started.
pub async fn spawn_recorded<A>(
    actor: A,
    args: A::Arguments,
    ctx: StartContext,
) -> Result<ActorCell, SpawnErr>
where
    A: Actor,
    A::Msg: Recordable,
{
    // Names live in Keel's per-runtime registry; ractor's registry is global to
    // the process and would make two trees in one test binary collide.
    let (actor_ref, _join) =
        Actor::spawn_linked(None, Recorded::new(actor, ctx.probe), args, ctx.supervisor).await?;
    Ok(actor_ref.get_cell())
}

/// A failure that restarting cannot fix (rejected credentials, an invalid request):
/// the supervisor does not restart an actor that fails with it.
#[derive(Debug)]
pub struct Unrecoverable {
    source: Box<dyn Error + Send + Sync>,
}

impl Unrecoverable {
    /// Marks `source` as not worth a restart.
    pub fn new(source: impl Into<Box<dyn Error + Send + Sync>>) -> Self {
        Self {
            source: source.into(),
        }
    }

    /// Whether an actor's error is marked unrecoverable.
    pub fn is(err: &ActorProcessingErr) -> bool {
        err.downcast_ref::<Self>().is_some()
    }
}

impl fmt::Display for Unrecoverable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "unrecoverable: {}", self.source)
    }
}

impl Error for Unrecoverable {
    fn source(&self) -> Option<&(dyn Error + 'static)> {
        Some(self.source.as_ref())
    }
}

/// A failure caused by something outside the actor (the exchange dropped the
/// connection or went silent): the supervisor restarts it with backoff, which is
/// how it reconnects, but does not count it against the restart intensity,
/// which is for the actor's own failures.
#[derive(Debug)]
pub struct Outage {
    source: Box<dyn Error + Send + Sync>,
}

impl Outage {
    /// Marks `source` as an outage of something the actor depends on.
    pub fn new(source: impl Into<Box<dyn Error + Send + Sync>>) -> Self {
        Self {
            source: source.into(),
        }
    }

    /// Whether an actor's error is marked as an outage.
    pub fn is(err: &ActorProcessingErr) -> bool {
        err.downcast_ref::<Self>().is_some()
    }
}

impl fmt::Display for Outage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.source)
    }
}

impl Error for Outage {
    fn source(&self) -> Option<&(dyn Error + 'static)> {
        Some(self.source.as_ref())
    }
}

/// Spawns an actor whose arguments are its settings plus its [`Incarnation`]
/// (resources, services, tasks), recorded like every Keel actor.
pub async fn spawn_with_probe<A, T>(
    actor: A,
    settings: T,
    ctx: StartContext,
) -> Result<ActorCell, SpawnErr>
where
    A: Actor<Arguments = (T, Incarnation)>,
    A::Msg: Recordable,
{
    let own = ctx.incarnation();
    spawn_recorded(actor, (settings, own), ctx).await
}
