//! The Redis commands behind each RedisActor operation.

use std::time::Duration;

use redis::aio::MultiplexedConnection;
use redis::{RedisError as DriverError, Value};

use super::replies::{self, StreamEntry};

/// Field/value pairs of one entry to append.
pub type Fields = Vec<(String, Vec<u8>)>;

/// An entry handed to a consumer, with how often it has been delivered.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Delivered {
    /// The entry.
    pub entry: StreamEntry,
    /// Deliveries so far, this one included.
    pub deliveries: u64,
}

/// What `XAUTOCLAIM` took over from idle consumers.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Claimed {
    /// Where the next scan starts (`0-0` when the pending list was scanned to the end).
    pub next_start: String,
    /// Entries now owned by the claiming consumer.
    pub entries: Vec<Delivered>,
    /// Pending ids whose entries no longer exist (trimmed); removed from the list.
    pub deleted: Vec<String>,
}

/// One pipelined round trip of `XADD key MAXLEN ~ n * fields...` per entry.
pub(super) async fn xadd_bulk(
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

/// `XGROUP CREATE key group 0 MKSTREAM`; false when the group already existed.
/// Starting at 0 means a new group sees what the stream already holds.
pub(super) async fn create_group(
    conn: &mut MultiplexedConnection,
    key: &str,
    group: &str,
) -> Result<bool, DriverError> {
    let result: Result<(), DriverError> = redis::cmd("XGROUP")
        .arg("CREATE")
        .arg(key)
        .arg(group)
        .arg("0")
        .arg("MKSTREAM")
        .query_async(conn)
        .await;
    match result {
        Ok(()) => Ok(true),
        Err(e) if e.code() == Some("BUSYGROUP") => Ok(false),
        Err(e) => Err(e),
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

/// `XACK key group ids...`; how many were pending.
pub(super) async fn ack(
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

/// `XAUTOCLAIM` entries idle for `min_idle`, then their delivery counts from
/// `XPENDING` (which XAUTOCLAIM does not return).
pub(super) async fn autoclaim(
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

/// The consumer's own pending entries (`XREADGROUP ... 0`, what it read and
/// never acknowledged before a restart), each with its delivery count as
/// `XPENDING` keeps it, so the dead-letter rule sees the real number.
pub(super) async fn read_own_pending(
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
async fn with_deliveries(
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

/// `XTRIM key MINID min_id`: removes entries older than `min_id`.
pub(super) async fn trim_min_id(
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

/// `SET key owner NX PX ttl`: true when the lease was free and is now `owner`'s.
pub(super) async fn lease_acquire(
    conn: &mut MultiplexedConnection,
    key: &str,
    owner: &str,
    ttl: Duration,
) -> Result<bool, DriverError> {
    let reply: Value = redis::cmd("SET")
        .arg(key)
        .arg(owner)
        .arg("NX")
        .arg("PX")
        .arg(ttl.as_millis() as u64)
        .query_async(conn)
        .await?;
    Ok(matches!(reply, Value::Okay))
}

const RENEW: &str = "if redis.call('get', KEYS[1]) == ARGV[1] then \
                     return redis.call('pexpire', KEYS[1], ARGV[2]) else return 0 end";
const RELEASE: &str = "if redis.call('get', KEYS[1]) == ARGV[1] then \
                       return redis.call('del', KEYS[1]) else return 0 end";

/// Extends `owner`'s lease; false when it is no longer theirs.
pub(super) async fn lease_renew(
    conn: &mut MultiplexedConnection,
    key: &str,
    owner: &str,
    ttl: Duration,
) -> Result<bool, DriverError> {
    let n: i64 = redis::Script::new(RENEW)
        .key(key)
        .arg(owner)
        .arg(ttl.as_millis() as u64)
        .invoke_async(conn)
        .await?;
    Ok(n == 1)
}

/// Gives `owner`'s lease up; false when it was not theirs.
pub(super) async fn lease_release(
    conn: &mut MultiplexedConnection,
    key: &str,
    owner: &str,
) -> Result<bool, DriverError> {
    let n: i64 = redis::Script::new(RELEASE)
        .key(key)
        .arg(owner)
        .invoke_async(conn)
        .await?;
    Ok(n == 1)
}

/// One round trip.
pub(super) async fn ping(conn: &mut MultiplexedConnection) -> Result<(), DriverError> {
    redis::cmd("PING").query_async(conn).await
}

/// The newest entry of a stream (`XREVRANGE key + - COUNT 1`).
pub(super) async fn last_entry(
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

/// How far one consumer group has got on a stream.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GroupProgress {
    /// Group name.
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
pub(super) async fn group_progress(
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
