//! How workers reach a resource actor: by name in the registry, so a caller
//! always reaches the current incarnation and restarts are invisible to it.

use std::fmt;
use std::marker::PhantomData;

use keel_core::mailbox::Tell;
use keel_core::registry::Registry;
use ractor::rpc::CallResult;
use ractor::ActorRef;

use super::outage::{riding_out, CallError, RideOut};
use super::{Call, Execute, Health, ResourceMsg};

/// The resource actor is not running (not started yet, restarting, or stopped).
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
#[error("resource actor `{0}` is not running")]
pub struct NotRunning(pub String);

/// A handle on the resource actor registered under a name, whose calls run on
/// shared state `S` ([`PgClient`](super::pg::PgClient) and
/// [`RedisClient`](super::redis::RedisClient)). Each operation file adds its
/// method to the client of its resource.
///
/// A client made with [`Client::riding_out`] waits out an outage of its resource
/// (unreachable, circuit open, restarting) instead of failing with it.
pub struct Client<S> {
    registry: Registry,
    name: String,
    ride: Option<RideOut>,
    shared: PhantomData<fn() -> S>,
}

impl<S> Clone for Client<S> {
    fn clone(&self) -> Self {
        Self {
            registry: self.registry.clone(),
            name: self.name.clone(),
            ride: self.ride.clone(),
            shared: PhantomData,
        }
    }
}

impl<S> fmt::Debug for Client<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Client")
            .field("name", &self.name)
            .field("riding_out", &self.ride.is_some())
            .finish()
    }
}

impl<S: Send + Sync + 'static> Client<S> {
    /// A client for the resource actor registered as `name`.
    pub fn new(registry: Registry, name: impl Into<String>) -> Self {
        Self {
            registry,
            name: name.into(),
            ride: None,
            shared: PhantomData,
        }
    }

    /// The registry name of its resource.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The registry it finds its resource in.
    pub fn registry(&self) -> &Registry {
        &self.registry
    }

    /// The same client, waiting out outages on behalf of `ride`'s caller.
    pub fn riding_out(mut self, ride: RideOut) -> Self {
        self.ride = Some(ride);
        self
    }

    /// The same client, failing at once with an outage.
    pub fn plain(&self) -> Self {
        Self {
            ride: None,
            ..self.clone()
        }
    }

    /// Whether the resource says it reaches its server now.
    pub fn is_ready(&self) -> bool {
        self.registry
            .ready(&self.name)
            .is_some_and(|ready| *ready.borrow())
    }

    /// Sends `op` and waits for its answer (through the outage, if riding out).
    /// No messaging timeout is set: each resource bounds its own calls
    /// (checkout timeout, retry budget, breaker).
    pub async fn run<O>(&self, op: O) -> Result<O::Output, O::Error>
    where
        O: Execute<S> + Clone,
        O::Error: CallError + From<NotRunning>,
    {
        riding_out(&self.registry, &self.name, self.ride.as_ref(), || {
            self.send(op.clone())
        })
        .await
    }

    async fn send<O>(&self, op: O) -> Result<O::Output, O::Error>
    where
        O: Execute<S>,
        O::Error: From<NotRunning>,
    {
        let not_running = || O::Error::from(NotRunning(self.name.clone()));
        let cell = self.registry.cell(&self.name).ok_or_else(not_running)?;
        let actor: ActorRef<ResourceMsg<Call<S>>> = cell.into();
        match actor
            .ask(|reply| ResourceMsg::Call(Call::new(op, reply)), None)
            .await
        {
            Ok(CallResult::Success(result)) => result,
            _ => Err(not_running()),
        }
    }

    /// Status, pool figures and the resource's counters (no I/O).
    pub async fn health(&self) -> Result<Health, NotRunning> {
        let not_running = || NotRunning(self.name.clone());
        let cell = self.registry.cell(&self.name).ok_or_else(not_running)?;
        let actor: ActorRef<ResourceMsg<Call<S>>> = cell.into();
        match actor.ask(ResourceMsg::Health, None).await {
            Ok(CallResult::Success(health)) => Ok(health),
            _ => Err(not_running()),
        }
    }
}
