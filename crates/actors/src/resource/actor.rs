//! The one lifecycle both resource actors share.

use keel_core::mailbox::Tell;
use std::future::Future;
use std::marker::PhantomData;
use std::sync::{Arc, Weak};
use std::time::Duration;

use ractor::{Actor, ActorCell, ActorProcessingErr, ActorRef, RpcReplyPort, SpawnErr};
use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;

use keel_core::child::{spawn_with_probe, Incarnation, StartContext, Unrecoverable};
use keel_core::delay::BackoffConfig;
use keel_core::recorded::Recordable;
use keel_core::stats::{Family, Samples, Stats};
use keel_core::tasks::{OwnedTask, TaskEnd, Tasks};

use super::{Availability, Call, CallStats, Unreachable};

/// Whether a resource can reach its server.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    /// Not connected yet, or lost the server; calls are retried or fail fast.
    Connecting,
    /// The last attempt reached the server.
    Ready,
}

impl Status {
    /// The registry spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Connecting => "connecting",
            Status::Ready => "ready",
        }
    }
}

/// Pool figures common to every resource.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct PoolStats {
    /// Connections the pool holds.
    pub connections: u32,
    /// Of which idle.
    pub idle: u32,
    /// The pool's maximum.
    pub max_size: u32,
    /// Checkouts that had to wait.
    pub waited: u64,
    /// Checkouts that timed out.
    pub timed_out: u64,
}

/// The answer to [`ResourceMsg::Health`], the same for every resource.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Health {
    /// Reachability.
    pub status: Status,
    /// Connections open, idle and waited for.
    pub pool: PoolStats,
    /// Calls being served right now.
    pub calls_in_flight: usize,
    /// Resource-specific figures (breaker state, retry counts, ...).
    pub details: serde_json::Value,
}

/// Why connecting did not succeed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConnectError {
    /// Worth another try after a delay (refused, timed out, server starting).
    Retry(String),
    /// The server refused us for a reason only an operator can fix (bad
    /// credentials, a database that does not exist). Still retried with the
    /// capped backoff, so a fix needs no restart, but logged at ERROR with `fix`.
    Permanent {
        /// What the server said.
        cause: String,
        /// What the operator should do.
        fix: &'static str,
    },
    /// Cannot succeed by retrying (a migration that fails, a schema conflict):
    /// the actor fails with [`Unrecoverable`].
    Fatal(String),
}

/// What distinguishes one resource from another; [`ResourceActor`] does the rest.
pub trait Resource: Send + Sync + Sized + 'static {
    /// Everything a call needs (the pool and its policy); cheap to clone.
    /// Operations run on it ([`Execute`](super::Execute)).
    type Shared: Clone + Send + Sync + 'static;

    /// Builds the pool without any I/O. `stop` fires when this incarnation is
    /// asked to stop or the tree shuts down: from then on calls are not retried.
    fn open(
        self,
        availability: Availability,
        stop: CancellationToken,
    ) -> Result<Self::Shared, ActorProcessingErr>;

    /// How long to wait between connect attempts.
    fn connect_backoff(shared: &Self::Shared) -> BackoffConfig;

    /// One connect attempt: reach the server and prepare it (migrations).
    fn connect(shared: &Self::Shared) -> impl Future<Output = Result<(), ConnectError>> + Send;

    /// How often to check, once connected, that the server is still there.
    fn health_every(shared: &Self::Shared) -> Duration;

    /// One check that the server answers (a validated pool checkout); the error
    /// says why not.
    fn check(shared: &Self::Shared) -> impl Future<Output = Result<(), Unreachable>> + Send;

    /// Connections open, idle and waited for, from the pool.
    fn pool_stats(shared: &Self::Shared) -> PoolStats;

    /// Resource-specific health figures.
    fn details(shared: &Self::Shared) -> serde_json::Value;

    /// Latency and errors of the calls served so far by this incarnation.
    fn call_stats(shared: &Self::Shared) -> &CallStats;
}

/// Messages every resource actor understands.
#[derive(Debug)]
pub enum ResourceMsg<C> {
    /// A typed operation, served concurrently with others.
    Call(C),
    /// Current status and figures.
    Health(RpcReplyPort<Health>),
    /// From the connect loop: connecting cannot succeed.
    ConnectFailed(String),
    /// A task of the actor's own (the connect loop, a call) panicked.
    TaskFailed(String),
}

impl<C: Recordable> Recordable for ResourceMsg<C> {
    fn kind(&self) -> &'static str {
        match self {
            ResourceMsg::Call(call) => call.kind(),
            ResourceMsg::Health(_) => "Health",
            ResourceMsg::ConnectFailed(_) => "ConnectFailed",
            ResourceMsg::TaskFailed(_) => "TaskFailed",
        }
    }

    fn summary(&self) -> String {
        match self {
            ResourceMsg::Call(call) => call.summary(),
            ResourceMsg::Health(_) => "health probe".into(),
            ResourceMsg::ConnectFailed(reason) | ResourceMsg::TaskFailed(reason) => reason.clone(),
        }
    }
}

