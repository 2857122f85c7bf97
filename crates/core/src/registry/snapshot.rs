//! Point-in-time copies of the registry, as served to operators.

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime};

use serde::Serialize;

use super::state::{ActorKind, ActorState, Failure};
use crate::stats::{Handle, Samples};

/// Every actor of a tree at one moment.
#[derive(Clone, Debug, Serialize)]
pub struct TreeSnapshot {
    /// Actors in registration order (parents before their children).
    pub actors: Vec<ActorSnapshot>,
}

impl TreeSnapshot {
    /// The actor named `name`, if the tree has one.
    pub fn actor(&self, name: &str) -> Option<&ActorSnapshot> {
        self.actors.iter().find(|a| a.name == name)
    }

    /// The names of `parent`'s direct children, in registration order.
    pub fn children_of(&self, parent: &str) -> Vec<&str> {
        self.actors
            .iter()
            .filter(|a| a.parent.as_deref() == Some(parent))
            .map(|a| a.name.as_str())
            .collect()
    }
}

/// Whether an actor that says when it can serve (a resource reaching its
/// server) can serve now, and if not, why.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Serving {
    /// It can.
    Ready,
    /// It cannot yet (connecting, or reconnecting after an outage).
    Waiting {
        /// What the server or the OS said, when something did.
        cause: Option<String>,
    },
}

/// One actor at one moment.
#[derive(Clone, Debug, Serialize)]
pub struct ActorSnapshot {
    /// Unique name within the tree.
    pub name: String,
    /// Role in the tree.
    pub kind: ActorKind,
    /// The supervisor that owns it; `None` for the root.
    pub parent: Option<String>,
    #[serde(skip)]
    pub(super) order: u64,
    /// Lifecycle state.
    pub state: ActorState,
    /// How many times it was restarted.
    pub restarts: u32,
    /// The most recent failure or error it reported.
    pub last_failure: Option<Failure>,
    /// When the current incarnation started running.
    #[serde(with = "humantime_serde")]
    pub running_since: Option<SystemTime>,
    /// How long the current incarnation has been running.
    #[serde(with = "humantime_serde")]
    pub uptime: Option<Duration>,
    /// Messages handled across all incarnations.
    pub messages_handled: u64,
    /// Messages waiting in its mailbox now (counted by Keel's sends).
    pub mailbox_depth: u64,
    /// Actor-specific status (pool state, breaker, lag, ...).
    pub details: BTreeMap<String, serde_json::Value>,
    /// Whether it can serve now, for an actor that says so (a resource: `None`
    /// for one that never does).
    #[serde(skip)]
    pub serving: Option<Serving>,
    /// The typed stats behind its live details, for `/metrics`.
    #[serde(skip)]
    pub stats: Vec<Handle>,
}

impl ActorSnapshot {
    /// Adds every sample its stats export to `out`.
    pub fn export(&self, out: &mut Samples) {
        for Handle(stats) in &self.stats {
            stats.export(&self.name, out);
        }
    }
}
