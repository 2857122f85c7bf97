//! Riding out a resource's outage: a caller whose resource cannot serve right now
//! (unreachable, circuit open, restarting) waits for it instead of failing, so an
//! outage never spends the tree's restart intensity.
//!
//! The resource actor owns reconnecting; a waiting caller only watches the
//! resource's readiness in the registry (see
//! [`keel_core::registry::Registry::ready`]) and tries its call again once the
//! resource says it is back, never sooner than a growing delay. It stops waiting
//! the moment its own incarnation is asked to stop, so a shutdown is never held up
//! by an outage.

use std::fmt::Display;
use std::future::Future;
use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;

use keel_core::child::Incarnation;
use keel_core::delay::BackoffConfig;
use keel_core::registry::{Probe, Registry};

/// What a failed call says about its resource.
pub trait CallError: Display {
    /// `Some(not_before)` when the call failed because the resource cannot serve
    /// right now and the same call may succeed once it is back, not earlier than
    /// `not_before`; `None` when the call itself is at fault.
    fn outage(&self) -> Option<Duration>;
}

/// Delays between tries of one call while its resource is out (on top of waiting
/// for it to say it is ready).
fn wait_policy() -> BackoffConfig {
    BackoffConfig {
        min: Duration::from_millis(100),
        max: Duration::from_secs(5),
        multiplier: 2.0,
        jitter: 0.2,
    }
}

/// A caller that waits out outages of the resources it calls.
#[derive(Clone, Debug)]
pub struct RideOut {
    caller: Probe,
    stop: CancellationToken,
}

impl RideOut {
    /// Waits on behalf of `caller`, until its incarnation is asked to stop.
    pub fn new(caller: &Incarnation) -> Self {
        Self::until(caller.probe.clone(), caller.stop.clone())
    }

    /// Waits on behalf of `caller` until `stop` fires.
    pub fn until(caller: Probe, stop: CancellationToken) -> Self {
        Self { caller, stop }
    }

    /// Sleeps `delay`, then waits until `resource` says it is ready; false when
    /// `stop` fired first.
    async fn wait(&self, registry: &Registry, resource: &str, delay: Duration) -> bool {
        let ready = async {
            tokio::time::sleep(delay).await;
            if let Some(mut ready) = registry.ready(resource) {
                // An error means the entry is gone; the next try will say so.
                let _ = ready.wait_for(|r| *r).await;
            }
        };
        tokio::select! {
            () = self.stop.cancelled() => false,
            () = ready => true,
        }
    }
}

/// Runs `attempt`; while it fails with an outage and `ride` is given, waits for
/// `resource` and tries again. Without `ride`, the first outcome is returned.
pub(crate) async fn riding_out<T, E, F, Fut>(
    registry: &Registry,
    resource: &str,
    ride: Option<&RideOut>,
    mut attempt: F,
) -> Result<T, E>
where
    E: CallError,
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, E>>,
{
    let mut result = attempt().await;
    let Some(ride) = ride else {
        return result;
    };
    let mut episode: Option<(Instant, keel_core::delay::Backoff)> = None;
    while let Some((hint, error)) = outage(&result, ride) {
        let (_, backoff) = episode.get_or_insert_with(|| {
            tracing::warn!(
                caller = %ride.caller.name(), resource, %error,
                "Resource unavailable; waiting for it."
            );
            ride.caller.set_detail(
                "waiting_for",
                serde_json::json!({ "resource": resource, "cause": error.to_string() }),
            );
            (Instant::now(), wait_policy().sequence())
        });
        let delay = hint.max(backoff.next_delay());
        if !ride.wait(registry, resource, delay).await {
            break;
        }
        result = attempt().await;
    }
    if let Some((since, _)) = episode {
        ride.caller.clear_detail("waiting_for");
        if result.is_ok() {
            tracing::info!(
                caller = %ride.caller.name(), resource,
                waited = %humantime::format_duration(round_ms(since.elapsed())),
                "Resource back; resuming."
            );
        }
    }
    result
}

/// The outage `result` failed with, if waiting for it is the thing to do.
fn outage<'r, T, E: CallError>(
    result: &'r Result<T, E>,
    ride: &RideOut,
) -> Option<(Duration, &'r E)> {
    let error = result.as_ref().err()?;
    let hint = error.outage()?;
    (!ride.stop.is_cancelled()).then_some((hint, error))
}

fn round_ms(d: Duration) -> Duration {
    Duration::from_millis(d.as_millis().try_into().unwrap_or(u64::MAX))
}
