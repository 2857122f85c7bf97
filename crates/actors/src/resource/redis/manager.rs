//! bb8-redis's manager, with connections a failed call can condemn and a
//! checkout that skips its PING for a connection handed back moments ago.
//!
//! bb8-redis never reports a connection broken, so the pool tests each one on
//! checkout with a PING: a round trip before every command, on a path (the
//! executor's events, the receiver's batches) where the command itself is one
//! round trip. As PostgreSQL's manager does (`pg::manager`), a connection
//! handed back within `FRESH` by a call that went well is handed out as it
//! is; one whose call failed for a connection's reason is dropped instead of
//! returned, and one idle longer is tested as before.

use std::ops::{Deref, DerefMut};
use std::time::{Duration, Instant};

use bb8::ManageConnection;
use bb8_redis::RedisConnectionManager;
use redis::aio::MultiplexedConnection;
use redis::RedisError;

/// A pooled connection and whether it may be reused.
pub(super) struct RedisConnection {
    conn: MultiplexedConnection,
    poisoned: bool,
    /// When it last came back to the pool whole.
    returned: Option<Instant>,
}

/// A connection handed back this recently is not tested again on checkout.
const FRESH: Duration = Duration::from_millis(500);

impl RedisConnection {
    /// Never return this connection to the pool.
    pub(super) fn poison(&mut self) {
        self.poisoned = true;
    }
}

impl Deref for RedisConnection {
    type Target = MultiplexedConnection;

    fn deref(&self) -> &MultiplexedConnection {
        &self.conn
    }
}

impl DerefMut for RedisConnection {
    fn deref_mut(&mut self) -> &mut MultiplexedConnection {
        &mut self.conn
    }
}

/// The pool's manager.
pub(super) struct RedisManager(pub(super) RedisConnectionManager);

impl ManageConnection for RedisManager {
    type Connection = RedisConnection;
    type Error = RedisError;

    async fn connect(&self) -> Result<RedisConnection, RedisError> {
        Ok(RedisConnection {
            conn: self.0.connect().await?,
            poisoned: false,
            returned: None,
        })
    }

    async fn is_valid(&self, conn: &mut RedisConnection) -> Result<(), RedisError> {
        if conn.returned.take().is_some_and(|at| at.elapsed() < FRESH) {
            return Ok(());
        }
        self.0.is_valid(&mut conn.conn).await
    }

    /// Asked as a connection goes back to the pool (and when reaping).
    fn has_broken(&self, conn: &mut RedisConnection) -> bool {
        if !conn.poisoned {
            conn.returned = Some(Instant::now());
        }
        conn.poisoned
    }
}
