//! What a shutdown did: who stopped, in what order, how long each drain took, and
//! what had to be killed.

use std::time::Duration;

pub use crate::child::StopOutcome;
use crate::registry::ActorKind;
use serde::Serialize;

/// One child's line in a [`ShutdownReport`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct StoppedChild {
    /// The child's name.
    pub name: String,
    /// Whether it is a resource, a worker or a task.
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

    /// Whether every child drained (nothing had to be killed).
    pub fn drained(&self) -> bool {
        self.killed().next().is_none()
    }

    /// The position of `name` in the stop order.
    pub fn position(&self, name: &str) -> Option<usize> {
        self.stopped.iter().position(|c| c.name == name)
    }
}
