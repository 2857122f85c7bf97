//! The one lifecycle both resource actors share.

use crate::mailbox::Tell;
use std::future::Future;
use std::marker::PhantomData;
use std::sync::Arc;
use std::time::Duration;

use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort};
use serde::Serialize;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::child::Unrecoverable;
use crate::delay::BackoffConfig;
use crate::recorded::Recordable;
use crate::registry::Probe;

use super::{Availability, CallStats};

/// Whether a resource can reach its server.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
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
    /// Pool figures.
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
    /// Cannot succeed by retrying (a migration that fails, a schema conflict):
    /// the actor fails with [`Unrecoverable`].
    Fatal(String),
}

/// What distinguishes one resource from another; [`ResourceActor`] does the rest.
pub trait Resource: Send + Sync + Sized + 'static {
    /// Typed operations callers send.
    type Call: Recordable + Send + 'static;
    /// Everything a call needs (the pool and its policy); cheap to clone.
    type Shared: Clone + Send + Sync + 'static;

    /// Builds the pool without any I/O.
    fn open(self, availability: Availability) -> Result<Self::Shared, ActorProcessingErr>;

    /// How long to wait between connect attempts.
    fn connect_backoff(shared: &Self::Shared) -> BackoffConfig;

    /// One connect attempt: reach the server and prepare it (migrations).
    fn connect(shared: &Self::Shared) -> impl Future<Output = Result<(), ConnectError>> + Send;

    /// How often to check, once connected, that the server is still there.
    fn health_every(shared: &Self::Shared) -> Duration;

    /// One check that the server answers (a validated pool checkout); the error
    /// says why not.
    fn check(shared: &Self::Shared) -> impl Future<Output = Result<(), String>> + Send;

    /// Serves one call to completion, replying through the call's own port.
    fn serve(shared: Self::Shared, call: Self::Call) -> impl Future<Output = ()> + Send;

    /// Pool figures.
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
}

impl<C: Recordable> Recordable for ResourceMsg<C> {
    fn kind(&self) -> &'static str {
        match self {
            ResourceMsg::Call(call) => call.kind(),
            ResourceMsg::Health(_) => "Health",
            ResourceMsg::ConnectFailed(_) => "ConnectFailed",
        }
    }

    fn summary(&self) -> String {
        match self {
            ResourceMsg::Call(call) => call.summary(),
            ResourceMsg::Health(_) => "health probe".into(),
            ResourceMsg::ConnectFailed(reason) => reason.clone(),
        }
    }
}

/// A resource actor: PostgreSQL is `ResourceActor<Postgres>`, Redis is
/// `ResourceActor<Redis>`.
#[derive(Debug)]
pub struct ResourceActor<R>(PhantomData<fn() -> R>);

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
    calls: TaskTracker,
    connecting: CancellationToken,
}

/// Stops the connect loop even when the actor is killed and `post_stop` never runs.
impl<S> Drop for ResourceState<S> {
    fn drop(&mut self) {
        self.connecting.cancel();
    }
}

impl<R: Resource> Actor for ResourceActor<R> {
    type Msg = ResourceMsg<R::Call>;
    type State = ResourceState<R::Shared>;
    type Arguments = (R, Probe);

    async fn pre_start(
        &self,
        _myself: ActorRef<Self::Msg>,
        (resource, probe): (R, Probe),
    ) -> Result<Self::State, ActorProcessingErr> {
        let availability = Availability::new(probe.clone());
        let shared = Arc::new(resource.open(availability.clone())?);
        let weak = Arc::downgrade(&shared);
        probe.set_live_detail("pool", move || {
            let shared = weak.upgrade()?;
            let mut pool = serde_json::to_value(R::pool_stats(&shared)).ok()?;
            pool["waiting"] = R::call_stats(&shared).waiting_callers().into();
            Some(pool)
        });
        let weak = Arc::downgrade(&shared);
        probe.set_live_detail("calls", move || {
            let shared = weak.upgrade()?;
            Some(R::call_stats(&shared).ops_json())
        });
        Ok(ResourceState {
            shared,
            availability,
            calls: TaskTracker::new(),
            connecting: CancellationToken::new(),
        })
    }

    async fn post_start(
        &self,
        myself: ActorRef<Self::Msg>,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        tokio::spawn(connect_loop::<R>(
            R::Shared::clone(&state.shared),
            state.availability.clone(),
            state.connecting.clone(),
            myself,
        ));
        Ok(())
    }

    async fn handle(
        &self,
        _myself: ActorRef<Self::Msg>,
        message: Self::Msg,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        match message {
            ResourceMsg::Call(call) => {
                // Served off the mailbox: one slow statement must not hold up the
                // others, and the pool (not the mailbox) bounds concurrency.
                state
                    .calls
                    .spawn(R::serve(R::Shared::clone(&state.shared), call));
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
        }
        Ok(())
    }

    async fn post_stop(
        &self,
        _myself: ActorRef<Self::Msg>,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        state.connecting.cancel();
        // Calls in flight finish (the supervisor kills us if that takes longer than
        // the shutdown timeout); the pool closes when the state is dropped.
        state.calls.close();
        state.calls.wait().await;
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
            Err(cause) => availability.mark_unreachable(&cause),
        }
    }
}

async fn connect_loop<R: Resource>(
    shared: R::Shared,
    availability: Availability,
    cancel: CancellationToken,
    actor: ActorRef<ResourceMsg<R::Call>>,
) {
    let mut backoff = R::connect_backoff(&shared).sequence();
    loop {
        let attempt = tokio::select! {
            () = cancel.cancelled() => return,
            result = R::connect(&shared) => result,
        };
        match attempt {
            Ok(()) => {
                availability.mark_ready();
                watch_health::<R>(&shared, &availability, &cancel).await;
                return;
            }
            Err(ConnectError::Retry(cause)) => {
                availability.mark_unreachable(&cause);
                let delay = backoff.next_delay();
                // One line per attempt; the growing delay bounds the volume.
                tracing::warn!(
                    resource = %availability.probe().name(), %cause,
                    retry_in = %humantime::format_duration(delay),
                    "Cannot reach the server; retrying."
                );
                tokio::select! {
                    () = cancel.cancelled() => return,
                    () = tokio::time::sleep(delay) => {}
                }
            }
            Err(ConnectError::Fatal(cause)) => {
                availability.probe().record_error(&cause);
                let _ = actor.tell(ResourceMsg::ConnectFailed(cause));
                return;
            }
        }
    }
}