/// A pool family and how to read it from the figures.
type PoolMetric = (Family, fn(&PoolFigures) -> f64);

const POOL: [PoolMetric; 6] = [
    (
        Family::gauge("keel_pool_connections", "Connections the pool holds."),
        |p| f64::from(p.pool.connections),
    ),
    (
        Family::gauge(
            "keel_pool_idle_connections",
            "Idle connections in the pool.",
        ),
        |p| f64::from(p.pool.idle),
    ),
    (
        Family::gauge("keel_pool_max_connections", "The pool's maximum size."),
        |p| f64::from(p.pool.max_size),
    ),
    (
        Family::gauge(
            "keel_pool_waiting_callers",
            "Callers waiting for a connection now.",
        ),
        |p| p.waiting as f64,
    ),
    (
        Family::counter(
            "keel_pool_checkout_waits_total",
            "Checkouts that had to wait.",
        ),
        |p| p.pool.waited as f64,
    ),
    (
        Family::counter(
            "keel_pool_checkout_timeouts_total",
            "Checkouts that timed out.",
        ),
        |p| p.pool.timed_out as f64,
    ),
];

/// The `pool` detail.
#[derive(Serialize)]
struct PoolFigures {
    #[serde(flatten)]
    pool: PoolStats,
    waiting: u64,
}

/// A resource's pool figures, read when the registry is; gone with the pool.
struct PoolView<R: Resource>(Weak<R::Shared>);

impl<R: Resource> PoolView<R> {
    fn figures(&self) -> Option<PoolFigures> {
        let shared = self.0.upgrade()?;
        let waiting = R::call_stats(&shared).waiting_callers();
        Some(PoolFigures {
            pool: R::pool_stats(&shared),
            waiting,
        })
    }
}

impl<R: Resource> Stats for PoolView<R> {
    fn show(&self) -> Option<serde_json::Value> {
        serde_json::to_value(self.figures()?).ok()
    }

    fn export(&self, actor: &str, out: &mut Samples) {
        let Some(figures) = self.figures() else {
            return;
        };
        for (family, value) in &POOL {
            out.add(family, &[("actor", actor)], value(&figures));
        }
    }
}

/// A resource's call latency and errors by operation (the `calls` detail).
struct CallsView<R: Resource>(Weak<R::Shared>);

impl<R: Resource> Stats for CallsView<R> {
    fn show(&self) -> Option<serde_json::Value> {
        let shared = self.0.upgrade()?;
        Some(R::call_stats(&shared).ops_json())
    }

    fn export(&self, actor: &str, out: &mut Samples) {
        if let Some(shared) = self.0.upgrade() {
            R::call_stats(&shared).export(actor, out);
        }
    }
}

/// A resource actor: PostgreSQL is `ResourceActor<Postgres>`, Redis is
/// `ResourceActor<Redis>`.
#[derive(Debug)]
pub struct ResourceActor<R>(PhantomData<fn() -> R>);

impl<R: Resource> ResourceActor<R> {
    /// Spawns one incarnation of `resource`: the child factory of every resource.
    pub async fn spawn(resource: R, ctx: StartContext) -> Result<ActorCell, SpawnErr> {
        spawn_with_probe(Self::default(), resource, ctx).await
    }
}

impl<R> Default for ResourceActor<R> {
    fn default() -> Self {
        Self(PhantomData)
    }
}

/// The running state of a resource actor.
#[derive(Debug)]
pub struct ResourceState<S> {
    /// The only long-lived strong reference: the registry's live details hold a
    /// weak one, so the pool closes when the state is dropped.
    shared: Arc<S>,
    availability: Availability,
    /// Calls being served; aborted if the actor is killed.
    calls: Tasks,
    /// Connecting, then checking health; aborted with the actor.
    connect: Option<OwnedTask>,
    stop: CancellationToken,
}

/// Dropped however the actor ended (a kill skips `post_stop`): its tasks are
/// aborted with their handles, and callers waiting for it wait for the next one.
impl<S> Drop for ResourceState<S> {
    fn drop(&mut self) {
        self.availability.mark_stopped();
    }
}

impl<R: Resource> Actor for ResourceActor<R> {
    type Msg = ResourceMsg<Call<R::Shared>>;
    type State = ResourceState<R::Shared>;
    type Arguments = (R, Incarnation);

    async fn pre_start(
        &self,
        _myself: ActorRef<Self::Msg>,
        (resource, own): (R, Incarnation),
    ) -> Result<Self::State, ActorProcessingErr> {
        let probe = own.probe;
        let availability = Availability::new(&probe);
        let shared = Arc::new(resource.open(availability.clone(), own.stop.clone())?);
        probe.set_stats("pool", PoolView::<R>(Arc::downgrade(&shared)));
        probe.set_stats("calls", CallsView::<R>(Arc::downgrade(&shared)));
        Ok(ResourceState {
            shared,
            availability,
            calls: Tasks::new(),
            connect: None,
            stop: own.stop,
        })
    }

