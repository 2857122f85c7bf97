//! Leases taken when free.

use std::time::Duration;

use futures::future::BoxFuture;
use redis::aio::MultiplexedConnection;
use redis::{RedisError as DriverError, Value};

use crate::resource::redis::{RedisClient, RedisError, RedisOp, RedisShared};
use crate::resource::Operation;

/// Takes a lease if it is free; answers whether it is now the owner's.
#[derive(Clone, Debug)]
pub struct LeaseAcquire {
    /// Lease key.
    pub key: String,
    /// Who holds it.
    pub owner: String,
    /// How long it lasts unless renewed.
    pub ttl: Duration,
}

impl Operation for LeaseAcquire {
    type Output = bool;
    const NAME: &'static str = "lease_acquire";

    fn summary(&self) -> String {
        format!("{} for {}, {:?}", self.key, self.owner, self.ttl)
    }
}

impl RedisOp for LeaseAcquire {
    fn attempt<'c>(
        &'c self,
        conn: &'c mut MultiplexedConnection,
        redis: &'c RedisShared,
    ) -> BoxFuture<'c, Result<bool, DriverError>> {
        Box::pin(
            async move { lease_acquire(conn, &redis.key(&self.key), &self.owner, self.ttl).await },
        )
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
        let (key, owner) = (key.to_owned(), owner.to_owned());
        self.run(LeaseAcquire { key, owner, ttl }).await
    }
}

/// `SET key owner NX PX ttl`: true when the lease was free and is now `owner`'s.
async fn lease_acquire(
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
