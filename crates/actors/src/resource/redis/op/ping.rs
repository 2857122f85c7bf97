//! One round trip to the server (`PING`).

use std::time::Duration;

use redis::aio::MultiplexedConnection;
use redis::RedisError as DriverError;

use crate::resource::redis::{RedisClient, RedisError, RedisOp, RedisShared};
pub use crate::resource::Ping;

impl RedisOp for Ping {
    async fn attempt(
        &self,
        conn: &mut MultiplexedConnection,
        _redis: &RedisShared,
    ) -> Result<Duration, DriverError> {
        Ping::time(ping(conn)).await
    }
}

impl RedisClient {
    /// One round trip to the server; answers its latency.
    pub async fn ping(&self) -> Result<Duration, RedisError> {
        self.run(Ping).await
    }
}

/// One round trip.
pub(in crate::resource::redis) async fn ping(
    conn: &mut MultiplexedConnection,
) -> Result<(), DriverError> {
    redis::cmd("PING").query_async(conn).await
}
