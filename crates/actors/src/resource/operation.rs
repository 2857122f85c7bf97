//! Operations: one type per thing a resource does.
//!
//! An operation is a value (its arguments) that knows its name, how to describe
//! itself in the message ring, and how it runs on its resource: PgActor's
//! executor runs every [`PgOp`](super::pg::PgOp) and RedisActor's breaker guards
//! every [`RedisOp`](super::redis::RedisOp). Adding an operation is one file under
//! `pg/op/` or `redis/op/`: the type, those impls, and the client method that
//! sends it.

use std::fmt;
use std::future::Future;

use futures::future::BoxFuture;
use ractor::RpcReplyPort;

use keel_core::recorded::Recordable;

/// One operation a resource offers.
pub trait Operation: Send + Sync + 'static {
    /// What the call answers.
    type Output: Send + 'static;
    /// Its name in call statistics, metrics and logs (`insert_trades`).
    const NAME: &'static str;
    /// One line for the message ring: counts and names, never values.
    fn summary(&self) -> String;
}

/// How an operation runs on the resource whose shared state is `S`.
pub trait Execute<S>: Operation {
    /// Why it failed.
    type Error: Send + 'static;
    /// Runs it to completion (retries, breaker and timeouts included).
    fn execute<'a>(
        &'a self,
        shared: &'a S,
    ) -> impl Future<Output = Result<Self::Output, Self::Error>> + Send + 'a;
}

/// A call on its way to a resource: an operation and where its answer goes,
/// with the operation's type erased so that one mailbox takes them all.
pub struct Call<S> {
    pending: Box<dyn Pending<S>>,
}

impl<S: Send + Sync + 'static> Call<S> {
    /// `op`, answered through `reply`.
    pub fn new<O: Execute<S>>(op: O, reply: RpcReplyPort<Result<O::Output, O::Error>>) -> Self {
        Self {
            pending: Box::new(WithReply { op, reply }),
        }
    }

    /// Runs the operation on `shared` and sends its answer.
    pub fn serve(self, shared: S) -> BoxFuture<'static, ()> {
        self.pending.serve(shared)
    }
}

impl<S> Recordable for Call<S> {
    fn kind(&self) -> &'static str {
        self.pending.kind()
    }

    fn summary(&self) -> String {
        self.pending.summary()
    }
}

impl<S> fmt::Debug for Call<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}({})", self.pending.kind(), self.pending.summary())
    }
}

trait Pending<S>: Send {
    fn kind(&self) -> &'static str;
    fn summary(&self) -> String;
    fn serve(self: Box<Self>, shared: S) -> BoxFuture<'static, ()>;
}

struct WithReply<O: Operation, E> {
    op: O,
    reply: RpcReplyPort<Result<O::Output, E>>,
}

impl<S, O> Pending<S> for WithReply<O, O::Error>
where
    S: Send + Sync + 'static,
    O: Execute<S>,
{
    /// The operation's type name (`InsertTrades`), as every other message's kind.
    fn kind(&self) -> &'static str {
        let path = std::any::type_name::<O>();
        path.rsplit("::").next().unwrap_or(path)
    }

    fn summary(&self) -> String {
        self.op.summary()
    }

    fn serve(self: Box<Self>, shared: S) -> BoxFuture<'static, ()> {
        Box::pin(async move {
            let result = self.op.execute(&shared).await;
            // The caller may have given up waiting; its answer is then nobody's.
            let _ = self.reply.send(result);
        })
    }
}
