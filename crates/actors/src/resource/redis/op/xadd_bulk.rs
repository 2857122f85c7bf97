//! Stream appends: entries in one pipelined round trip.

use std::sync::Arc;

use crate::resource::redis::Fields;

use redis::aio::MultiplexedConnection;
use redis::RedisError as DriverError;

use crate::resource::redis::{RedisClient, RedisError, RedisOp, RedisShared};
use crate::resource::Operation;

/// Appends entries to a stream in one pipelined round trip; answers their ids.
#[derive(Clone, Debug)]
pub struct XaddBulk {
    /// Stream (logical name; the actor adds the prefix).
    pub stream: String,
    /// The entries, each as field-value pairs, added in this order.
    pub entries: Arc<[Fields]>,
}

impl Operation for XaddBulk {
    type Output = Vec<String>;
    const NAME: &'static str = "xadd_bulk";

    fn summary(&self) -> String {
        format!("{} entries to {}", self.entries.len(), self.stream)
    }
}

impl RedisOp for XaddBulk {
    const WRITES: bool = true;

    async fn attempt(
        &self,
        conn: &mut MultiplexedConnection,
        redis: &RedisShared,
    ) -> Result<Vec<String>, DriverError> {
        let key = redis.key(&self.stream);
        xadd_bulk(conn, &key, redis.config.stream_maxlen, &self.entries).await
    }
}

impl RedisClient {
    /// Appends entries to `stream` in one pipelined round trip; returns their ids.
    /// A retry after a connection failure may append some entries twice (the
    /// consumers' inserts are idempotent).
    pub async fn xadd_bulk(
        &self,
        stream: &str,
        entries: Arc<[Fields]>,
    ) -> Result<Vec<String>, RedisError> {
        let stream = stream.to_owned();
        self.run(XaddBulk { stream, entries }).await
    }
}

/// One pipelined round trip of `XADD key MAXLEN ~ n * fields...` per entry.
async fn xadd_bulk(
    conn: &mut MultiplexedConnection,
    key: &str,
    maxlen: u64,
    entries: &[Fields],
) -> Result<Vec<String>, DriverError> {
    let mut pipe = redis::pipe();
    for fields in entries {
        let cmd = pipe
            .cmd("XADD")
            .arg(key)
            .arg("MAXLEN")
            .arg("~")
            .arg(maxlen)
            .arg("*");
        for (name, value) in fields {
            cmd.arg(name).arg(value.as_slice());
        }
    }
    pipe.query_async(conn).await
}