    async fn post_start(
        &self,
        myself: ActorRef<Self::Msg>,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        let connect = connect_loop::<R>(
            R::Shared::clone(&state.shared),
            state.availability.clone(),
            state.stop.clone(),
            myself.clone(),
        );
        state.connect = Some(OwnedTask::spawn(&myself, connect, |end| match end {
            TaskEnd::Panicked(_) => Some(ResourceMsg::TaskFailed(end.unexpected("connect"))),
            TaskEnd::Returned(()) => None,
        }));
        Ok(())
    }

    async fn handle(
        &self,
        myself: ActorRef<Self::Msg>,
        message: Self::Msg,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        match message {
            ResourceMsg::Call(call) => {
                // Served off the mailbox: one slow statement must not hold up the
                // others, and the pool (not the mailbox) bounds concurrency.
                let serve = call.serve(R::Shared::clone(&state.shared));
                state.calls.spawn(&myself, serve, |end| match end {
                    TaskEnd::Panicked(_) => Some(ResourceMsg::TaskFailed(end.unexpected("call"))),
                    TaskEnd::Returned(()) => None,
                });
            }
            ResourceMsg::Health(reply) => {
                let _ = reply.send(Health {
                    status: state.availability.status(),
                    pool: R::pool_stats(&state.shared),
                    calls_in_flight: state.calls.len(),
                    details: R::details(&state.shared),
                });
            }
            ResourceMsg::ConnectFailed(reason) => {
                return Err(Unrecoverable::new(reason).into());
            }
            ResourceMsg::TaskFailed(reason) => return Err(reason.into()),
        }
        Ok(())
    }

    async fn post_stop(
        &self,
        _myself: ActorRef<Self::Msg>,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        state.stop.cancel();
        state.connect = None;
        // Calls in flight finish, without further retries now that `stop` fired
        // (the supervisor kills us if that takes longer than its limit); the pool
        // closes when the state is dropped.
        state.calls.join().await;
        Ok(())
    }
}

/// Once connected: checks the server every `health_every` and keeps the status
/// (and so readiness) true to what the check finds, idle or not.
async fn watch_health<R: Resource>(
    shared: &R::Shared,
    availability: &Availability,
    cancel: &CancellationToken,
) {
    loop {
        tokio::select! {
            () = cancel.cancelled() => return,
            () = tokio::time::sleep(R::health_every(shared)) => {}
        }
        let started = std::time::Instant::now();
        let checked = tokio::select! {
            () = cancel.cancelled() => return,
            checked = R::check(shared) => checked,
        };
        let class = checked.as_ref().err().map(|_| "unreachable");
        R::call_stats(shared).record("health_check", started.elapsed(), class);
        match checked {
            Ok(()) => availability.mark_ready(),
            Err(why) => availability.mark_unreachable(&why),
        }
    }
}

async fn connect_loop<R: Resource>(
    shared: R::Shared,
    availability: Availability,
    stop: CancellationToken,
    actor: ActorRef<ResourceMsg<Call<R::Shared>>>,
) {
    let name = availability.probe().name().to_owned();
    let mut backoff = R::connect_backoff(&shared).sequence();
    let mut attempts = 0u32;
    let mut last_logged: Option<String> = None;
    loop {
        attempts += 1;
        let attempt = tokio::select! {
            () = stop.cancelled() => return,
            result = R::connect(&shared) => result,
        };
        let cause = match attempt {
            Ok(()) => {
                if attempts > 1 {
                    tracing::info!(resource = %name, attempts, "Reached the server after failed attempts.");
                }
                // Whatever an operator had to fix is fixed.
                availability.probe().set_detail("permanent", false);
                availability.mark_ready();
                watch_health::<R>(&shared, &availability, &stop).await;
                return;
            }
            Err(ConnectError::Fatal(cause)) => {
                availability.probe().record_error(&cause);
                let _ = actor.tell(ResourceMsg::ConnectFailed(cause));
                return;
            }
            Err(ConnectError::Retry(cause)) => {
                availability.probe().set_detail("permanent", false);
                // One line when the cause changes; the rest at debug level.
                if last_logged.as_deref() != Some(cause.as_str()) {
                    tracing::warn!(resource = %name, %cause, "Cannot reach the server; retrying.");
                    last_logged = Some(cause.clone());
                }
                cause
            }
            Err(ConnectError::Permanent { cause, fix }) => {
                availability.probe().set_detail("permanent", true);
                if last_logged.as_deref() != Some(cause.as_str()) {
                    tracing::error!(
                        resource = %name, %cause, fix,
                        "The server refuses Keel; retrying, but an operator must act."
                    );
                    last_logged = Some(cause.clone());
                }
                cause
            }
        };
        availability.mark_unreachable(&Unreachable::Said(cause.clone()));
        let delay = backoff.next_delay();
        tracing::debug!(resource = %name, %cause, attempts, retry_in = ?delay, "Connect attempt failed.");
        tokio::select! {
            () = stop.cancelled() => return,
            () = tokio::time::sleep(delay) => {}
        }
    }
}
