//! Cluster membership and the scheduled tasks' slots: what several Keel
//! instances sharing one Redis know of each other. Keys (logical):
//!
//! - `cluster:members`: a sorted set, each instance scored by its last heartbeat (ms);
//! - `cluster:member:{id}`: what the instance says of itself, expiring with its lease TTL;
//! - `cluster:task:{name}`: `{slot}:{id}`, which instance took the task's current interval;
//! - `cluster:lease:{kind}:{instrument}`: `{id}:{token}`, the instance that
//!   receives (`receiver`) or folds (`analyzer`) the instrument, with the
//!   fencing token it took the lease with;
//! - `cluster:fence:{kind}:{instrument}`: the last token handed out (only grows).

use std::time::Duration;

use redis::aio::MultiplexedConnection;
use redis::{RedisError as DriverError, Value};

use crate::resource::redis::{RedisClient, RedisError, RedisOp, RedisShared};
use crate::resource::Operation;

/// The sorted set of instances by last heartbeat.
pub const MEMBERS: &str = "cluster:members";

/// The key of one instance's description.
pub fn member_key(id: &str) -> String {
    format!("cluster:member:{id}")
}

/// The key that says which instance took a scheduled task's interval.
pub fn task_key(task: &str) -> String {
    format!("cluster:task:{task}")
}

/// The key of an instrument's lease for a service (`receiver`, `analyzer`).
pub fn lease_key(kind: &str, instrument: &str) -> String {
    format!("cluster:lease:{kind}:{instrument}")
}

/// The key of an instrument's fencing counter for a service.
pub fn fence_key(kind: &str, instrument: &str) -> String {
    format!("cluster:fence:{kind}:{instrument}")
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX).max(1)
}

/// One heartbeat: this instance says it is alive, and reads what the others said.
#[derive(Clone, Debug)]
pub struct Beat {
    /// This instance's id.
    pub instance: String,
    /// What it says of itself (JSON), kept for `ttl`.
    pub info: String,
    /// How long its description lives without another heartbeat.
    pub ttl: Duration,
    /// Instances silent this long are dropped from the member set.
    pub forget_after: Duration,
    /// The clock of this heartbeat (ms since the epoch).
    pub now_ms: i64,
    /// Scheduled tasks whose holder to read.
    pub tasks: Vec<String>,
    /// Instruments whose receiver lease to read.
    pub instruments: Vec<String>,
    /// Instruments whose analyzer lease to read.
    pub analyzed: Vec<String>,
    /// `(stream, group)` pairs whose consumers to read.
    pub groups: Vec<(String, String)>,
}

/// What one heartbeat read back.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Seen {
    /// Every instance in the member set: id, last heartbeat (ms), and its
    /// description while it lives.
    pub members: Vec<(String, i64, Option<String>)>,
    /// Per task: `{slot}:{id}` of the interval taken last, if any.
    pub tasks: Vec<(String, Option<String>)>,
    /// Per instrument: `{id}:{token}` of its receiver lease, if held.
    pub receivers: Vec<(String, Option<String>)>,
    /// Per instrument: `{id}:{token}` of its analyzer lease, if held.
    pub analyzers: Vec<(String, Option<String>)>,
    /// Per `(stream, group)`: each consumer's name, pending count and idle ms.
    pub consumers: Vec<(String, String, Vec<ConsumerSeen>)>,
    /// This instance's description as Redis held it just before this
    /// heartbeat wrote it: another process's, if one heartbeats under the same id.
    pub previous: Option<String>,
}

/// One consumer of a group, as `XINFO CONSUMERS` reports it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConsumerSeen {
    /// Its name (`{hostname}-{pid}` unless configured).
    pub name: String,
    /// Entries delivered to it and not acknowledged.
    pub pending: u64,
    /// Since it last read or claimed, in ms.
    pub idle_ms: u64,
}

impl Operation for Beat {
    type Output = Seen;
    const NAME: &'static str = "cluster_beat";

    fn summary(&self) -> String {
        self.instance.clone()
    }
}

