//! Streams trimmed by entry id (the janitor).

use redis::aio::MultiplexedConnection;
use redis::RedisError as DriverError;

use crate::resource::redis::{RedisClient, RedisError, RedisOp, RedisShared};
use crate::resource::Operation;

/// Removes entries older than an id; answers how many.
#[derive(Clone, Debug)]
pub struct TrimMinId {
    /// The stream's key.
    pub stream: String,
    /// Entries below this id go.
    pub min_id: String,
}

impl Operation for TrimMinId {
    type Output = u64;
    const NAME: &'static str = "trim_min_id";

    fn summary(&self) -> String {
        format!("{} below {}", self.stream, self.min_id)
    }
}

impl RedisOp for TrimMinId {
    async fn attempt(
        &self,
        conn: &mut MultiplexedConnection,
        redis: &RedisShared,
    ) -> Result<u64, DriverError> {
        trim_min_id(conn, &redis.key(&self.stream), &self.min_id).await
    }
}

impl RedisClient {
    /// Removes entries of `stream` older than `min_id`.
    pub async fn trim_min_id(&self, stream: &str, min_id: &str) -> Result<u64, RedisError> {
        let (stream, min_id) = (stream.to_owned(), min_id.to_owned());
        self.run(TrimMinId { stream, min_id }).await
    }
}

/// `XTRIM key MINID min_id`: removes entries older than `min_id`.
async fn trim_min_id(
    conn: &mut MultiplexedConnection,
    key: &str,
    min_id: &str,
) -> Result<u64, DriverError> {
    redis::cmd("XTRIM")
        .arg(key)
        .arg("MINID")
        .arg(min_id)
        .query_async(conn)
        .await
}
