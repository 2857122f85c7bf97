//! One round trip to the server (`SELECT 1`).

use std::time::Duration;

use futures::future::BoxFuture;
use tokio_postgres::Client;

use crate::resource::pg::{PgClient, PgError, PgOp, PgShared};
pub use crate::resource::Ping;

impl PgOp for Ping {
    fn attempt<'c>(
        &'c self,
        client: &'c mut Client,
        _pg: &'c PgShared,
    ) -> BoxFuture<'c, Result<Duration, tokio_postgres::Error>> {
        Box::pin(Ping::time(client.batch_execute("SELECT 1")))
    }
}

impl PgClient {
    /// One round trip to the server; answers its latency.
    pub async fn ping(&self) -> Result<Duration, PgError> {
        self.run(Ping).await
    }
}
