//! One executed trade.

use std::time::SystemTime;

use serde::{Deserialize, Serialize};

/// Which side took liquidity.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Direction {
    /// The taker bought.
    Buy,
    /// The taker sold.
    Sell,
}

impl Direction {
    /// The stored spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Direction::Buy => "buy",
            Direction::Sell => "sell",
        }
    }
}

/// A trade, identified by `(instrument_name, trade_seq)`: writing it twice is harmless.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Trade {
    /// The instrument, e.g. `BTC-PERPETUAL`.
    pub instrument_name: String,
    /// Per-instrument sequence number, increasing by exactly one.
    pub trade_seq: i64,
    /// The exchange's trade id.
    pub trade_id: String,
    /// When the exchange matched it.
    pub timestamp: SystemTime,
    /// Price in the instrument's quote currency.
    pub price: f64,
    /// Size in the instrument's amount unit.
    pub amount: f64,
    /// Taker side.
    pub direction: Direction,
    /// 0..=3: plus tick, zero-plus tick, minus tick, zero-minus tick.
    pub tick_direction: i16,
    /// Mark price at the time of the trade (Deribit sent none before 2020).
    pub mark_price: Option<f64>,
    /// Index price at the time of the trade.
    pub index_price: f64,
    /// Implied volatility (options only).
    pub iv: Option<f64>,
    /// Liquidation marker (`M`, `T`, `MT`), when one side was liquidated.
    pub liquidation: Option<String>,
    /// Block trade id, when the trade was a block trade.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub block_trade_id: Option<String>,
    /// The combo (spread, straddle, ...) this trade is a leg of.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub combo_id: Option<String>,
    /// The combo trade this leg belongs to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub combo_trade_id: Option<String>,
}
