//! Leases given up by their owner.

use futures::future::BoxFuture;
use redis::aio::MultiplexedConnection;
use redis::RedisError as DriverError;

use crate::resource::redis::{RedisClient, RedisError, RedisOp, RedisShared};
use crate::resource::Operation;

/// Gives one's own lease up; answers false when it was not the owner's.
#[derive(Clone, Debug)]
pub struct LeaseRelease {
    /// Lease key.
    pub key: String,
    /// Who holds it.
    pub owner: String,
}

impl Operation for LeaseRelease {
    type Output = bool;
    const NAME: &'static str = "lease_release";

    fn summary(&self) -> String {
        format!("{} by {}", self.key, self.owner)
    }
}

impl RedisOp for LeaseRelease {
    fn attempt<'c>(
        &'c self,
        conn: &'c mut MultiplexedConnection,
        redis: &'c RedisShared,
    ) -> BoxFuture<'c, Result<bool, DriverError>> {
        Box::pin(async move { lease_release(conn, &redis.key(&self.key), &self.owner).await })
    }
}

impl RedisClient {
    /// Gives `owner`'s lease `key` up.
    pub async fn lease_release(&self, key: &str, owner: &str) -> Result<bool, RedisError> {
        let (key, owner) = (key.to_owned(), owner.to_owned());
        self.run(LeaseRelease { key, owner }).await
    }
}

const RELEASE: &str = "if redis.call('get', KEYS[1]) == ARGV[1] then \
                       return redis.call('del', KEYS[1]) else return 0 end";

/// Gives `owner`'s lease up; false when it was not theirs.
async fn lease_release(
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
