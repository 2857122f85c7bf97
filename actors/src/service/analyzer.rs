//! The analyzer: trade streams → OHLCV candles, through its own consumer group;
//! a [`TradeConsumer`] whose sink folds trades into candles.
//!
//! Each candle remembers the last `trade_seq` it includes and only later trades
//! are folded in, so a redelivered trade is never counted twice; trades that
//! arrive out of order (gap repair) make the repair recompute their buckets from
//! the `trades` table.

use std::sync::Arc;

use ractor::ActorProcessingErr;
use serde::{Deserialize, Serialize};

use super::consumer::{TradeConsumer, TradeSink};
use crate::market::{Resolution, Trade};
use crate::resource::pg::PgClient;

/// The `[candles]` section: which candles the analyzer and gap repair maintain.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CandlesConfig {
    /// Candle lengths.
    #[serde(default = "default_resolutions")]
    pub resolutions: Vec<Resolution>,
}

fn default_resolutions() -> Vec<Resolution> {
    [1, 5, 60]
        .into_iter()
        .filter_map(Resolution::minutes)
        .collect()
}

impl Default for CandlesConfig {
    fn default() -> Self {
        Self {
            resolutions: default_resolutions(),
        }
    }
}

impl CandlesConfig {
    /// Every problem, as `(key, what is expected)`.
    pub fn problems(&self) -> Vec<(String, String)> {
        let mut check = crate::bounds::Check::new();
        if self.resolutions.len() > 16 {
            check.push("resolutions", "at most 16 candle lengths");
        }
        for (i, r) in self.resolutions.iter().enumerate() {
            if self.resolutions[..i].contains(r) {
                check.push("resolutions", "each candle length once");
            }
        }
        check.finish()
    }

    /// The resolutions in minutes, as the database stores them.
    pub fn minutes(&self) -> Arc<[i32]> {
        self.resolutions
            .iter()
            .map(|r| i32::try_from(r.as_minutes()).unwrap_or(i32::MAX))
            .collect()
    }
}

/// Folds trades into candles.
#[derive(Clone, Debug)]
pub struct FoldCandles {
    /// Resolutions in minutes.
    pub resolutions: Arc<[i32]>,
}

impl TradeSink for FoldCandles {
    const NAME: &'static str = "analyzer";

    async fn store(&self, pg: &PgClient, trades: Vec<Trade>) -> Result<u64, ActorProcessingErr> {
        let count = trades.len() as u64;
        pg.fold_candles(trades.into(), Arc::clone(&self.resolutions))
            .await?;
        // Every trade was handed over; folding itself skips repeats.
        Ok(count)
    }
}

/// The analyzer actor.
pub type Analyzer = TradeConsumer<FoldCandles>;
