//! Missing trade ranges recorded for repair.

use std::sync::Arc;

use tokio_postgres::Client;

use keel_market::Gap;

use tokio_postgres::types::Type;

use crate::resource::pg::executor::begin;
use crate::resource::pg::{PgClient, PgError, PgOp, PgShared};
use crate::resource::Operation;

/// Records missing trade ranges (idempotent); answers how many were new.
#[derive(Clone, Debug)]
pub struct RecordGaps(pub Arc<[Gap]>);

impl Operation for RecordGaps {
    type Output = u64;
    const NAME: &'static str = "record_gaps";

    fn summary(&self) -> String {
        format!("{} gaps", self.0.len())
    }
}

impl PgOp for RecordGaps {
    async fn attempt(
        &self,
        client: &mut Client,
        pg: &PgShared,
    ) -> Result<u64, tokio_postgres::Error> {
        record_gaps(client, pg.timeout_ms(), &self.0).await
    }
}

impl PgClient {
    /// Records missing trade ranges.
    pub async fn record_gaps(&self, gaps: Arc<[Gap]>) -> Result<u64, PgError> {
        self.run(RecordGaps(gaps)).await
    }
}

/// Records gaps (idempotent: the same range twice is one row).
async fn record_gaps(
    client: &mut Client,
    timeout_ms: u128,
    gaps: &[Gap],
) -> Result<u64, tokio_postgres::Error> {
    let names: Vec<&str> = gaps.iter().map(|g| g.instrument_name.as_str()).collect();
    let froms: Vec<i64> = gaps.iter().map(|g| g.from_seq).collect();
    let tos: Vec<i64> = gaps.iter().map(|g| g.to_seq).collect();
    let tx = begin(client, timeout_ms).await?;
    let n = tx
        .execute_typed(
            "INSERT INTO trade_gaps (instrument_name, from_seq, to_seq)
             SELECT * FROM unnest($1::text[], $2::int8[], $3::int8[])
             ON CONFLICT DO NOTHING",
            &[
                (&names, Type::TEXT_ARRAY),
                (&froms, Type::INT8_ARRAY),
                (&tos, Type::INT8_ARRAY),
            ],
        )
        .await?;
    tx.commit().await?;
    Ok(n)
}
