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
    /// The most trades (or other items) one entry holds: the stream is
    /// trimmed to `stream_maxlen` of those, so to `stream_maxlen / per_entry`
    /// entries.
    pub per_entry: u64,
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
        let maxlen = (redis.config.stream_maxlen / self.per_entry.max(1)).max(1);
        xadd_bulk(conn, &key, maxlen, &self.entries).await
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
        self.xadd_packed(stream, entries, 1).await
    }

    /// As [`xadd_bulk`](Self::xadd_bulk), for entries holding up to
    /// `per_entry` items each (trades packed by the receiver): the stream keeps
    /// at most `stream_maxlen` items whatever their packing.
    pub async fn xadd_packed(
        &self,
        stream: &str,
        entries: Arc<[Fields]>,
        per_entry: u64,
    ) -> Result<Vec<String>, RedisError> {
        let stream = stream.to_owned();
        self.run(XaddBulk {
            stream,
            entries,
            per_entry,
        })
        .await
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
