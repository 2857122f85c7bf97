//! Child specifications: what the supervisor starts, and how it treats each child.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use crate::child::ChildFactory;
use crate::registry::ActorKind;
use serde::{Deserialize, Serialize};

/// When a child that ended is started again (Erlang/OTP meanings).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Restart {
    /// Always restarted, whatever the reason it ended.
    Permanent,
    /// Restarted only when it ended abnormally (an error or a panic).
    Transient,
    /// Never restarted.
    Temporary,
}

/// Which children restart when one of them fails (Erlang/OTP meanings).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Strategy {
    /// Only the failed child.
    #[default]
    OneForOne,
    /// Every child: the others are drained in reverse order, then all restart in order.
    OneForAll,
    /// The failed child and every child started after it.
    RestForOne,
}

/// When a child stops during a shutdown: producers first, so what they produced
/// can still be consumed; then consumers; then the resources both use. Children
/// of one stage stop concurrently.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Stage {
    /// Takes input in (the receiver, the scheduler's tasks).
    Producer,
    /// Moves what producers made to its destination (the distributor, the analyzer).
    Consumer,
    /// Owns a pool; stops last.
    Resource,
}

/// One child of a supervisor.
#[derive(Clone)]
pub struct ChildSpec {
    /// Unique name in the tree's registry.
    pub name: String,
    /// Resources start before, and stop after, every worker and task.
    pub kind: ActorKind,
    /// When it stops during a shutdown.
    pub stage: Stage,
    /// When it is restarted.
    pub restart: Restart,
    /// How long it may take to drain; the supervisor's default when `None`.
    pub shutdown_timeout: Option<Duration>,
    /// Starts each incarnation.
    pub factory: Arc<dyn ChildFactory>,
}

impl fmt::Debug for ChildSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ChildSpec")
            .field("name", &self.name)
            .field("kind", &self.kind)
            .field("stage", &self.stage)
            .field("restart", &self.restart)
            .field("shutdown_timeout", &self.shutdown_timeout)
            .finish_non_exhaustive()
    }
}

impl ChildSpec {
    /// A permanent resource actor (a pool owner).
    pub fn resource(name: impl Into<String>, factory: impl ChildFactory) -> Self {
        Self::new(name, ActorKind::Resource, Restart::Permanent, factory)
    }

    /// A permanent long-running worker; a consumer unless marked otherwise
    /// ([`ChildSpec::producer`]).
    pub fn worker(name: impl Into<String>, factory: impl ChildFactory) -> Self {
        Self::new(name, ActorKind::Worker, Restart::Permanent, factory)
    }

    /// A run-once task: restarted after a failure, done after a normal exit. It
    /// stops with the producers.
    pub fn task(name: impl Into<String>, factory: impl ChildFactory) -> Self {
        Self::new(name, ActorKind::Task, Restart::Transient, factory)
    }

    /// Marks a worker as a producer: it stops first at a shutdown.
    pub fn producer(mut self) -> Self {
        if self.kind != ActorKind::Resource {
            self.stage = Stage::Producer;
        }
        self
    }

    fn new(
        name: impl Into<String>,
        kind: ActorKind,
        restart: Restart,
        factory: impl ChildFactory,
    ) -> Self {
        let stage = match kind {
            ActorKind::Resource => Stage::Resource,
            ActorKind::Task => Stage::Producer,
            ActorKind::Worker | ActorKind::Supervisor => Stage::Consumer,
        };
        Self {
            name: name.into(),
            kind,
            stage,
            restart,
            shutdown_timeout: None,
            factory: Arc::new(factory),
        }
    }

    /// Overrides the restart type.
    pub fn with_restart(mut self, restart: Restart) -> Self {
        self.restart = restart;
        self
    }

    /// Overrides the drain timeout (see [`super::SupervisorConfig::shutdown_timeout`]).
    pub fn with_shutdown_timeout(mut self, timeout: Duration) -> Self {
        self.shutdown_timeout = Some(timeout);
        self
    }
}
