//! Entries other consumers left pending, taken over.

use std::time::Duration;

use super::read_own_pending::with_deliveries;
use crate::resource::redis::replies;
use crate::resource::redis::Claimed;

use redis::aio::MultiplexedConnection;
use redis::{RedisError as DriverError, Value};

use crate::resource::redis::{RedisClient, RedisError, RedisOp, RedisShared};
use crate::resource::Operation;

/// Takes over entries other consumers left pending for `min_idle`.
#[derive(Clone, Debug)]
pub struct AutoClaim {
    /// The stream's key.
    pub stream: String,
    /// The consumer group whose stale entries are claimed.
    pub group: String,
    /// The claiming consumer.
    pub consumer: String,
    /// Idle time that makes an entry claimable.
    pub min_idle: Duration,
    /// Scan start (`0-0` first, then the previous `next_start`).
    pub start: String,
    /// Entries at most.
    pub count: usize,
}

impl Operation for AutoClaim {
    type Output = Claimed;
    const NAME: &'static str = "autoclaim";

    fn summary(&self) -> String {
        let (group, consumer, stream) = (&self.group, &self.consumer, &self.stream);
        format!(
            "{group}/{consumer} on {stream}, idle >= {:?}",
            self.min_idle
        )
    }
}

impl RedisOp for AutoClaim {
    async fn attempt(
        &self,
        conn: &mut MultiplexedConnection,
        redis: &RedisShared,
    ) -> Result<Claimed, DriverError> {
        let key = redis.key(&self.stream);
        let (group, consumer, start) = (&self.group, &self.consumer, &self.start);
        autoclaim(
            conn,
            &key,
            group,
            consumer,
            self.min_idle,
            start,
            self.count,
        )
        .await
    }
}

impl RedisClient {
    /// Takes over entries left pending by other consumers for at least `min_idle`.
    pub async fn autoclaim(
        &self,
        stream: &str,
        group: &str,
        consumer: &str,
        min_idle: Duration,
        start: &str,
        count: usize,
    ) -> Result<Claimed, RedisError> {
        self.run(AutoClaim {
            stream: stream.to_owned(),
            group: group.to_owned(),
            consumer: consumer.to_owned(),
            min_idle,
            start: start.to_owned(),
            count,
        })
        .await
    }
}

/// `XAUTOCLAIM` entries idle for `min_idle`, then their delivery counts from
/// `XPENDING` (which XAUTOCLAIM does not return).
async fn autoclaim(
    conn: &mut MultiplexedConnection,
    key: &str,
    group: &str,
    consumer: &str,
    min_idle: Duration,
    start: &str,
    count: usize,
) -> Result<Claimed, DriverError> {
    let reply: Value = redis::cmd("XAUTOCLAIM")
        .arg(key)
        .arg(group)
        .arg(consumer)
        .arg(min_idle.as_millis() as u64)
        .arg(start)
        .arg("COUNT")
        .arg(count)
        .query_async(conn)
        .await?;
    let mut parts = replies::list(reply)?.into_iter();
    let next_start =
        replies::text(parts.next().unwrap_or(Value::Nil)).unwrap_or_else(|_| "0-0".into());
    let claimed = replies::entries(parts.next().unwrap_or(Value::Nil))?;
    let deleted = replies::list(parts.next().unwrap_or(Value::Nil))?
        .into_iter()
        .map(replies::text)
        .collect::<Result<Vec<_>, _>>()?;
    let entries = with_deliveries(conn, key, group, consumer, claimed).await?;
    Ok(Claimed {
        next_start,
        entries,
        deleted,
    })
}
