//! Leases extended by their owner.

use std::time::Duration;

use futures::future::BoxFuture;
use redis::aio::MultiplexedConnection;
use redis::RedisError as DriverError;

use crate::resource::redis::{RedisClient, RedisError, RedisOp, RedisShared};
use crate::resource::Operation;

/// Extends one's own lease; answers false when it is no longer the owner's.
#[derive(Clone, Debug)]
pub struct LeaseRenew {
    /// Lease key.
    pub key: String,
    /// Who holds it.
    pub owner: String,
    /// The new time to live.
    pub ttl: Duration,
}

impl Operation for LeaseRenew {
    type Output = bool;
    const NAME: &'static str = "lease_renew";

    fn summary(&self) -> String {
        format!("{} for {}, {:?}", self.key, self.owner, self.ttl)
    }
}

impl RedisOp for LeaseRenew {
    fn attempt<'c>(
        &'c self,
        conn: &'c mut MultiplexedConnection,
        redis: &'c RedisShared,
    ) -> BoxFuture<'c, Result<bool, DriverError>> {
        Box::pin(
            async move { lease_renew(conn, &redis.key(&self.key), &self.owner, self.ttl).await },
        )
    }
}

impl RedisClient {
    /// Extends `owner`'s lease `key`.
    pub async fn lease_renew(
        &self,
        key: &str,
        owner: &str,
        ttl: Duration,
    ) -> Result<bool, RedisError> {
        let (key, owner) = (key.to_owned(), owner.to_owned());
        self.run(LeaseRenew { key, owner, ttl }).await
    }
}

const RENEW: &str = "if redis.call('get', KEYS[1]) == ARGV[1] then \
                     return redis.call('pexpire', KEYS[1], ARGV[2]) else return 0 end";

/// Extends `owner`'s lease; false when it is no longer theirs.
async fn lease_renew(
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
