//! The shape every run-once task shares: start the work, stop normally when it
//! succeeds (the task is done), fail when it does not (the supervisor retries
//! it with backoff, up to the tree's restart intensity).
//!
//! The work runs in a task the actor owns: it is aborted if the actor is killed,
//! and a panic in it fails the actor like an error. The work's clients ride out
//! resource outages until the incarnation is asked to stop.

use std::future::Future;

use ractor::{Actor, ActorCell, ActorProcessingErr, ActorRef, SpawnErr};

use keel_core::child::{spawn_with_probe, Incarnation, StartContext};
use keel_core::recorded::Recordable;
use keel_core::tasks::{OwnedTask, TaskEnd};

/// One task's work.
pub trait TaskWork: Clone + Send + Sync + std::fmt::Debug + 'static {
    /// Does the work; returns a summary of what it did, or why it failed. It
    /// should end soon after `own.stop` fires (its clients stop waiting then).
    fn run(self, own: Incarnation) -> impl Future<Output = Result<String, TaskError>> + Send;
}

/// Why a task's work failed, and whether running it again could help.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TaskError {
    /// What went wrong.
    pub message: String,
    /// The same run would fail the same way (bad data from upstream, an
    /// impossible request): the supervisor does not restart it.
    pub unrecoverable: bool,
}

impl TaskError {
    /// A failure that running again will not mend.
    pub fn unrecoverable(message: impl Into<String>) -> Self {
        Self {
            message: message.into(),
            unrecoverable: true,
        }
    }
}

impl From<String> for TaskError {
    fn from(message: String) -> Self {
        Self {
            message,
            unrecoverable: false,
        }
    }
}

impl From<&str> for TaskError {
    fn from(message: &str) -> Self {
        message.to_owned().into()
    }
}

impl std::fmt::Display for TaskError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for TaskError {}

/// Messages a task handles.
#[derive(Debug)]
pub enum TaskMsg {
    /// The work ended.
    Finished(Result<String, TaskError>),
}

impl Recordable for TaskMsg {
    fn kind(&self) -> &'static str {
        "Finished"
    }

    fn summary(&self) -> String {
        match self {
            TaskMsg::Finished(Ok(done)) => done.clone(),
            TaskMsg::Finished(Err(why)) => why.message.clone(),
        }
    }
}

/// A task actor running `W` once.
#[derive(Debug)]
pub struct RunOnce<W>(std::marker::PhantomData<fn() -> W>);

impl<W: TaskWork> RunOnce<W> {
    /// Spawns the task; use as a child factory.
    pub async fn spawn(work: W, ctx: StartContext) -> Result<ActorCell, SpawnErr> {
        spawn_with_probe(Self(std::marker::PhantomData), work, ctx).await
    }
}

impl<W: TaskWork> Actor for RunOnce<W> {
    type Msg = TaskMsg;
    /// The work, aborted if the actor is killed.
    type State = OwnedTask;
    type Arguments = (W, Incarnation);

    async fn pre_start(
        &self,
        myself: ActorRef<TaskMsg>,
        (work, own): (W, Incarnation),
    ) -> Result<OwnedTask, ActorProcessingErr> {
        Ok(OwnedTask::spawn(&myself, work.run(own), |end| {
            Some(TaskMsg::Finished(match end {
                TaskEnd::Returned(result) => result,
                TaskEnd::Panicked(_) => Err(end.unexpected("work").into()),
            }))
        }))
    }

    async fn handle(
        &self,
        myself: ActorRef<TaskMsg>,
        TaskMsg::Finished(result): TaskMsg,
        _: &mut OwnedTask,
    ) -> Result<(), ActorProcessingErr> {
        match result {
            Ok(done) => {
                tracing::info!(%done, "Task finished.");
                myself.stop(Some(done));
                Ok(())
            }
            Err(why) if why.unrecoverable => {
                Err(keel_core::child::Unrecoverable::new(why.message).into())
            }
            Err(why) => Err(why.message.into()),
        }
    }
}
