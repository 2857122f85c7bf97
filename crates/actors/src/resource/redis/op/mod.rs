//! RedisActor's operations, one file each: the operation's type (its arguments),
//! its name and summary, the commands it sends on a pooled connection, and the
//! [`RedisClient`](super::RedisClient) method that sends it. Stream and key names
//! are logical: the configured prefix is added here, by the actor.

mod ack;
mod autoclaim;
pub mod cluster;
mod create_group;
mod group_progress;
mod last_entry;
mod lease;
mod ping;
mod read_group;
mod read_own_pending;
mod trim_min_id;
mod xadd_bulk;

pub use ack::Ack;
pub use autoclaim::AutoClaim;
pub use create_group::CreateGroup;
pub use group_progress::{GroupProgress, StreamProgress};
pub use last_entry::LastEntry;
pub use lease::{Lease, LeaseStep};
pub(super) use ping::ping;
pub use ping::Ping;
pub use read_group::ReadGroup;
pub use read_own_pending::ReadOwnPending;
pub use trim_min_id::TrimMinId;
pub use xadd_bulk::{XaddBulk, XaddFenced};

use std::future::Future;

use redis::aio::MultiplexedConnection;
use redis::RedisError as DriverError;

use super::replies::StreamEntry;
use super::{RedisError, RedisShared};
use crate::resource::{Execute, NotRunning, Operation};

/// An operation RedisActor runs behind its circuit breaker, on one pooled
/// connection (each checkout carries a whole pipelined batch).
pub trait RedisOp: Operation {
    /// Whether it appends to a stream: those take one of `write_concurrency`
    /// permits first, so a burst of writers cannot take every connection.
    const WRITES: bool = false;

    /// One attempt on `conn`.
    fn attempt(
        &self,
        conn: &mut MultiplexedConnection,
        redis: &RedisShared,
    ) -> impl Future<Output = Result<Self::Output, DriverError>> + Send;
}

impl<O: RedisOp> Execute<RedisShared> for O {
    type Error = RedisError;

    async fn execute(&self, redis: &RedisShared) -> Result<O::Output, RedisError> {
        if !O::WRITES {
            return redis.guarded(self).await;
        }
        match redis.writes.acquire().await {
            Ok(_permit) => redis.guarded(self).await,
            Err(_) => Err(RedisError::NotRunning(NotRunning("redis".into()))),
        }
    }
}

/// Field/value pairs of one entry to append.
pub type Fields = Vec<(String, Vec<u8>)>;

/// An entry handed to a consumer, with how often it has been delivered.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Delivered {
    /// The entry as the stream holds it.
    pub entry: StreamEntry,
    /// Deliveries so far, this one included.
    pub deliveries: u64,
}

/// What `XAUTOCLAIM` took over from idle consumers.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Claimed {
    /// Where the next scan starts (`0-0` when the pending list was scanned to the end).
    pub next_start: String,
    /// Entries now owned by the claiming consumer.
    pub entries: Vec<Delivered>,
    /// Pending ids whose entries no longer exist (trimmed); removed from the list.
    pub deleted: Vec<String>,
}
