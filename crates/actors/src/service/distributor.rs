//! The distributor: trade streams → PostgreSQL, idempotent on
//! `(instrument_name, trade_seq)`; a [`TradeConsumer`] whose sink stores trades.

use std::sync::Arc;

use ractor::ActorProcessingErr;

use super::consumer::{TradeConsumer, TradeSink};
use crate::resource::pg::PgClient;
use keel_market::Trade;

/// Stores trades.
#[derive(Clone, Copy, Debug, Default)]
pub struct StoreTrades;

impl TradeSink for StoreTrades {
    const NAME: &'static str = "distributor";

    async fn store(&self, pg: &PgClient, trades: Arc<[Trade]>) -> Result<u64, ActorProcessingErr> {
        Ok(pg.insert_trades(trades).await?)
    }
}

/// Stores every trade of the streams in PostgreSQL, once (group `distributor`).
pub type Distributor = TradeConsumer<StoreTrades>;
