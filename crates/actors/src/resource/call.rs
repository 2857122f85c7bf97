//! Request/response to a resource actor, found by name in the registry so a
//! caller always reaches the current incarnation.

use keel_core::mailbox::Tell;
use ractor::rpc::CallResult;
use ractor::{ActorRef, RpcReplyPort};

use keel_core::registry::Registry;

use super::ResourceMsg;

/// The resource actor is not running (not started yet, restarting, or stopped).
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
#[error("resource actor `{0}` is not running")]
pub struct NotRunning(pub String);

/// Sends the call built by `make` to the resource actor `name` and waits for its
/// answer. No messaging timeout is set: each resource bounds its own calls
/// (checkout timeout, retry budget, breaker).
pub async fn call<C, T, E>(
    registry: &Registry,
    name: &str,
    make: impl FnOnce(RpcReplyPort<Result<T, E>>) -> C,
) -> Result<T, E>
where
    C: Send + 'static,
    T: Send + 'static,
    E: From<NotRunning> + Send + 'static,
{
    let not_running = || E::from(NotRunning(name.to_owned()));
    let cell = registry.cell(name).ok_or_else(not_running)?;
    let actor: ActorRef<ResourceMsg<C>> = cell.into();
    match actor
        .ask(|reply| ResourceMsg::Call(make(reply)), None)
        .await
    {
        Ok(CallResult::Success(result)) => result,
        _ => Err(not_running()),
    }
}

/// The health of resource actor `name` (status, pool figures, counters).
pub async fn health<C: Send + 'static>(
    registry: &Registry,
    name: &str,
) -> Result<super::Health, NotRunning> {
    let not_running = || NotRunning(name.to_owned());
    let cell = registry.cell(name).ok_or_else(not_running)?;
    let actor: ActorRef<ResourceMsg<C>> = cell.into();
    match actor.ask(ResourceMsg::Health, None).await {
        Ok(CallResult::Success(health)) => Ok(health),
        _ => Err(not_running()),
    }
}
