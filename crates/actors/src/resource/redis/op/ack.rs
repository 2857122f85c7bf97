//! Entries acknowledged.

use redis::aio::MultiplexedConnection;
use redis::RedisError as DriverError;

use crate::resource::redis::{RedisClient, RedisError, RedisOp, RedisShared};
use crate::resource::Operation;

/// Acknowledges entries; answers how many were pending.
#[derive(Clone, Debug)]
pub struct Ack {
    /// The stream's key.
    pub stream: String,
    /// The consumer group acknowledging.
    pub group: String,
    /// The ids of the entries processed, as the stream gave them.
    pub ids: Vec<String>,
}

impl Operation for Ack {
    type Output = u64;
    const NAME: &'static str = "ack";

    fn summary(&self) -> String {
        format!(
            "{} ids on {} for {}",
            self.ids.len(),
            self.stream,
            self.group
        )
    }
}

impl RedisOp for Ack {
    async fn attempt(
        &self,
        conn: &mut MultiplexedConnection,
        redis: &RedisShared,
    ) -> Result<u64, DriverError> {
        ack(conn, &redis.key(&self.stream), &self.group, &self.ids).await
    }
}

impl RedisClient {
    /// Acknowledges `ids` on `stream` for `group`.
    pub async fn ack(
        &self,
        stream: &str,
        group: &str,
        ids: Vec<String>,
    ) -> Result<u64, RedisError> {
        let (stream, group) = (stream.to_owned(), group.to_owned());
        self.run(Ack { stream, group, ids }).await
    }
}

/// `XACK key group ids...`; how many were pending.
async fn ack(
    conn: &mut MultiplexedConnection,
    key: &str,
    group: &str,
    ids: &[String],
) -> Result<u64, DriverError> {
    if ids.is_empty() {
        return Ok(0);
    }
    redis::cmd("XACK")
        .arg(key)
        .arg(group)
        .arg(ids)
        .query_async(conn)
        .await
}
