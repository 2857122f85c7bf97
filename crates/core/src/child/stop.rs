//! Stopping one incarnation: signal it, drain it within a limit, kill it after.

use std::time::{Duration, Instant};

use ractor::ActorCell;
use serde::Serialize;
use tokio_util::sync::CancellationToken;

/// How long a killed actor gets to be gone before we stop waiting for it.
const KILL_GRACE: Duration = Duration::from_secs(2);

/// How one child stopped.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case", tag = "outcome")]
pub enum StopOutcome {
    /// It drained (finished its queue and flushed in `post_stop`) in time.
    Drained {
        /// How long the drain took.
        #[serde(with = "humantime_serde")]
        took: Duration,
    },
    /// It did not finish within its own shutdown timeout and was killed.
    KilledAfterTimeout {
        /// The timeout it exceeded.
        #[serde(with = "humantime_serde")]
        timeout: Duration,
    },
    /// It was still running when the shutdown deadline passed and was killed.
    KilledAtDeadline {
        /// How long it had been draining.
        #[serde(with = "humantime_serde")]
        after: Duration,
    },
    /// The operator asked to skip the drain (a second SIGINT), so it was killed.
    KilledOnRequest,
    /// It had already ended (or was waiting to restart), so there was nothing to stop.
    NotRunning,
}

impl StopOutcome {
    /// Whether the child was killed rather than drained.
    pub fn was_killed(&self) -> bool {
        matches!(
            self,
            StopOutcome::KilledAfterTimeout { .. }
                | StopOutcome::KilledAtDeadline { .. }
                | StopOutcome::KilledOnRequest
        )
    }
}

/// When a stop gives up on draining.
#[derive(Clone, Copy, Debug)]
pub(super) struct Limit {
    /// The child's own shutdown timeout.
    pub(super) timeout: Duration,
    /// The shutdown's deadline, when one is running.
    pub(super) deadline: Option<Instant>,
}

/// Signals `stop`, drains `cell` (its queued messages are handled, then its
/// `post_stop` flushes) and waits within `limit`; kills it when the limit passes
/// or `skip_drain` fires.
pub(super) async fn stop_cell(
    name: &str,
    cell: &ActorCell,
    stop: &CancellationToken,
    limit: Limit,
    skip_drain: &CancellationToken,
) -> StopOutcome {
    stop.cancel();
    if skip_drain.is_cancelled() {
        kill(name, cell, "drain skipped on request").await;
        return StopOutcome::KilledOnRequest;
    }
    let started = Instant::now();
    let by_timeout = started + limit.timeout;
    let (until, at_deadline) = match limit.deadline {
        Some(deadline) if deadline < by_timeout => (deadline, true),
        _ => (by_timeout, false),
    };
    let wait = until.saturating_duration_since(started);
    // An error means its mailbox is already closed: it is on its way out by
    // itself, and waiting for it is all there is to do.
    let _ = cell.drain();
    tokio::select! {
        waited = cell.wait(Some(wait)) => match waited {
            Ok(()) => StopOutcome::Drained { took: started.elapsed() },
            Err(_) if at_deadline => {
                kill(name, cell, "the shutdown deadline passed").await;
                StopOutcome::KilledAtDeadline { after: started.elapsed() }
            }
            Err(_) => {
                kill(name, cell, "drain timed out").await;
                StopOutcome::KilledAfterTimeout { timeout: limit.timeout }
            }
        },
        () = skip_drain.cancelled() => {
            kill(name, cell, "drain skipped on request").await;
            StopOutcome::KilledOnRequest
        }
    }
}

async fn kill(name: &str, cell: &ActorCell, why: &str) {
    tracing::warn!(child = %name, why, "Killing child; anything it still held is lost.");
    if cell.kill_and_wait(Some(KILL_GRACE)).await.is_err() {
        tracing::error!(child = %name, "Killed child did not exit within the grace period.");
    }
}
