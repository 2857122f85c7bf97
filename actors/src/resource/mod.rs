//! Resource actors: each owns one connection pool; workers talk to it by message
//! and never see a pool or a connection.
//!
//! PostgreSQL and Redis share one lifecycle ([`ResourceActor`]): the pool is built
//! without I/O so a server that is down never fails the start, a background loop
//! connects with backoff (`connecting` until `ready` in the registry), each call is
//! served off the mailbox in a tracked task, and stopping the actor waits for the
//! calls in flight and then closes the pool. There is no `close` to remember.

mod actor;
mod availability;
mod call;
pub mod pg;
mod pool;
pub mod redis;
mod stats;

pub use actor::{ConnectError, Health, PoolStats, Resource, ResourceActor, ResourceMsg, Status};
pub use availability::Availability;
pub use call::{call, health, NotRunning};
pub use stats::{CallStats, Waiting, LATENCY_BUCKETS};
