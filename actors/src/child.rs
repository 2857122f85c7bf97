//! The contract between a supervisor and the children it starts.

use std::error::Error;
use std::fmt;
use std::future::Future;
use std::pin::Pin;

use ractor::{Actor, ActorCell, ActorProcessingErr, SpawnErr};

use crate::recorded::{Recordable, Recorded};
use crate::registry::Probe;

/// What a child needs to start one incarnation of itself.
#[derive(Debug)]
pub struct StartContext {
    /// The supervisor the new actor must be linked to.
    pub supervisor: ActorCell,
    /// The child's registry entry; it keeps one across restarts.
    pub probe: Probe,
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

/// Spawns an actor whose arguments are its settings plus its own registry probe
/// (resources, services, tasks), recorded like every Keel actor.
pub async fn spawn_with_probe<A, T>(
    actor: A,
    settings: T,
    ctx: StartContext,
) -> Result<ActorCell, SpawnErr>
where
    A: Actor<Arguments = (T, Probe)>,
    A::Msg: Recordable,
{
    let probe = ctx.probe.clone();
    spawn_recorded(actor, (settings, probe), ctx).await
}
