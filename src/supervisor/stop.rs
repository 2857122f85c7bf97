//! Stopping one child: drain within a timeout, kill after it.

use std::time::{Duration, Instant};

use ractor::ActorCell;
use tokio_util::sync::CancellationToken;

use super::StopOutcome;

/// How long a killed actor gets to be gone before we stop waiting for it.
const KILL_GRACE: Duration = Duration::from_secs(5);

/// Drains `cell` (its queued messages are handled, then its `post_stop` flushes) and
/// waits up to `timeout`; kills it when the timeout passes or `skip_drain` fires.
pub(super) async fn stop_child(
    name: &str,
    cell: &ActorCell,
    timeout: Duration,
    skip_drain: &CancellationToken,
) -> StopOutcome {
    if skip_drain.is_cancelled() {
        kill(name, cell, "drain skipped on request").await;
        return StopOutcome::KilledOnRequest;
    }
    let started = Instant::now();
    if cell.drain().is_err() {
        // Its mailbox is already closed: it is on its way out by itself.
        let _ = cell.wait(Some(timeout)).await;
        return StopOutcome::Drained {
            took: started.elapsed(),
        };
    }
    tokio::select! {
        waited = cell.wait(Some(timeout)) => match waited {
            Ok(()) => StopOutcome::Drained { took: started.elapsed() },
            Err(_) => {
                kill(name, cell, "drain timed out").await;
                StopOutcome::KilledAfterTimeout { timeout }
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
