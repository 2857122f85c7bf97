//! One round trip to the server (`SELECT 1`).

use std::time::Duration;

use tokio_postgres::Client;

use crate::resource::pg::{PgClient, PgError, PgOp, PgShared};
pub use crate::resource::Ping;

impl PgOp for Ping {
    async fn attempt(
        &self,
        client: &mut Client,
        _pg: &PgShared,
    ) -> Result<Duration, tokio_postgres::Error> {
        Ping::time(client.batch_execute("SELECT 1")).await
    }
}

impl PgClient {
    /// One round trip to the server; answers its latency.
    pub async fn ping(&self) -> Result<Duration, PgError> {
        self.run(Ping).await
    }
}
