//! A consumer's own pending entries with their real delivery counts.

use std::time::Duration;

use super::read_group::read_group;
use crate::resource::redis::replies::{self, StreamEntry};
use crate::resource::redis::Delivered;

use redis::aio::MultiplexedConnection;
use redis::{RedisError as DriverError, Value};

use crate::resource::redis::{RedisClient, RedisError, RedisOp, RedisShared};
use crate::resource::Operation;

/// The consumer's own pending entries, with their real delivery counts.
#[derive(Clone, Debug)]
pub struct ReadOwnPending {
    /// The consumer group the entries were delivered in.
    pub group: String,
    /// The consumer whose delivered, unacknowledged entries are read again.
    pub consumer: String,
    /// Streams to read.
    pub streams: Vec<String>,
    /// Entries per stream at most.
    pub count: usize,
}

impl Operation for ReadOwnPending {
    type Output = Vec<(String, Vec<Delivered>)>;
    const NAME: &'static str = "read_own_pending";

    fn summary(&self) -> String {
        let (group, consumer) = (&self.group, &self.consumer);
        format!(
            "{group}/{consumer} own pending on {}",
            self.streams.join(",")
        )
    }
}

impl RedisOp for ReadOwnPending {
    async fn attempt(
        &self,
        conn: &mut MultiplexedConnection,
        redis: &RedisShared,
    ) -> Result<Vec<(String, Vec<Delivered>)>, DriverError> {
        let keys = redis.keys(&self.streams);
        let read = read_own_pending(conn, &self.group, &self.consumer, &keys, self.count);
        Ok(redis.unprefixed(read.await?))
    }
}

impl RedisClient {
    /// `consumer`'s own pending entries on `streams` (read and never
    /// acknowledged, e.g. before a restart), each with its real delivery count.
    pub async fn read_own_pending(
        &self,
        group: &str,
        consumer: &str,
        streams: &[String],
        count: usize,
    ) -> Result<Vec<(String, Vec<Delivered>)>, RedisError> {
        self.run(ReadOwnPending {
            group: group.to_owned(),
            consumer: consumer.to_owned(),
            streams: streams.to_vec(),
            count,
        })
        .await
    }
}

/// The consumer's own pending entries (`XREADGROUP ... 0`, what it read and
/// never acknowledged before a restart), each with its delivery count as
/// `XPENDING` keeps it, so the dead-letter rule sees the real number.
async fn read_own_pending(
    conn: &mut MultiplexedConnection,
    group: &str,
    consumer: &str,
    keys: &[String],
    count: usize,
) -> Result<Vec<(String, Vec<Delivered>)>, DriverError> {
    let read = read_group(conn, group, consumer, keys, count, Duration::ZERO, "0").await?;
    let mut out = Vec::with_capacity(read.len());
    for (key, entries) in read {
        let delivered = with_deliveries(conn, &key, group, consumer, entries).await?;
        out.push((key, delivered));
    }
    Ok(out)
}

/// `XPENDING key group first last n consumer`: each entry's delivery count.
pub(super) async fn with_deliveries(
    conn: &mut MultiplexedConnection,
    key: &str,
    group: &str,
    consumer: &str,
    entries: Vec<StreamEntry>,
) -> Result<Vec<Delivered>, DriverError> {
    let (Some(first), Some(last)) = (entries.first(), entries.last()) else {
        return Ok(Vec::new());
    };
    let pending: Value = redis::cmd("XPENDING")
        .arg(key)
        .arg(group)
        .arg(&first.id)
        .arg(&last.id)
        .arg(entries.len())
        .arg(consumer)
        .query_async(conn)
        .await?;
    let mut deliveries = std::collections::HashMap::new();
    for row in replies::list(pending)? {
        let mut fields = replies::list(row)?.into_iter();
        let id = replies::text(fields.next().unwrap_or(Value::Nil))?;
        if let Some(Value::Int(n)) = fields.nth(2) {
            deliveries.insert(id, u64::try_from(n).unwrap_or(0));
        }
    }
    Ok(entries
        .into_iter()
        .map(|entry| Delivered {
            deliveries: deliveries.get(&entry.id).copied().unwrap_or(1),
            entry,
        })
        .collect())
}
