//! A consumer's reads: new entries, or its own pending ones.

use std::time::Duration;

use crate::resource::redis::replies::{self, StreamEntry};

use redis::aio::MultiplexedConnection;
use redis::{RedisError as DriverError, Value};

use crate::resource::redis::{RedisClient, RedisError, RedisOp, RedisShared};
use crate::resource::Operation;

/// Reads entries for a consumer, blocking at most `read_block`; answers, per
/// stream, its entries.
#[derive(Clone, Debug)]
pub struct ReadGroup {
    /// The consumer group reading.
    pub group: String,
    /// Consumer (unique per process).
    pub consumer: String,
    /// Streams to read.
    pub streams: Vec<String>,
    /// Entries per stream at most.
    pub count: usize,
    /// `>` for new entries, `0` for the consumer's own pending ones.
    pub from: String,
}

impl Operation for ReadGroup {
    type Output = Vec<(String, Vec<StreamEntry>)>;
    const NAME: &'static str = "read_group";

    fn summary(&self) -> String {
        let (group, consumer, count) = (&self.group, &self.consumer, self.count);
        format!(
            "{group}/{consumer} up to {count} from {}",
            self.streams.join(",")
        )
    }
}

impl RedisOp for ReadGroup {
    async fn attempt(
        &self,
        conn: &mut MultiplexedConnection,
        redis: &RedisShared,
    ) -> Result<Vec<(String, Vec<StreamEntry>)>, DriverError> {
        let keys = redis.keys(&self.streams);
        let (group, consumer, block) = (&self.group, &self.consumer, redis.config.read_block);
        let read = read_group(conn, group, consumer, &keys, self.count, block, &self.from);
        Ok(redis.unprefixed(read.await?))
    }
}

impl RedisClient {
    /// New entries for `consumer` of `group` on `streams`.
    pub async fn read_group(
        &self,
        group: &str,
        consumer: &str,
        streams: &[String],
        count: usize,
    ) -> Result<Vec<(String, Vec<StreamEntry>)>, RedisError> {
        self.read_group_from(group, consumer, streams, count, ">")
            .await
    }

    /// Entries for `consumer` from `from`: `>` for new ones, `0` for its own
    /// pending ones (read but never acknowledged before a restart).
    pub async fn read_group_from(
        &self,
        group: &str,
        consumer: &str,
        streams: &[String],
        count: usize,
        from: &str,
    ) -> Result<Vec<(String, Vec<StreamEntry>)>, RedisError> {
        self.run(ReadGroup {
            group: group.to_owned(),
            consumer: consumer.to_owned(),
            streams: streams.to_vec(),
            count,
            from: from.to_owned(),
        })
        .await
    }
}

/// `XREADGROUP GROUP g c COUNT n BLOCK ms STREAMS k... id...`: with `>`, new
/// entries; with `0`, the consumer's own pending entries (after a restart).
pub(super) async fn read_group(
    conn: &mut MultiplexedConnection,
    group: &str,
    consumer: &str,
    keys: &[String],
    count: usize,
    block: Duration,
    from: &str,
) -> Result<Vec<(String, Vec<StreamEntry>)>, DriverError> {
    let mut cmd = redis::cmd("XREADGROUP");
    cmd.arg("GROUP")
        .arg(group)
        .arg(consumer)
        .arg("COUNT")
        .arg(count)
        .arg("BLOCK")
        .arg(block.as_millis() as u64)
        .arg("STREAMS")
        .arg(keys);
    for _ in keys {
        cmd.arg(from);
    }
    let reply: Value = cmd.query_async(conn).await?;
    replies::streams(reply)
}
