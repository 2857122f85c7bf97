//! Leases: a key one owner holds for a time. Taken only when free; extended and
//! given up only by the owner (compare-and-set scripts), so a lease that expired
//! and went to someone else is never touched.

use std::fmt;
use std::time::Duration;

use redis::aio::MultiplexedConnection;
use redis::{RedisError as DriverError, Value};

use crate::resource::redis::{RedisClient, RedisError, RedisOp, RedisShared};
use crate::resource::Operation;

/// One step of a lease's life; answers whether it succeeded for the owner.
#[derive(Clone, Debug)]
pub struct Lease {
    /// Lease key (logical: the prefix is added by the actor).
    pub key: String,
    /// Who holds it, or wants to.
    pub owner: String,
    /// What to do with it.
    pub step: LeaseStep,
}

/// What a [`Lease`] call does.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LeaseStep {
    /// Take it for this long if it is free.
    Acquire(Duration),
    /// Extend one's own to this time to live; false once it is not one's own.
    Renew(Duration),
    /// Give one's own up; false when it was not one's own.
    Release,
}

impl fmt::Display for LeaseStep {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Acquire(ttl) => write!(f, "acquire for {ttl:?}"),
            Self::Renew(ttl) => write!(f, "renew for {ttl:?}"),
            Self::Release => f.write_str("release"),
        }
    }
}

impl Operation for Lease {
    type Output = bool;
    const NAME: &'static str = "lease";

    fn summary(&self) -> String {
        format!("{} {} by {}", self.step, self.key, self.owner)
    }
}

impl RedisOp for Lease {
    async fn attempt(
        &self,
        conn: &mut MultiplexedConnection,
        redis: &RedisShared,
    ) -> Result<bool, DriverError> {
        lease(conn, &redis.key(&self.key), &self.owner, self.step).await
    }
}

impl RedisClient {
    /// Takes the lease `key` for `owner` if it is free.
    pub async fn lease_acquire(
        &self,
        key: &str,
        owner: &str,
        ttl: Duration,
    ) -> Result<bool, RedisError> {
        self.lease(key, owner, LeaseStep::Acquire(ttl)).await
    }

    /// Extends `owner`'s lease `key`.
    pub async fn lease_renew(
        &self,
        key: &str,
        owner: &str,
        ttl: Duration,
    ) -> Result<bool, RedisError> {
        self.lease(key, owner, LeaseStep::Renew(ttl)).await
    }

    /// Gives `owner`'s lease `key` up.
    pub async fn lease_release(&self, key: &str, owner: &str) -> Result<bool, RedisError> {
        self.lease(key, owner, LeaseStep::Release).await
    }

    async fn lease(&self, key: &str, owner: &str, step: LeaseStep) -> Result<bool, RedisError> {
        let (key, owner) = (key.to_owned(), owner.to_owned());
        self.run(Lease { key, owner, step }).await
    }
}

const RENEW: &str = "if redis.call('get', KEYS[1]) == ARGV[1] then \
                     return redis.call('pexpire', KEYS[1], ARGV[2]) else return 0 end";

const RELEASE: &str = "if redis.call('get', KEYS[1]) == ARGV[1] then \
                       return redis.call('del', KEYS[1]) else return 0 end";

/// `SET key owner NX PX ttl` to acquire; the owner-checking scripts otherwise.
async fn lease(
    conn: &mut MultiplexedConnection,
    key: &str,
    owner: &str,
    step: LeaseStep,
) -> Result<bool, DriverError> {
    let millis = |ttl: Duration| u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX);
    let changed: i64 = match step {
        LeaseStep::Acquire(ttl) => {
            let reply: Value = redis::cmd("SET")
                .arg(key)
                .arg(owner)
                .arg("NX")
                .arg("PX")
                .arg(millis(ttl))
                .query_async(conn)
                .await?;
            return Ok(matches!(reply, Value::Okay));
        }
        LeaseStep::Renew(ttl) => {
            redis::Script::new(RENEW)
                .key(key)
                .arg(owner)
                .arg(millis(ttl))
                .invoke_async(conn)
                .await?
        }
        LeaseStep::Release => {
            redis::Script::new(RELEASE)
                .key(key)
                .arg(owner)
                .invoke_async(conn)
                .await?
        }
    };
    Ok(changed == 1)
}
