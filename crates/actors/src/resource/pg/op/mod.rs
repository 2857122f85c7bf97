//! PgActor's operations, one file each: the operation's type (its arguments),
//! its name and summary, whether it is idempotent, the SQL it runs on a pooled
//! connection, and the [`PgClient`](super::PgClient) method that sends it.
//! There is deliberately no "run this SQL".
//!
//! Statements are sent with `execute_typed`/`batch_execute` (unnamed), and the
//! one named statement a COPY needs is closed inside its own transaction, so
//! nothing outlives a checkout and PgBouncer's transaction pooling works.

mod clear_gap;
mod deactivate_instruments;
mod delete_older_than;
mod find_holes;
mod fold_candles;
mod insert_trades;
mod list_gaps;
mod max_seq;
mod orders;
mod ping;
mod recompute_candles;
mod record_gaps;
mod upsert_candles;
mod upsert_instruments;

pub use clear_gap::ClearGap;
pub use deactivate_instruments::DeactivateInstruments;
pub use delete_older_than::{DeleteOlderThan, Retained};
pub use find_holes::FindHoles;
pub use fold_candles::{FoldCandles, RaiseFence};
pub use insert_trades::{copy_trades, InsertTrades};
pub use list_gaps::ListGaps;
pub use max_seq::MaxSeq;
pub use orders::{
    AmendOrder, FillRow, FillsFrom, InsertFills, LiveOrder, LiveOrders, MarkSent, NewOrder,
    OrderUpdate, RecordOrders, StoredFills, UpdateOrders,
};
pub use ping::Ping;
pub use recompute_candles::RecomputeCandles;
pub use record_gaps::RecordGaps;
pub use upsert_candles::UpsertCandles;
pub use upsert_instruments::UpsertInstruments;

use std::future::Future;

use tokio_postgres::Client;

use super::{executor, PgError, PgShared};
use crate::resource::{Execute, Operation};

/// An operation PgActor runs through its executor: one attempt on a pooled
/// connection, retried with backoff on transient errors.
pub trait PgOp: Operation {
    /// Whether it may run again after an attempt that may have reached the
    /// server (an idempotent write, or a read).
    const IDEMPOTENT: bool = true;

    /// One attempt on `client`.
    fn attempt(
        &self,
        client: &mut Client,
        pg: &PgShared,
    ) -> impl Future<Output = Result<Self::Output, tokio_postgres::Error>> + Send;
}

impl<O: PgOp> Execute<PgShared> for O {
    type Error = PgError;

    fn execute<'a>(
        &'a self,
        pg: &'a PgShared,
    ) -> impl Future<Output = Result<O::Output, PgError>> + Send + 'a {
        executor::execute(pg, self)
    }
}
