//! Holes in an instrument's stored sequence, whatever their cause.

use tokio_postgres::Client;

use keel_market::Gap;

use tokio_postgres::types::Type;

use crate::resource::pg::{PgClient, PgError, PgOp, PgShared};
use crate::resource::Operation;

/// Holes in an instrument's stored `trade_seq`s.
#[derive(Clone, Debug)]
pub struct FindHoles(pub String);

impl Operation for FindHoles {
    type Output = Vec<Gap>;
    const NAME: &'static str = "find_holes";

    fn summary(&self) -> String {
        self.0.clone()
    }
}

impl PgOp for FindHoles {
    async fn attempt(
        &self,
        client: &mut Client,
        _pg: &PgShared,
    ) -> Result<Vec<Gap>, tokio_postgres::Error> {
        find_holes(client, &self.0).await
    }
}

impl PgClient {
    /// Holes in `instrument`'s stored `trade_seq`s.
    pub async fn find_holes(&self, instrument: &str) -> Result<Vec<Gap>, PgError> {
        self.run(FindHoles(instrument.to_owned())).await
    }
}

/// Holes in an instrument's stored `trade_seq`s, whatever their cause.
async fn find_holes(
    client: &mut Client,
    instrument: &str,
) -> Result<Vec<Gap>, tokio_postgres::Error> {
    let rows = client
        .query_typed(
            "SELECT trade_seq + 1, next_seq - 1 FROM (
                 SELECT trade_seq, lead(trade_seq) OVER (ORDER BY trade_seq) AS next_seq
                 FROM trades WHERE instrument_name = $1) s
             WHERE next_seq > trade_seq + 1",
            &[(&instrument, Type::TEXT)],
        )
        .await?;
    rows.iter()
        .map(|r| {
            Ok(Gap {
                instrument_name: instrument.to_owned(),
                from_seq: r.try_get(0)?,
                to_seq: r.try_get(1)?,
            })
        })
        .collect()
}