impl RedisOp for Beat {
    async fn attempt(
        &self,
        conn: &mut MultiplexedConnection,
        redis: &RedisShared,
    ) -> Result<Seen, DriverError> {
        let members_key = redis.key(MEMBERS);
        let forget_before = self.now_ms - i64::try_from(millis(self.forget_after)).unwrap_or(0);
        let mut pipe = redis::pipe();
        pipe.cmd("GET")
            .arg(redis.key(&member_key(&self.instance)))
            .cmd("SET")
            .arg(redis.key(&member_key(&self.instance)))
            .arg(&self.info)
            .arg("PX")
            .arg(millis(self.ttl))
            .ignore()
            .cmd("ZADD")
            .arg(&members_key)
            .arg(self.now_ms)
            .arg(&self.instance)
            .ignore()
            .cmd("ZREMRANGEBYSCORE")
            .arg(&members_key)
            .arg("-inf")
            .arg(format!("({forget_before}"))
            .ignore()
            .cmd("ZRANGE")
            .arg(&members_key)
            .arg(0)
            .arg(-1)
            .arg("WITHSCORES");
        for task in &self.tasks {
            pipe.cmd("GET").arg(redis.key(&task_key(task)));
        }
        for instrument in &self.instruments {
            pipe.cmd("GET")
                .arg(redis.key(&lease_key("receiver", instrument)));
        }
        for instrument in &self.analyzed {
            pipe.cmd("GET")
                .arg(redis.key(&lease_key("analyzer", instrument)));
        }
        let mut replies: Vec<Value> = pipe.query_async(conn).await?;
        if replies.len() < 2 {
            return Err((redis::ErrorKind::Parse, "no reply to ZRANGE").into());
        }
        let previous: Option<String> = redis::from_redis_value(replies.remove(0))?;
        let scored: Vec<(String, f64)> = redis::from_redis_value(replies.remove(0))?;
        let mut held: Vec<Option<String>> = replies
            .into_iter()
            .map(redis::from_redis_value)
            .collect::<Result<_, _>>()?;
        let mut receivers = held.split_off(self.tasks.len().min(held.len()));
        let analyzers = receivers.split_off(self.instruments.len().min(receivers.len()));
        let infos: Vec<Option<String>> = if scored.is_empty() {
            Vec::new()
        } else {
            let mut mget = redis::cmd("MGET");
            for (id, _) in &scored {
                mget.arg(redis.key(&member_key(id)));
            }
            mget.query_async(conn).await?
        };
        let members = scored
            .into_iter()
            .zip(infos.into_iter().chain(std::iter::repeat(None)))
            .map(|((id, score), info)| (id, score as i64, info))
            .collect();
        let tasks = self.tasks.iter().cloned().zip(held).collect();
        let receivers = self.instruments.iter().cloned().zip(receivers).collect();
        let analyzers = self.analyzed.iter().cloned().zip(analyzers).collect();
        let mut consumers = Vec::new();
        for (stream, group) in &self.groups {
            consumers.push((
                stream.clone(),
                group.clone(),
                group_consumers(conn, &redis.key(stream), group).await?,
            ));
        }
        Ok(Seen {
            members,
            tasks,
            receivers,
            analyzers,
            consumers,
            previous,
        })
    }
}

/// `XINFO CONSUMERS`; a stream or group not made yet has none.
async fn group_consumers(
    conn: &mut MultiplexedConnection,
    key: &str,
    group: &str,
) -> Result<Vec<ConsumerSeen>, DriverError> {
    let reply: Result<Vec<std::collections::HashMap<String, Value>>, DriverError> =
        redis::cmd("XINFO")
            .arg("CONSUMERS")
            .arg(key)
            .arg(group)
            .query_async(conn)
            .await;
    let rows = match reply {
        Ok(rows) => rows,
        Err(e) if e.code() == Some("NOGROUP") || e.to_string().contains("no such key") => {
            return Ok(Vec::new())
        }
        Err(e) => return Err(e),
    };
    let number = |v: Option<&Value>| match v {
        Some(Value::Int(n)) => u64::try_from(*n).unwrap_or(0),
        _ => 0,
    };
    Ok(rows
        .into_iter()
        .map(|row| ConsumerSeen {
            name: row
                .get("name")
                .and_then(|v| redis::from_redis_value::<String>(v.clone()).ok())
                .unwrap_or_default(),
            pending: number(row.get("pending")),
            idle_ms: number(row.get("idle")),
        })
        .collect())
}

/// An instance leaving: its description and its place in the member set go.
#[derive(Clone, Debug)]
pub struct Leave {
    /// The instance's id.
    pub instance: String,
}

impl Operation for Leave {
    type Output = ();
    const NAME: &'static str = "cluster_leave";

    fn summary(&self) -> String {
        self.instance.clone()
    }
}

