//! Consumer groups created (with their stream).

use redis::aio::MultiplexedConnection;
use redis::RedisError as DriverError;

use crate::resource::redis::{RedisClient, RedisError, RedisOp, RedisShared};
use crate::resource::Operation;

/// Creates a consumer group (and the stream); answers false if it existed.
#[derive(Clone, Debug)]
pub struct CreateGroup {
    /// The stream's key; created empty if it does not exist (`MKSTREAM`).
    pub stream: String,
    /// The consumer group's name.
    pub group: String,
}

impl Operation for CreateGroup {
    type Output = bool;
    const NAME: &'static str = "create_group";

    fn summary(&self) -> String {
        format!("group {} on {}", self.group, self.stream)
    }
}

impl RedisOp for CreateGroup {
    async fn attempt(
        &self,
        conn: &mut MultiplexedConnection,
        redis: &RedisShared,
    ) -> Result<bool, DriverError> {
        create_group(conn, &redis.key(&self.stream), &self.group).await
    }
}

impl RedisClient {
    /// Creates `group` on `stream` (and the stream); false if it existed.
    pub async fn create_group(&self, stream: &str, group: &str) -> Result<bool, RedisError> {
        let (stream, group) = (stream.to_owned(), group.to_owned());
        self.run(CreateGroup { stream, group }).await
    }
}

/// `XGROUP CREATE key group 0 MKSTREAM`; false when the group already existed.
/// Starting at 0 means a new group sees what the stream already holds.
async fn create_group(
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
