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
use keel_deribit::codes;
use keel_deribit::http::HttpError;

use crate::resource::pg::PgError;
use crate::resource::redis::RedisError;

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
    /// `error`'s message, and whether running again could mend it.
    fn classed(error: &impl std::fmt::Display, unrecoverable: bool) -> Self {
        Self {
            message: error.to_string(),
            unrecoverable,
        }
    }

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

/// A statement PostgreSQL refused, or a value that does not convert, fails
/// the same way on every run; an outage that outlasted the ride-out may not.
impl From<PgError> for TaskError {
    fn from(e: PgError) -> Self {
        let unrecoverable = matches!(e, PgError::Rejected { .. } | PgError::Other { .. });
        Self::classed(&e, unrecoverable)
    }
}

/// A command Redis refused (WRONGTYPE, a syntax error) is refused again.
impl From<RedisError> for TaskError {
    fn from(e: RedisError) -> Self {
        Self::classed(&e, matches!(e, RedisError::Command { .. }))
    }
}

/// An answer Keel cannot read, or the exchange calling the request itself
/// malformed (bad parameters, no such method), comes back the same; a transport
/// failure, a request to slow down or the exchange's general error is worth a
/// later run.
impl From<HttpError> for TaskError {
    fn from(e: HttpError) -> Self {
        let unrecoverable = match &e {
            HttpError::Shape(_) => true,
            HttpError::Rpc(rpc) => matches!(
                rpc.code,
                codes::BAD_REQUEST
                    | codes::INVALID_PARAMS
                    | codes::METHOD_NOT_FOUND
                    | codes::INVALID_REQUEST
            ),
            HttpError::Transport(_) => false,
        };
        Self::classed(&e, unrecoverable)
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

#[cfg(test)]
mod tests {
    use keel_deribit::RpcError;

    use super::*;

    fn rpc(code: i64) -> HttpError {
        HttpError::Rpc(RpcError::new(code))
    }

    #[test]
    fn a_refused_statement_is_not_worth_a_rerun_but_an_outage_is() {
        let rejected = PgError::Rejected {
            op: "upsert_trades",
            sqlstate: "42P01".into(),
            message: "relation does not exist".into(),
        };
        let unavailable = PgError::Unavailable {
            op: "upsert_trades",
            attempts: 3,
            last: "connection refused".into(),
        };
        assert!(TaskError::from(rejected).unrecoverable);
        assert!(!TaskError::from(unavailable).unrecoverable);
    }

    #[test]
    fn a_refused_redis_command_is_not_worth_a_rerun_but_an_open_circuit_is() {
        let refused = RedisError::Command {
            op: "xtrim",
            code: Some("WRONGTYPE".into()),
            message: "wrong kind of value".into(),
        };
        let open = RedisError::CircuitOpen {
            op: "xtrim",
            retry_after: std::time::Duration::from_secs(1),
        };
        assert!(TaskError::from(refused).unrecoverable);
        assert!(!TaskError::from(open).unrecoverable);
    }

    #[test]
    fn only_a_malformed_request_to_the_exchange_is_final() {
        assert!(TaskError::from(rpc(codes::INVALID_PARAMS)).unrecoverable);
        assert!(TaskError::from(HttpError::Shape("no result".into())).unrecoverable);
        assert!(!TaskError::from(rpc(codes::TOO_MANY_REQUESTS)).unrecoverable);
        assert!(!TaskError::from(rpc(codes::ERROR)).unrecoverable);
        assert!(!TaskError::from(HttpError::Transport("refused".into())).unrecoverable);
    }
}
