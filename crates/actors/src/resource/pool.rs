//! What both resource pools share: how they are built, the bb8 error sink that
//! records the real cause of a failed connect, the health check, and the pool
//! figures shown in health.

use std::ops::{Deref, DerefMut};
use std::time::{Duration, Instant};

use bb8::{ErrorSink, ManageConnection, Pool, RunError, State};

use super::availability::Unreachable;
use super::{Availability, PoolStats};

/// A pooled connection as both managers hand it out: one a failed call
/// condemned is never returned, and one handed back whole within `FRESH` goes
/// out again without the checkout's test round trip (as HikariCP's
/// `aliveBypassWindowMs`): the drivers' managers report no connection broken
/// by themselves, so bb8 tests every checkout, a round trip before each call.
#[derive(Debug)]
pub(super) struct Pooled<C> {
    conn: C,
    poisoned: bool,
    /// When it last came back to the pool whole.
    returned: Option<Instant>,
}

/// A connection handed back this recently is not tested again on checkout.
const FRESH: Duration = Duration::from_millis(500);

impl<C> Pooled<C> {
    pub(super) fn new(conn: C) -> Self {
        Self {
            conn,
            poisoned: false,
            returned: None,
        }
    }

    /// Never return this connection to the pool.
    pub(super) fn poison(&mut self) {
        self.poisoned = true;
    }

    /// For `is_valid`: whether it came back whole moments ago (asked once
    /// per checkout).
    pub(super) fn fresh(&mut self) -> bool {
        self.returned.take().is_some_and(|at| at.elapsed() < FRESH)
    }

    /// For `has_broken`: whether it must be dropped (poisoned, or `closed`
    /// as its driver sees it); else it is stamped as returned now.
    pub(super) fn broken(&mut self, closed: bool) -> bool {
        let broken = self.poisoned || closed;
        if !broken {
            self.returned = Some(Instant::now());
        }
        broken
    }
}

impl<C> Deref for Pooled<C> {
    type Target = C;

    fn deref(&self) -> &C {
        &self.conn
    }
}

impl<C> DerefMut for Pooled<C> {
    fn deref_mut(&mut self) -> &mut C {
        &mut self.conn
    }
}

/// Sends bb8's connection errors (refused, authentication failed, DNS) to the
/// registry and the log, instead of leaving callers with a bare "timed out";
/// classified as the connection attempt classifies them, so a cause an
/// operator must fix is never shown without saying so.
struct RecordErrors<E> {
    availability: Availability,
    /// What an operator must do about the error, when retrying cannot help.
    permanent: fn(&E) -> Option<&'static str>,
}

impl<E: std::error::Error + Send + 'static> ErrorSink<E> for RecordErrors<E> {
    fn sink(&self, error: E) {
        let permanent = (self.permanent)(&error).is_some();
        self.availability.probe().set_detail("permanent", permanent);
        self.availability
            .mark_unreachable(&Unreachable::Said(super::describe(&error)));
    }

    fn boxed_clone(&self) -> Box<dyn ErrorSink<E>> {
        Box::new(RecordErrors {
            availability: self.availability.clone(),
            permanent: self.permanent,
        })
    }
}

impl<E> std::fmt::Debug for RecordErrors<E> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RecordErrors").finish_non_exhaustive()
    }
}

/// A pool that connects lazily (a server down at start fails nothing), tests a
/// connection on checkout (neither driver's manager marks one broken by
/// itself; PostgreSQL's skips the round trip for one handed back moments
/// ago, see `pg::manager`), and records why connects fail.
pub(super) fn build<M>(
    manager: M,
    max_size: u32,
    checkout_timeout: Duration,
    availability: &Availability,
    permanent: fn(&M::Error) -> Option<&'static str>,
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
        .error_sink(Box::new(RecordErrors {
            availability: availability.clone(),
            permanent,
        }))
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

#[cfg(test)]
mod tests {
    use super::*;
    use keel_core::registry::{ActorKind, Registry};

    fn refused_for_good(e: &std::io::Error) -> Option<&'static str> {
        (e.kind() == std::io::ErrorKind::PermissionDenied).then_some("let Keel in")
    }

    /// A failed connect the pool meets first (a command's checkout) is shown
    /// classified, as the connection attempt would show it: never a cause an
    /// operator must fix without saying so.
    #[test]
    fn the_pool_classifies_the_causes_it_records() {
        let registry = Registry::default();
        let probe = registry
            .register("redis", ActorKind::Resource, None)
            .unwrap();
        let sink = RecordErrors {
            availability: Availability::new(&probe),
            permanent: refused_for_good,
        };
        // Records one error; the cause it shows and whether it says permanent.
        let record = |sink: &dyn ErrorSink<std::io::Error>, kind, text: &str| {
            sink.sink(std::io::Error::new(kind, text));
            let details = registry.snapshot().actors[0].details.clone();
            let cause = details["cause"].as_str().unwrap_or_default().to_owned();
            assert!(cause.contains(text), "{cause}");
            details["permanent"].clone()
        };
        let denied = std::io::ErrorKind::PermissionDenied;
        assert_eq!(record(&sink, denied, "authentication failed"), true);
        let refused = std::io::ErrorKind::ConnectionRefused;
        assert_eq!(
            record(&*sink.boxed_clone(), refused, "connection refused"),
            false
        );
    }
}