impl RedisOp for Leave {
    async fn attempt(
        &self,
        conn: &mut MultiplexedConnection,
        redis: &RedisShared,
    ) -> Result<(), DriverError> {
        redis::pipe()
            .cmd("ZREM")
            .arg(redis.key(MEMBERS))
            .arg(&self.instance)
            .ignore()
            .cmd("DEL")
            .arg(redis.key(&member_key(&self.instance)))
            .ignore()
            .query_async(conn)
            .await
    }
}

/// Takes a scheduled task's interval (`slot`) for an instance, unless another
/// took it (or a later one) already. The same instance may take its own slot
/// again: a retry of its failed run.
#[derive(Clone, Debug)]
pub struct TakeSlot {
    /// The task's name.
    pub task: String,
    /// The interval's number: ms since the epoch divided by the interval.
    pub slot: u64,
    /// Who takes it.
    pub instance: String,
    /// How long the record lives (two intervals).
    pub ttl: Duration,
}

impl Operation for TakeSlot {
    /// `None`: taken here; else the instance that holds it.
    type Output = Option<String>;
    const NAME: &'static str = "task_slot";

    fn summary(&self) -> String {
        format!("{} slot {} by {}", self.task, self.slot, self.instance)
    }
}

const TAKE_SLOT: &str = "\
local cur = redis.call('GET', KEYS[1])
if cur then
  local sep = string.find(cur, ':', 1, true)
  if sep then
    local slot = tonumber(string.sub(cur, 1, sep - 1))
    local owner = string.sub(cur, sep + 1)
    if slot and slot >= tonumber(ARGV[1]) and owner ~= ARGV[2] then return owner end
  end
end
redis.call('SET', KEYS[1], ARGV[1] .. ':' .. ARGV[2], 'PX', ARGV[3])
return false";

impl RedisOp for TakeSlot {
    async fn attempt(
        &self,
        conn: &mut MultiplexedConnection,
        redis: &RedisShared,
    ) -> Result<Option<String>, DriverError> {
        redis::Script::new(TAKE_SLOT)
            .key(redis.key(&task_key(&self.task)))
            .arg(self.slot)
            .arg(&self.instance)
            .arg(millis(self.ttl))
            .invoke_async(conn)
            .await
    }
}

/// What a receiver needs each lease round: the live members' descriptions
/// and who holds each instrument's lease.
#[derive(Clone, Debug)]
pub struct ReadLeases {
    /// Whose leases: `receiver` or `analyzer`.
    pub kind: String,
    /// Instruments whose leases to read.
    pub instruments: Vec<String>,
    /// Members whose last heartbeat is older than this (ms since the epoch) are left out.
    pub live_since_ms: i64,
}

/// [`ReadLeases`]' answer.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Leases {
    /// Live members: id and description (while it lives).
    pub members: Vec<(String, Option<String>)>,
    /// Per instrument (in the order asked): `{id}:{token}` of its lease.
    pub held: Vec<Option<String>>,
}

impl Operation for ReadLeases {
    type Output = Leases;
    const NAME: &'static str = "read_leases";

    fn summary(&self) -> String {
        format!("{} instruments", self.instruments.len())
    }
}

impl RedisOp for ReadLeases {
    async fn attempt(
        &self,
        conn: &mut MultiplexedConnection,
        redis: &RedisShared,
    ) -> Result<Leases, DriverError> {
        let ids: Vec<String> = redis::cmd("ZRANGE")
            .arg(redis.key(MEMBERS))
            .arg(self.live_since_ms)
            .arg("+inf")
            .arg("BYSCORE")
            .query_async(conn)
            .await?;
        let mut mget = redis::cmd("MGET");
        for id in &ids {
            mget.arg(redis.key(&member_key(id)));
        }
        for instrument in &self.instruments {
            mget.arg(redis.key(&lease_key(&self.kind, instrument)));
        }
        if ids.is_empty() && self.instruments.is_empty() {
            return Ok(Leases::default());
        }
        let mut values: Vec<Option<String>> = mget.query_async(conn).await?;
        let held = values.split_off(ids.len().min(values.len()));
        Ok(Leases {
            members: ids.into_iter().zip(values).collect(),
            held,
        })
    }
}

/// Takes an instrument's lease for a service if it is free, with the next
/// fencing token.
#[derive(Clone, Debug)]
pub struct TakeLease {
    /// Whose lease: `receiver` or `analyzer`.
    pub kind: String,
    /// The instrument.
    pub instrument: String,
    /// Who takes it.
    pub instance: String,
    /// How long it lives without a renewal.
    pub ttl: Duration,
}

impl Operation for TakeLease {
    /// The token, or `None` when someone holds it.
    type Output = Option<u64>;
    const NAME: &'static str = "take_lease";

