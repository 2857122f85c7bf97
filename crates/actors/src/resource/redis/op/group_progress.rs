//! How far each consumer group has got on a stream.

use crate::resource::redis::replies;

use redis::aio::MultiplexedConnection;
use redis::{RedisError as DriverError, Value};

use crate::resource::redis::{RedisClient, RedisError, RedisOp, RedisShared};
use crate::resource::Operation;

/// Every consumer group's progress on a stream.
#[derive(Clone, Debug)]
pub struct StreamProgress {
    /// The stream's key.
    pub stream: String,
}

impl Operation for StreamProgress {
    type Output = Vec<GroupProgress>;
    const NAME: &'static str = "group_progress";

    fn summary(&self) -> String {
        self.stream.clone()
    }
}

impl RedisOp for StreamProgress {
    async fn attempt(
        &self,
        conn: &mut MultiplexedConnection,
        redis: &RedisShared,
    ) -> Result<Vec<GroupProgress>, DriverError> {
        group_progress(conn, &redis.key(&self.stream)).await
    }
}

impl RedisClient {
    /// Every consumer group's progress on `stream`.
    pub async fn group_progress(&self, stream: &str) -> Result<Vec<GroupProgress>, RedisError> {
        let stream = stream.to_owned();
        self.run(StreamProgress { stream }).await
    }
}

/// How far one consumer group has got on a stream.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GroupProgress {
    /// The consumer group these figures are of.
    pub group: String,
    /// The last entry delivered to any of its consumers.
    pub last_delivered: String,
    /// Entries delivered but not acknowledged.
    pub pending: u64,
    /// The oldest of those, if any.
    pub oldest_pending: Option<String>,
    /// Entries not delivered yet (Redis 7+), when known.
    pub lag: Option<u64>,
}

/// `XINFO GROUPS` and, per group, the `XPENDING` summary.
async fn group_progress(
    conn: &mut MultiplexedConnection,
    key: &str,
) -> Result<Vec<GroupProgress>, DriverError> {
    let info: Value = match redis::cmd("XINFO")
        .arg("GROUPS")
        .arg(key)
        .query_async(conn)
        .await
    {
        Ok(info) => info,
        // No stream yet: nobody has progress on it.
        Err(e) if e.to_string().contains("no such key") => return Ok(Vec::new()),
        Err(e) => return Err(e),
    };
    let mut out = Vec::new();
    for group in replies::list(info)? {
        let fields: Vec<(String, Value)> = match group {
            Value::Map(pairs) => pairs
                .into_iter()
                .filter_map(|(k, v)| replies::text(k).ok().map(|k| (k, v)))
                .collect(),
            other => {
                let flat = replies::list(other)?;
                let mut pairs = Vec::new();
                let mut it = flat.into_iter();
                while let (Some(k), Some(v)) = (it.next(), it.next()) {
                    if let Ok(k) = replies::text(k) {
                        pairs.push((k, v));
                    }
                }
                pairs
            }
        };
        let get = |name: &str| {
            fields
                .iter()
                .find(|(k, _)| k == name)
                .map(|(_, v)| v.clone())
        };
        let number = |v: Option<Value>| match v {
            Some(Value::Int(n)) => u64::try_from(n).ok(),
            _ => None,
        };
        let name = get("name")
            .map(replies::text)
            .transpose()?
            .unwrap_or_default();
        let last_delivered = get("last-delivered-id")
            .map(replies::text)
            .transpose()?
            .unwrap_or_else(|| "0-0".into());
        // XINFO's pending count and XPENDING's oldest id are read one after the
        // other; both come from XPENDING's one reply so they agree (entries may
        // be acknowledged in between: then it answers `[0, nil, nil, nil]`).
        let (pending, oldest_pending) = if number(get("pending")).unwrap_or(0) > 0 {
            let summary: Value = redis::cmd("XPENDING")
                .arg(key)
                .arg(&name)
                .query_async(conn)
                .await?;
            let mut summary = replies::list(summary)?.into_iter();
            let count = number(summary.next()).unwrap_or(0);
            let oldest = summary
                .next()
                .filter(|v| !matches!(v, Value::Nil))
                .map(replies::text)
                .transpose()?;
            (count, oldest)
        } else {
            (0, None)
        };
        out.push(GroupProgress {
            group: name,
            last_delivered,
            pending,
            oldest_pending,
            lag: number(get("lag")),
        });
    }
    Ok(out)
}
