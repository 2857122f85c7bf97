//! The recorded gaps, for repair.

use tokio_postgres::Client;

use keel_market::Gap;

use crate::resource::pg::{PgClient, PgError, PgOp, PgShared};
use crate::resource::Operation;

/// Every recorded gap.
#[derive(Clone, Copy, Debug)]
pub struct ListGaps;

impl Operation for ListGaps {
    type Output = Vec<Gap>;
    const NAME: &'static str = "list_gaps";

    fn summary(&self) -> String {
        "list gaps".into()
    }
}

impl PgOp for ListGaps {
    async fn attempt(
        &self,
        client: &mut Client,
        _pg: &PgShared,
    ) -> Result<Vec<Gap>, tokio_postgres::Error> {
        list_gaps(client).await
    }
}

impl PgClient {
    /// Every recorded gap.
    pub async fn list_gaps(&self) -> Result<Vec<Gap>, PgError> {
        self.run(ListGaps).await
    }
}

/// Every recorded gap, oldest first.
async fn list_gaps(client: &mut Client) -> Result<Vec<Gap>, tokio_postgres::Error> {
    let rows = client
        .query_typed(
            "SELECT instrument_name, from_seq, to_seq FROM trade_gaps
             ORDER BY instrument_name, from_seq",
            &[],
        )
        .await?;
    rows.iter()
        .map(|r| {
            Ok(Gap {
                instrument_name: r.try_get(0)?,
                from_seq: r.try_get(1)?,
                to_seq: r.try_get(2)?,
            })
        })
        .collect()
}
