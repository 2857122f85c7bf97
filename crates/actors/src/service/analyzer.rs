//! The analyzer: trade streams → OHLCV candles, through its own consumer group;
//! a [`TradeConsumer`] whose sink folds trades into candles.
//!
//! Each candle remembers the last `trade_seq` it includes and only later trades
//! are folded in, so a redelivered trade is never counted twice; trades that
//! arrive out of order (gap repair) make the repair recompute their buckets from
//! the `trades` table.

use std::collections::HashMap;
use std::sync::Arc;

use parking_lot::Mutex;

use ractor::ActorProcessingErr;
use serde::{Deserialize, Serialize};

use super::consumer::{TradeConsumer, TradeSink};
use crate::resource::pg::PgClient;
use crate::service::leases::Leases;
use keel_market::{Gap, Resolution, Trade};

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
        let mut check = keel_core::bounds::Check::new();
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
    /// The last `trade_seq` folded per instrument, shared by the analyzer's
    /// incarnations in this process.
    pub folded: Arc<Mutex<HashMap<String, i64>>>,
    /// Cluster mode: folds carry the token each instrument's lease is held with.
    pub leases: Option<Arc<Leases>>,
}

/// A fold refused: another analyzer took these instruments over. Nothing was
/// folded or acknowledged; the new holder folds those entries.
#[derive(Debug, thiserror::Error)]
#[error("fenced: another analyzer holds {0:?} now")]
pub struct Fenced(pub Vec<String>);

impl FoldCandles {
    /// Folds candles of `resolutions`, with no trade folded yet.
    pub fn new(resolutions: Arc<[i32]>) -> Self {
        Self {
            resolutions,
            folded: Arc::default(),
            leases: None,
        }
    }

    /// Cluster mode: folds only under `leases`, each fold fenced by its tokens.
    pub fn with_leases(mut self, leases: Arc<Leases>) -> Self {
        self.leases = Some(leases);
        self
    }

    /// The trades this batch skips over: what the analyzer never saw although
    /// the distributor may have stored it (Redis lost its group's entries, say).
    /// Recorded as gaps, gap repair recomputes those candles from the table.
    fn unseen(&self, trades: &[Trade]) -> Vec<Gap> {
        let mut last = self.folded.lock().clone();
        let mut gaps = Vec::new();
        let mut ordered: Vec<(&str, i64)> = trades
            .iter()
            .map(|t| (t.instrument_name.as_str(), t.trade_seq))
            .collect();
        ordered.sort_unstable();
        for (instrument, seq) in ordered {
            match last.get_mut(instrument) {
                Some(prev) if seq <= *prev => {}
                Some(prev) => {
                    if seq > *prev + 1 {
                        gaps.push(Gap {
                            instrument_name: instrument.to_owned(),
                            from_seq: *prev + 1,
                            to_seq: seq - 1,
                        });
                    }
                    *prev = seq;
                }
                None => {
                    last.insert(instrument.to_owned(), seq);
                }
            }
        }
        gaps
    }
}

impl TradeSink for FoldCandles {
    const NAME: &'static str = "analyzer";

    async fn store(&self, pg: &PgClient, trades: Arc<[Trade]>) -> Result<u64, ActorProcessingErr> {
        let count = trades.len() as u64;
        let fences: Option<Vec<(String, i64)>> = match &self.leases {
            None => None,
            Some(leases) => {
                let mut names: Vec<&str> =
                    trades.iter().map(|t| t.instrument_name.as_str()).collect();
                names.sort_unstable();
                names.dedup();
                let mut fences = Vec::with_capacity(names.len());
                let mut unheld = Vec::new();
                for name in names {
                    match leases.token(name) {
                        Some(token) => {
                            fences.push((name.to_owned(), i64::try_from(token).unwrap_or(i64::MAX)))
                        }
                        None => unheld.push(name.to_owned()),
                    }
                }
                if !unheld.is_empty() {
                    return Err(Fenced(unheld).into());
                }
                Some(fences)
            }
        };
        let unseen = self.unseen(&trades);
        if !unseen.is_empty() {
            pg.record_gaps(unseen.into()).await?;
        }
        let highest: Vec<(String, i64)> = trades
            .iter()
            .map(|t| (t.instrument_name.clone(), t.trade_seq))
            .collect();
        match fences {
            None => {
                pg.fold_candles(trades, Arc::clone(&self.resolutions))
                    .await?;
            }
            Some(fences) => {
                let names: Vec<String> = fences.iter().map(|(n, _)| n.clone()).collect();
                let folded = pg
                    .fold_candles_fenced(trades, Arc::clone(&self.resolutions), fences.into())
                    .await?;
                if folded.is_none() {
                    return Err(Fenced(names).into());
                }
            }
        }
        let mut folded = self.folded.lock();
        for (instrument, seq) in highest {
            let last = folded.entry(instrument).or_insert(seq);
            *last = (*last).max(seq);
        }
        // Every trade was handed over; folding itself skips repeats.
        Ok(count)
    }
}

/// Folds every trade of the streams into candles, once (group `analyzer`).
pub type Analyzer = TradeConsumer<FoldCandles>;

#[cfg(test)]
mod tests {
    use super::*;

    fn trade(instrument: &str, seq: i64) -> Trade {
        keel_deribit::model::PublicTrade::buy(instrument, seq, 1_700_000_000_000, 1.0, 1.0)
            .to_trade()
            .unwrap()
    }

    #[test]
    fn trades_the_analyzer_never_saw_become_gaps_for_repair() {
        let fold = FoldCandles::new(Arc::from([1]));
        // Nothing is known before the first batch: no gap.
        assert!(fold.unseen(&[trade("A", 10), trade("A", 11)]).is_empty());
        fold.folded.lock().insert("A".into(), 11);
        let gaps = fold.unseen(&[
            trade("A", 11),
            trade("A", 15),
            trade("A", 13),
            trade("B", 7),
        ]);
        assert_eq!(
            gaps,
            [
                Gap {
                    instrument_name: "A".into(),
                    from_seq: 12,
                    to_seq: 12
                },
                Gap {
                    instrument_name: "A".into(),
                    from_seq: 14,
                    to_seq: 14
                },
            ]
        );
    }
}
