//! One round trip to the server.

use std::time::{Duration, Instant};

use tokio_postgres::Client;

use futures::future::BoxFuture;

use crate::resource::pg::{PgClient, PgError, PgOp, PgShared};
use crate::resource::Operation;

/// One round trip to the server; answers its latency.
#[derive(Clone, Copy, Debug)]
pub struct Ping;

impl Operation for Ping {
    type Output = Duration;
    const NAME: &'static str = "ping";

    fn summary(&self) -> String {
        "ping".into()
    }
}

impl PgOp for Ping {
    fn attempt<'c>(
        &'c self,
        client: &'c mut Client,
        _pg: &'c PgShared,
    ) -> BoxFuture<'c, Result<Duration, tokio_postgres::Error>> {
        Box::pin(async move {
            let started = Instant::now();
            ping(client).await?;
            Ok(started.elapsed())
        })
    }
}

impl PgClient {
    /// One round trip to the server.
    pub async fn ping(&self) -> Result<Duration, PgError> {
        self.run(Ping).await
    }
}

/// One round trip.
async fn ping(client: &mut Client) -> Result<(), tokio_postgres::Error> {
    client.batch_execute("SELECT 1").await
}
