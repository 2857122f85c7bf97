//! What a shutdown did: who stopped, in what order, how long each drain took, and
//! what had to be killed.

use std::time::Duration;

use keel_actors::registry::ActorKind;
use serde::Serialize;

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
    /// It did not finish within its shutdown timeout and was killed.
    KilledAfterTimeout {
        /// The timeout it exceeded.
        #[serde(with = "humantime_serde")]
        timeout: Duration,
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
            StopOutcome::KilledAfterTimeout { .. } | StopOutcome::KilledOnRequest
        )
    }
}

/// One child's line in a [`ShutdownReport`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct StoppedChild {
    /// The child's name.
    pub name: String,
    /// Its kind.
    pub kind: ActorKind,
    /// How it stopped.
    #[serde(flatten)]
    pub outcome: StopOutcome,
}

/// Every child of the tree in the order it was stopped.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct ShutdownReport {
    /// Children in stop order: workers and tasks first, then resources.
    pub stopped: Vec<StoppedChild>,
    /// Wall time of the whole shutdown.
    #[serde(with = "humantime_serde")]
    pub took: Duration,
}

impl ShutdownReport {
    /// The children that had to be killed.
    pub fn killed(&self) -> impl Iterator<Item = &StoppedChild> {
        self.stopped.iter().filter(|c| c.outcome.was_killed())
    }

    /// The position of `name` in the stop order.
    pub fn position(&self, name: &str) -> Option<usize> {
        self.stopped.iter().position(|c| c.name == name)
    }
}
