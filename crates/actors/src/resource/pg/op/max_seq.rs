//! An instrument's highest stored sequence number.

use tokio_postgres::Client;

use tokio_postgres::types::Type;

use crate::resource::pg::{PgClient, PgError, PgOp, PgShared};
use crate::resource::Operation;

/// The highest stored `trade_seq` of an instrument.
#[derive(Clone, Debug)]
pub struct MaxSeq(pub String);

impl Operation for MaxSeq {
    type Output = Option<i64>;
    const NAME: &'static str = "max_seq";

    fn summary(&self) -> String {
        self.0.clone()
    }
}

impl PgOp for MaxSeq {
    async fn attempt(
        &self,
        client: &mut Client,
        _pg: &PgShared,
    ) -> Result<Option<i64>, tokio_postgres::Error> {
        max_seq(client, &self.0).await
    }
}

impl PgClient {
    /// The highest stored `trade_seq` of `instrument`.
    pub async fn max_seq(&self, instrument: &str) -> Result<Option<i64>, PgError> {
        self.run(MaxSeq(instrument.to_owned())).await
    }
}

/// The highest stored `trade_seq` of an instrument.
async fn max_seq(
    client: &mut Client,
    instrument: &str,
) -> Result<Option<i64>, tokio_postgres::Error> {
    let row = client
        .query_typed_one(
            "SELECT max(trade_seq) FROM trades WHERE instrument_name = $1",
            &[(&instrument, Type::TEXT)],
        )
        .await?;
    row.try_get(0)
}
