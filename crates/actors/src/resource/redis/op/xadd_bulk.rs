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

/// As [`XaddBulk`], only while a lease holds the given value: the check and
/// the appends are one script, so a writer whose lease expired (and went to
/// another instance) adds nothing, however late its write arrives.
#[derive(Clone, Debug)]
pub struct XaddFenced {
    /// The appends.
    pub add: XaddBulk,
    /// The lease key (logical).
    pub lease: String,
    /// What it must hold: the writer's id and fencing token.
    pub holder: String,
}

impl Operation for XaddFenced {
    /// Entries appended, or `None`: the lease is not the writer's.
    type Output = Option<u64>;
    const NAME: &'static str = "xadd_fenced";

    fn summary(&self) -> String {
        format!(
            "{} entries to {} under {}",
            self.add.entries.len(),
            self.add.stream,
            self.holder
        )
    }
}

/// `ARGV`: the holder, the trim length, the holder's fencing token, then per
/// entry its field count and its fields and values. Each entry also gets field
/// `k`, the token it was written under, so a reader can check that a stream's
/// tokens never go back.
const XADD_FENCED: &str = "\
if redis.call('GET', KEYS[2]) ~= ARGV[1] then return false end
local i, n = 4, 0
while i <= #ARGV do
  local fields = tonumber(ARGV[i])
  local args = {'XADD', KEYS[1], 'MAXLEN', '~', ARGV[2], '*'}
  for j = 1, fields * 2 do args[6 + j] = ARGV[i + j] end
  args[#args + 1] = 'k'
  args[#args + 1] = ARGV[3]
  redis.call(unpack(args))
  i = i + 1 + fields * 2
  n = n + 1
end
return n";

impl RedisOp for XaddFenced {
    const WRITES: bool = true;

    async fn attempt(
        &self,
        conn: &mut MultiplexedConnection,
        redis: &RedisShared,
    ) -> Result<Option<u64>, DriverError> {
        let maxlen = (redis.config.stream_maxlen / self.add.per_entry.max(1)).max(1);
        let script = redis::Script::new(XADD_FENCED);
        let mut call = script.prepare_invoke();
        call.key(redis.key(&self.add.stream))
            .key(redis.key(&self.lease))
            .arg(&self.holder)
            .arg(maxlen)
            .arg(self.holder.rsplit_once(':').map_or("", |(_, token)| token));
        for fields in self.add.entries.iter() {
            call.arg(fields.len());
            for (name, value) in fields {
                call.arg(name).arg(value.as_slice());
            }
        }
        call.invoke_async(conn).await
    }
}

impl RedisClient {
    /// As [`xadd_packed`](Self::xadd_packed), only while `lease` holds
    /// `holder`: `None` (nothing appended) once it does not.
    pub async fn xadd_fenced(
        &self,
        stream: &str,
        entries: Arc<[Fields]>,
        per_entry: u64,
        lease: &str,
        holder: &str,
    ) -> Result<Option<u64>, RedisError> {
        self.run(XaddFenced {
            add: XaddBulk {
                stream: stream.to_owned(),
                entries,
                per_entry,
            },
            lease: lease.to_owned(),
            holder: holder.to_owned(),
        })
        .await
    }
}
