//! Recorded gaps cleared once repaired.

use tokio_postgres::Client;

use keel_market::Gap;

use tokio_postgres::types::Type;

use crate::resource::pg::{PgClient, PgError, PgOp, PgShared};
use crate::resource::Operation;

/// Deletes the recorded gaps within a repaired range; answers how many.
#[derive(Clone, Debug)]
pub struct ClearGap(pub Gap);

impl Operation for ClearGap {
    type Output = u64;
    const NAME: &'static str = "clear_gap";

    fn summary(&self) -> String {
        let g = &self.0;
        format!("{} {}..={}", g.instrument_name, g.from_seq, g.to_seq)
    }
}

impl PgOp for ClearGap {
    async fn attempt(
        &self,
        client: &mut Client,
        _pg: &PgShared,
    ) -> Result<u64, tokio_postgres::Error> {
        clear_gap(client, &self.0).await
    }
}

impl PgClient {
    /// Deletes the recorded gaps within a repaired range.
    pub async fn clear_gap(&self, gap: Gap) -> Result<u64, PgError> {
        self.run(ClearGap(gap)).await
    }
}

/// Deletes the recorded gaps a repaired range covers.
async fn clear_gap(client: &mut Client, gap: &Gap) -> Result<u64, tokio_postgres::Error> {
    client
        .execute_typed(
            "DELETE FROM trade_gaps WHERE instrument_name = $1 AND from_seq >= $2 AND to_seq <= $3",
            &[
                (&gap.instrument_name, Type::TEXT),
                (&gap.from_seq, Type::INT8),
                (&gap.to_seq, Type::INT8),
            ],
        )
        .await
}
