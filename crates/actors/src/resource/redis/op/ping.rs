//! One round trip to the server.

use std::time::{Duration, Instant};

use futures::future::BoxFuture;
use redis::aio::MultiplexedConnection;
use redis::RedisError as DriverError;

use crate::resource::redis::{RedisClient, RedisError, RedisOp, RedisShared};
use crate::resource::Operation;

/// One round trip; answers its latency.
#[derive(Clone, Copy, Debug)]
pub struct Ping;

impl Operation for Ping {
    type Output = Duration;
    const NAME: &'static str = "ping";

    fn summary(&self) -> String {
        "ping".into()
    }
}

impl RedisOp for Ping {
    fn attempt<'c>(
        &'c self,
        conn: &'c mut MultiplexedConnection,
        redis: &'c RedisShared,
    ) -> BoxFuture<'c, Result<Duration, DriverError>> {
        let _ = redis;
        Box::pin(async move {
            let started = Instant::now();
            ping(conn).await?;
            Ok(started.elapsed())
        })
    }
}

impl RedisClient {
    /// One round trip.
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
