//! What an actor is and where it stands: the vocabulary the registry's entries
//! and snapshots share.

use std::time::SystemTime;

use serde::{Deserialize, Serialize};

/// What role an actor plays in the tree, which decides when it starts and stops.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ActorKind {
    /// A supervisor: owns and restarts other actors.
    Supervisor,
    /// Owns a connection pool (PostgreSQL, Redis); starts first, stops last.
    Resource,
    /// A long-running service; drained before any resource stops.
    Worker,
    /// A run-once job hosted by the tree.
    Task,
}

/// Where an actor is in its lifecycle.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ActorState {
    /// Being spawned; `pre_start` has not returned yet.
    Starting,
    /// Handling messages.
    Running,
    /// Failed and waiting for its restart delay.
    Restarting,
    /// Asked to drain: finishing what it holds before it stops.
    Draining,
    /// Ended and will not be restarted (normal exit or shutdown).
    Stopped,
    /// Ended abnormally and will not be restarted.
    Failed,
}

impl ActorState {
    /// The state as the admin API writes it (`running`, `restarting`, ...).
    pub fn as_str(self) -> &'static str {
        match self {
            ActorState::Starting => "starting",
            ActorState::Running => "running",
            ActorState::Restarting => "restarting",
            ActorState::Draining => "draining",
            ActorState::Stopped => "stopped",
            ActorState::Failed => "failed",
        }
    }
}

/// Why and when an actor last failed.
#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
pub struct Failure {
    /// The error or panic message.
    pub reason: String,
    /// When the failure was observed.
    #[serde(with = "humantime_serde")]
    pub at: SystemTime,
}
