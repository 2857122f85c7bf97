//! What both resource pools share: how they are built, the bb8 error sink that
//! records the real cause of a failed connect, the health check, and the pool
//! figures shown in health.

use std::time::Duration;

use bb8::{ErrorSink, ManageConnection, Pool, RunError, State};

use super::availability::Unreachable;
use super::{Availability, PoolStats};

/// Sends bb8's connection errors (refused, authentication failed, DNS) to the
/// registry and the log, instead of leaving callers with a bare "timed out".
#[derive(Debug, Clone)]
struct RecordErrors(Availability);

impl<E: std::error::Error + Send + 'static> ErrorSink<E> for RecordErrors {
    fn sink(&self, error: E) {
        self.0
            .mark_unreachable(&Unreachable::Said(super::describe(&error)));
    }

    fn boxed_clone(&self) -> Box<dyn ErrorSink<E>> {
        Box::new(self.clone())
    }
}

/// A pool that connects lazily (a server down at start fails nothing), tests a
/// connection on checkout (neither manager marks one broken by itself), and
/// records why connects fail.
pub(super) fn build<M>(
    manager: M,
    max_size: u32,
    checkout_timeout: Duration,
    availability: &Availability,
) -> Pool<M>
where
    M: ManageConnection,
    M::Error: std::error::Error + 'static,
{
    Pool::builder()
        .max_size(max_size)
        .connection_timeout(checkout_timeout)
        .test_on_check_out(true)
        // A failed connect fails the checkout at once with what the server said,
        // instead of retrying it until the checkout times out: the caller's
        // retry policy (or ride-out) decides what happens next.
        .retry_connection(false)
        .error_sink(Box::new(RecordErrors(availability.clone())))
        .build_unchecked(manager)
}

/// One health check: a checkout, which the pool validates (`test_on_check_out`);
/// the error says why it failed.
pub(super) async fn check<M>(pool: &Pool<M>) -> Result<(), Unreachable>
where
    M: ManageConnection,
    M::Error: std::error::Error + 'static,
{
    pool.get().await.map(drop).map_err(|e| match e {
        RunError::User(e) => Unreachable::Said(super::describe(&e)),
        RunError::TimedOut => Unreachable::CheckoutTimedOut,
    })
}

/// Health's pool figures from bb8's state.
pub(super) fn stats(state: State, max_size: u32) -> PoolStats {
    PoolStats {
        connections: state.connections,
        idle: state.idle_connections,
        max_size,
        waited: state.statistics.get_waited,
        timed_out: state.statistics.get_timed_out,
    }
}
