//! Rows deleted by age, in short batches (the janitor's retention).

use std::time::SystemTime;

use serde::{Deserialize, Serialize};
use tokio_postgres::Client;

use crate::resource::pg::executor;
use crate::resource::Execute;

use tokio_postgres::types::Type;

use crate::resource::pg::executor::begin;
use crate::resource::pg::{PgClient, PgError, PgOp, PgShared};
use crate::resource::Operation;

/// Tables the janitor may prune by age.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Retained {
    /// `trades`, by trade time.
    Trades,
    /// `candles`, by bucket start.
    Candles,
}

/// Deletes rows of a table older than a time, in batches of `delete_batch` rows,
/// each its own short transaction so no lock is held for long; answers how many.
#[derive(Clone, Debug)]
pub struct DeleteOlderThan {
    /// The table rows are deleted from.
    pub table: Retained,
    /// Rows older than this go.
    pub before: SystemTime,
}

impl Operation for DeleteOlderThan {
    type Output = u64;
    const NAME: &'static str = "delete_older_than";

    fn summary(&self) -> String {
        let before = humantime::format_rfc3339_seconds(self.before);
        format!("{:?} before {before}", self.table)
    }
}

impl Execute<PgShared> for DeleteOlderThan {
    type Error = PgError;

    async fn execute(&self, pg: &PgShared) -> Result<u64, PgError> {
        let limit = i64::from(pg.config.delete_batch);
        let batch = DeleteBatch {
            table: self.table,
            before: self.before,
            limit,
        };
        let mut total = 0;
        loop {
            let n = executor::execute(pg, &batch).await?;
            total += n;
            if n < limit as u64 {
                return Ok(total);
            }
        }
    }
}

/// One batch of a [`DeleteOlderThan`], retried on its own.
#[derive(Clone, Debug)]
struct DeleteBatch {
    table: Retained,
    before: SystemTime,
    limit: i64,
}

impl Operation for DeleteBatch {
    type Output = u64;
    const NAME: &'static str = DeleteOlderThan::NAME;

    fn summary(&self) -> String {
        format!("{:?}, {} rows at most", self.table, self.limit)
    }
}

impl PgOp for DeleteBatch {
    async fn attempt(
        &self,
        client: &mut Client,
        pg: &PgShared,
    ) -> Result<u64, tokio_postgres::Error> {
        delete_batch(client, pg.timeout_ms(), self.table, self.before, self.limit).await
    }
}

impl PgClient {
    /// Deletes rows of `table` older than `before`, in batches.
    pub async fn delete_older_than(
        &self,
        table: Retained,
        before: SystemTime,
    ) -> Result<u64, PgError> {
        self.run(DeleteOlderThan { table, before }).await
    }
}

/// Deletes at most `limit` rows older than `before` in one short transaction.
async fn delete_batch(
    client: &mut Client,
    timeout_ms: u128,
    table: Retained,
    before: SystemTime,
    limit: i64,
) -> Result<u64, tokio_postgres::Error> {
    // Table and column names come from a closed enum, never from input.
    let (table, column) = match table {
        Retained::Trades => ("trades", "ts"),
        Retained::Candles => ("candles", "bucket"),
    };
    let sql = format!(
        "DELETE FROM {table} WHERE ctid = ANY(ARRAY(
             SELECT ctid FROM {table} WHERE {column} < $1 LIMIT $2))"
    );
    let tx = begin(client, timeout_ms).await?;
    let n = tx
        .execute_typed(&sql, &[(&before, Type::TIMESTAMPTZ), (&limit, Type::INT8)])
        .await?;
    tx.commit().await?;
    Ok(n)
}