    fn summary(&self) -> String {
        format!("{} {} by {}", self.kind, self.instrument, self.instance)
    }
}

const TAKE_LEASE: &str = "\
if redis.call('EXISTS', KEYS[1]) == 1 then return false end
local token = redis.call('INCR', KEYS[2])
redis.call('SET', KEYS[1], ARGV[1] .. ':' .. token, 'PX', ARGV[2])
return token";

impl RedisOp for TakeLease {
    async fn attempt(
        &self,
        conn: &mut MultiplexedConnection,
        redis: &RedisShared,
    ) -> Result<Option<u64>, DriverError> {
        redis::Script::new(TAKE_LEASE)
            .key(redis.key(&lease_key(&self.kind, &self.instrument)))
            .key(redis.key(&fence_key(&self.kind, &self.instrument)))
            .arg(&self.instance)
            .arg(millis(self.ttl))
            .invoke_async(conn)
            .await
    }
}

/// Removes a consumer that left a group: one with nothing pending, idle long
/// after its instance stopped heartbeating.
#[derive(Clone, Debug)]
pub struct ForgetConsumer {
    /// The stream.
    pub stream: String,
    /// The group.
    pub group: String,
    /// The consumer.
    pub consumer: String,
}

impl Operation for ForgetConsumer {
    type Output = ();
    const NAME: &'static str = "forget_consumer";

    fn summary(&self) -> String {
        format!("{} of {} on {}", self.consumer, self.group, self.stream)
    }
}

/// Only while it still has nothing pending: what a consumer holds is never dropped.
const FORGET_CONSUMER: &str = "\
local pending = redis.call('XPENDING', KEYS[1], ARGV[1], '-', '+', 1, ARGV[2])
if #pending > 0 then return 0 end
return redis.call('XGROUP', 'DELCONSUMER', KEYS[1], ARGV[1], ARGV[2])";

impl RedisOp for ForgetConsumer {
    async fn attempt(
        &self,
        conn: &mut MultiplexedConnection,
        redis: &RedisShared,
    ) -> Result<(), DriverError> {
        redis::Script::new(FORGET_CONSUMER)
            .key(redis.key(&self.stream))
            .arg(&self.group)
            .arg(&self.consumer)
            .invoke_async::<i64>(conn)
            .await
            .map(drop)
    }
}

impl RedisClient {
    /// Removes `consumer` from `group` on `stream` if it has nothing pending.
    pub async fn forget_consumer(
        &self,
        stream: &str,
        group: &str,
        consumer: &str,
    ) -> Result<(), RedisError> {
        self.run(ForgetConsumer {
            stream: stream.to_owned(),
            group: group.to_owned(),
            consumer: consumer.to_owned(),
        })
        .await
    }
}

impl RedisClient {
    /// The live members and who holds each of `instruments`' `kind` leases.
    pub async fn read_leases(
        &self,
        kind: &str,
        instruments: Vec<String>,
        live_since_ms: i64,
    ) -> Result<Leases, RedisError> {
        self.run(ReadLeases {
            kind: kind.to_owned(),
            instruments,
            live_since_ms,
        })
        .await
    }

    /// Takes `instrument`'s `kind` lease for `instance` if it is free: its
    /// fencing token, or `None` when another holds it.
    pub async fn take_lease(
        &self,
        kind: &str,
        instrument: &str,
        instance: &str,
        ttl: Duration,
    ) -> Result<Option<u64>, RedisError> {
        self.run(TakeLease {
            kind: kind.to_owned(),
            instrument: instrument.to_owned(),
            instance: instance.to_owned(),
            ttl,
        })
        .await
    }
}

impl RedisClient {
    /// One heartbeat of `beat.instance`, and what the cluster looks like.
    pub async fn cluster_beat(&self, beat: Beat) -> Result<Seen, RedisError> {
        self.run(beat).await
    }

    /// Takes `instance` out of the member set.
    pub async fn cluster_leave(&self, instance: &str) -> Result<(), RedisError> {
        self.run(Leave {
            instance: instance.to_owned(),
        })
        .await
    }

    /// Takes interval `slot` of `task` for `instance`: `None` when taken here,
    /// else who has it.
    pub async fn take_task_slot(
        &self,
        task: &str,
        slot: u64,
        instance: &str,
        ttl: Duration,
    ) -> Result<Option<String>, RedisError> {
        self.run(TakeSlot {
            task: task.to_owned(),
            slot,
            instance: instance.to_owned(),
            ttl,
        })
        .await
    }
}
