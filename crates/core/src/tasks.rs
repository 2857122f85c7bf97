//! Tasks an actor owns: stopped with it, and never dying unseen.
//!
//! An actor that runs work beside its mailbox (a socket read loop, a publisher,
//! the calls a resource serves) spawns it through [`OwnedTask::spawn`] or
//! [`Tasks::spawn`] and keeps the handle in its state. Dropping the handle aborts
//! the task, so it ends when the actor stops, fails or is killed (a kill skips
//! `post_stop`, but the state is still dropped). When a task ends by itself, by
//! returning or by panicking, its `report` closure turns the outcome into a
//! message for the actor, so a panic fails the actor and the supervisor sees it.

use std::any::Any;
use std::future::Future;
use std::panic::AssertUnwindSafe;

use futures::FutureExt as _;
use ractor::{ActorRef, Message};
use tokio_util::task::AbortOnDropHandle;

use crate::mailbox::Tell;

/// How an owned task ended, when it was not aborted.
#[derive(Debug)]
pub enum TaskEnd<T> {
    /// It returned this value.
    Returned(T),
    /// It panicked with this message.
    Panicked(String),
}

impl<T> TaskEnd<T> {
    /// The failure to report when the task was never meant to end by itself:
    /// its panic message, or that it ended at all.
    pub fn unexpected(&self, task: &str) -> String {
        match self {
            TaskEnd::Returned(_) => format!("task `{task}` ended unexpectedly"),
            TaskEnd::Panicked(panic) => format!("task `{task}` panicked: {panic}"),
        }
    }
}

/// One task owned by an actor; aborted when dropped.
#[derive(Debug)]
pub struct OwnedTask(AbortOnDropHandle<()>);

impl OwnedTask {
    /// Spawns `work`; when it ends by itself, `report` may turn the outcome into a
    /// message for `actor` (`None`: nothing to say).
    pub fn spawn<M, T, F, R>(actor: &ActorRef<M>, work: F, report: R) -> Self
    where
        M: Message,
        T: Send + 'static,
        F: Future<Output = T> + Send + 'static,
        R: FnOnce(TaskEnd<T>) -> Option<M> + Send + 'static,
    {
        let actor = actor.clone();
        let handle = tokio::spawn(async move {
            let end = match AssertUnwindSafe(work).catch_unwind().await {
                Ok(value) => TaskEnd::Returned(value),
                Err(panic) => TaskEnd::Panicked(panic_message(panic.as_ref())),
            };
            if let Some(message) = report(end) {
                // Refused only when the actor is gone, which is then moot.
                let _ = actor.tell(message);
            }
        });
        Self(AbortOnDropHandle::new(handle))
    }

    /// Whether it has ended.
    pub fn is_finished(&self) -> bool {
        self.0.is_finished()
    }

    /// Waits until it has ended by itself (the caller bounds the wait: a kill of
    /// the actor drops the future, which aborts the task).
    pub async fn join(self) {
        let _ = self.0.await;
    }
}

/// Many short tasks owned by one actor (a resource's calls); all are aborted when
/// this is dropped.
#[derive(Debug, Default)]
pub struct Tasks {
    running: Vec<OwnedTask>,
}

impl Tasks {
    /// No tasks yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// Spawns one more, as [`OwnedTask::spawn`] does.
    pub fn spawn<M, T, F, R>(&mut self, actor: &ActorRef<M>, work: F, report: R)
    where
        M: Message,
        T: Send + 'static,
        F: Future<Output = T> + Send + 'static,
        R: FnOnce(TaskEnd<T>) -> Option<M> + Send + 'static,
    {
        self.running.retain(|task| !task.is_finished());
        self.running.push(OwnedTask::spawn(actor, work, report));
    }

    /// How many are still running.
    pub fn len(&self) -> usize {
        self.running.iter().filter(|t| !t.is_finished()).count()
    }

    /// Whether none is running.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Waits until every task has ended by itself.
    pub async fn join(&mut self) {
        for task in std::mem::take(&mut self.running) {
            task.join().await;
        }
    }
}

/// The text of a panic payload.
pub fn panic_message(payload: &(dyn Any + Send)) -> String {
    if let Some(text) = payload.downcast_ref::<&str>() {
        (*text).to_owned()
    } else if let Some(text) = payload.downcast_ref::<String>() {
        text.clone()
    } else {
        "a panic without a message".to_owned()
    }
}
