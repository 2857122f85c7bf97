//! A stream's newest entry.

use crate::resource::redis::replies::{self, StreamEntry};

use redis::aio::MultiplexedConnection;
use redis::{RedisError as DriverError, Value};

use crate::resource::redis::{RedisClient, RedisError, RedisOp, RedisShared};
use crate::resource::Operation;

/// The newest entry of a stream.
#[derive(Clone, Debug)]
pub struct LastEntry {
    /// The stream's key.
    pub stream: String,
}

impl Operation for LastEntry {
    type Output = Option<StreamEntry>;
    const NAME: &'static str = "last_entry";

    fn summary(&self) -> String {
        self.stream.clone()
    }
}

impl RedisOp for LastEntry {
    async fn attempt(
        &self,
        conn: &mut MultiplexedConnection,
        redis: &RedisShared,
    ) -> Result<Option<StreamEntry>, DriverError> {
        last_entry(conn, &redis.key(&self.stream)).await
    }
}

impl RedisClient {
    /// The newest entry of `stream`.
    pub async fn last_entry(&self, stream: &str) -> Result<Option<StreamEntry>, RedisError> {
        let stream = stream.to_owned();
        self.run(LastEntry { stream }).await
    }
}

/// The newest entry of a stream (`XREVRANGE key + - COUNT 1`).
async fn last_entry(
    conn: &mut MultiplexedConnection,
    key: &str,
) -> Result<Option<StreamEntry>, DriverError> {
    let reply: Value = redis::cmd("XREVRANGE")
        .arg(key)
        .arg("+")
        .arg("-")
        .arg("COUNT")
        .arg(1)
        .query_async(conn)
        .await?;
    Ok(replies::entries(reply)?.into_iter().next())
}
