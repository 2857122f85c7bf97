//! bb8-redis's manager, with the pooled connections both resources use
//! (`pool::Pooled`): bb8-redis never reports a connection broken, so the
//! pool tests each checkout with a PING, a round trip before every command on
//! paths (the executor's events, the receiver's batches) where the command
//! itself is one round trip. A connection handed back moments ago by a call
//! that went well skips it; one whose call failed for a connection's reason
//! is dropped instead of returned.

use bb8::ManageConnection;
use bb8_redis::RedisConnectionManager;
use redis::aio::MultiplexedConnection;
use redis::RedisError;

use crate::resource::pool::Pooled;

/// A pooled Redis connection.
pub(super) type RedisConnection = Pooled<MultiplexedConnection>;

/// The pool's manager.
pub(super) struct RedisManager(pub(super) RedisConnectionManager);

impl ManageConnection for RedisManager {
    type Connection = RedisConnection;
    type Error = RedisError;

    async fn connect(&self) -> Result<RedisConnection, RedisError> {
        let mut conn = self.0.connect().await?;
        conn.set_response_timeout(super::config::RESPONSE_TIMEOUT);
        Ok(Pooled::new(conn))
    }

    async fn is_valid(&self, conn: &mut RedisConnection) -> Result<(), RedisError> {
        if conn.fresh() {
            return Ok(());
        }
        self.0.is_valid(conn).await
    }

    /// Asked as a connection goes back to the pool (and when reaping).
    fn has_broken(&self, conn: &mut RedisConnection) -> bool {
        conn.broken(false)
    }
}
