//! Payloads of the channels and methods Keel uses, as Deribit writes them.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use crate::market::{Direction, Instrument, Trade};

/// One public trade (`trades.*` channels, `get_last_trades_*` methods).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PublicTrade {
    /// Per-instrument sequence number.
    pub trade_seq: i64,
    /// Exchange trade id.
    pub trade_id: String,
    /// Milliseconds since the epoch.
    pub timestamp: u64,
    /// 0..=3.
    pub tick_direction: i16,
    /// Trade price.
    pub price: f64,
    /// Mark price at the time.
    pub mark_price: f64,
    /// Index price at the time.
    pub index_price: f64,
    /// Instrument.
    pub instrument_name: String,
    /// `buy` or `sell` (taker side).
    pub direction: String,
    /// Amount.
    pub amount: f64,
    /// Size in contracts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub contracts: Option<f64>,
    /// Implied volatility (options).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub iv: Option<f64>,
    /// `M`, `T` or `MT` when a side was liquidated.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub liquidation: Option<String>,
    /// Block trade id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub block_trade_id: Option<String>,
}

/// A payload field whose value Keel cannot store.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("trade {instrument}#{seq}: {problem}")]
pub struct BadTrade {
    /// Instrument.
    pub instrument: String,
    /// Sequence.
    pub seq: i64,
    /// What is wrong.
    pub problem: String,
}

impl PublicTrade {
    /// The trade as Keel stores it.
    pub fn to_trade(&self) -> Result<Trade, BadTrade> {
        let bad = |problem: String| BadTrade {
            instrument: self.instrument_name.clone(),
            seq: self.trade_seq,
            problem,
        };
        let direction = match self.direction.as_str() {
            "buy" => Direction::Buy,
            "sell" => Direction::Sell,
            other => return Err(bad(format!("direction `{other}`"))),
        };
        if !(self.price.is_finite() && self.amount.is_finite()) {
            return Err(bad("a price or amount that is not a number".into()));
        }
        if self.instrument_name.is_empty() || self.instrument_name.contains('\0') {
            return Err(bad("an empty or invalid instrument name".into()));
        }
        Ok(Trade {
            instrument_name: self.instrument_name.clone(),
            trade_seq: self.trade_seq,
            trade_id: self.trade_id.clone(),
            timestamp: from_ms(self.timestamp),
            price: self.price,
            amount: self.amount,
            direction,
            tick_direction: self.tick_direction,
            mark_price: self.mark_price,
            index_price: self.index_price,
            iv: self.iv,
            liquidation: self.liquidation.clone(),
        })
    }
}

/// Milliseconds since the epoch as a time.
pub fn from_ms(ms: u64) -> SystemTime {
    UNIX_EPOCH + Duration::from_millis(ms)
}

/// A time as milliseconds since the epoch (0 before it).
pub fn to_ms(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// `book.{instrument}.{interval}`: a snapshot, then changes.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct BookUpdate {
    /// `snapshot` or `change`.
    #[serde(rename = "type")]
    pub kind: String,
    /// Milliseconds since the epoch.
    pub timestamp: u64,
    /// Instrument.
    pub instrument_name: String,
    /// This update's id.
    pub change_id: i64,
    /// The previous update's id (absent on a snapshot).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prev_change_id: Option<i64>,
    /// `[action, price, amount]`, action `new`, `change` or `delete`.
    pub bids: Vec<(String, f64, f64)>,
    /// Same for asks.
    pub asks: Vec<(String, f64, f64)>,
}

/// `book.{instrument}.{group}.{depth}.{interval}`: always a full snapshot.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct BookGrouped {
    /// Milliseconds since the epoch.
    pub timestamp: u64,
    /// Instrument.
    pub instrument_name: String,
    /// Id of the book state.
    pub change_id: i64,
    /// `[price, amount]`, best first.
    pub bids: Vec<(f64, f64)>,
    /// `[price, amount]`, best first.
    pub asks: Vec<(f64, f64)>,
}

/// 24-hour statistics in a ticker.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TickerStats {
    /// Highest price.
    pub high: Option<f64>,
    /// Lowest price.
    pub low: Option<f64>,
    /// Volume in the base currency.
    pub volume: f64,
    /// Volume in USD.
    pub volume_usd: f64,
    /// Percentage change.
    pub price_change: Option<f64>,
}

/// `ticker.{instrument}.{interval}`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Ticker {
    /// Milliseconds since the epoch.
    pub timestamp: u64,
    /// `open` or `closed`.
    pub state: String,
    /// Instrument.
    pub instrument_name: String,
    /// Best bid.
    pub best_bid_price: f64,
    /// Amount at the best bid.
    pub best_bid_amount: f64,
    /// Best ask.
    pub best_ask_price: f64,
    /// Amount at the best ask.
    pub best_ask_amount: f64,
    /// Last trade price.
    pub last_price: f64,
    /// Mark price.
    pub mark_price: f64,
    /// Index price.
    pub index_price: f64,
    /// Open interest.
    pub open_interest: f64,
    /// Lowest price allowed.
    pub min_price: f64,
    /// Highest price allowed.
    pub max_price: f64,
    /// Last settlement price.
    #[serde(default)]
    pub settlement_price: Option<f64>,
    /// Funding rate (perpetuals).
    #[serde(default)]
    pub current_funding: Option<f64>,
    /// 8-hour funding (perpetuals).
    #[serde(default)]
    pub funding_8h: Option<f64>,
    /// Estimated delivery price.
    pub estimated_delivery_price: f64,
    /// 24-hour statistics.
    pub stats: TickerStats,
}

/// `quote.{instrument}`: best bid and ask.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Quote {
    /// Milliseconds since the epoch.
    pub timestamp: u64,
    /// Instrument.
    pub instrument_name: String,
    /// Best bid.
    pub best_bid_price: f64,
    /// Amount at the best bid.
    pub best_bid_amount: f64,
    /// Best ask.
    pub best_ask_price: f64,
    /// Amount at the best ask.
    pub best_ask_amount: f64,
}

/// `chart.trades.{instrument}.{resolution}`: the current bar.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ChartBar {
    /// Bar start, milliseconds since the epoch.
    pub tick: u64,
    /// Open.
    pub open: f64,
    /// High.
    pub high: f64,
    /// Low.
    pub low: f64,
    /// Close.
    pub close: f64,
    /// Volume.
    pub volume: f64,
    /// Cost.
    pub cost: f64,
}

/// `public/get_tradingview_chart_data`: parallel arrays.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct TradingViewChart {
    /// Bar starts, milliseconds since the epoch.
    pub ticks: Vec<u64>,
    /// Opens.
    pub open: Vec<f64>,
    /// Highs.
    pub high: Vec<f64>,
    /// Lows.
    pub low: Vec<f64>,
    /// Closes.
    pub close: Vec<f64>,
    /// Volumes.
    pub volume: Vec<f64>,
    /// Costs.
    pub cost: Vec<f64>,
    /// `ok` or `no_data`.
    pub status: String,
}

/// `public/get_last_trades_by_instrument[_and_time]`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TradesPage {
    /// Trades in the requested order.
    pub trades: Vec<PublicTrade>,
    /// More trades match than were returned.
    pub has_more: bool,
}

/// One instrument from `public/get_instruments`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct InstrumentInfo {
    /// e.g. `BTC-PERPETUAL`.
    pub instrument_name: String,
    /// Numeric id.
    pub instrument_id: u64,
    /// `future`, `option`, `spot`.
    pub kind: String,
    /// e.g. `BTC`.
    pub base_currency: String,
    /// e.g. `USD`.
    pub quote_currency: String,
    /// e.g. `USD`.
    pub counter_currency: String,
    /// e.g. `BTC`.
    pub settlement_currency: String,
    /// `perpetual`, `month`, `week`, `day`.
    pub settlement_period: String,
    /// Minimum price increment.
    pub tick_size: f64,
    /// Contract size.
    pub contract_size: f64,
    /// Smallest amount.
    pub min_trade_amount: f64,
    /// Listing time, ms.
    pub creation_timestamp: u64,
    /// Expiry, ms.
    pub expiration_timestamp: u64,
    /// Still trading.
    pub is_active: bool,
    /// `call` / `put` (options).
    #[serde(default)]
    pub option_type: Option<String>,
    /// Strike (options).
    #[serde(default)]
    pub strike: Option<f64>,
    /// Index, e.g. `btc_usd`.
    pub price_index: String,
    /// Maker fee.
    pub maker_commission: f64,
    /// Taker fee.
    pub taker_commission: f64,
    /// Maximum leverage (futures).
    #[serde(default)]
    pub max_leverage: Option<f64>,
}

impl InstrumentInfo {
    /// The instrument as Keel stores it.
    pub fn to_instrument(&self) -> Instrument {
        Instrument {
            instrument_name: self.instrument_name.clone(),
            kind: self.kind.clone(),
            base_currency: self.base_currency.clone(),
            quote_currency: self.quote_currency.clone(),
            tick_size: self.tick_size,
            contract_size: self.contract_size,
            min_trade_amount: self.min_trade_amount,
            creation_timestamp: from_ms(self.creation_timestamp),
            expiration_timestamp: from_ms(self.expiration_timestamp),
            is_active: self.is_active,
            option_type: self.option_type.clone(),
            strike: self.strike,
        }
    }
}

/// One currency from `public/get_currencies`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CurrencyInfo {
    /// e.g. `BTC`.
    pub currency: String,
    /// e.g. `Bitcoin`.
    pub currency_long: String,
    /// Decimal places of amounts.
    pub fee_precision: u32,
    /// Minimum confirmations for deposits.
    pub min_confirmations: u32,
    /// Minimum withdrawal fee.
    pub min_withdrawal_fee: f64,
    /// Withdrawal fee.
    pub withdrawal_fee: f64,
    /// `BTC`, `ETH`, ...
    pub coin_type: String,
}

/// `public/auth`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct AuthResult {
    /// Bearer token.
    pub access_token: String,
    /// Token to refresh with.
    pub refresh_token: String,
    /// Seconds the access token is valid.
    pub expires_in: u64,
    /// Granted scope.
    pub scope: String,
    /// Always `bearer`.
    pub token_type: String,
}

/// `public/hello`, `public/test`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct VersionResult {
    /// Server API version.
    pub version: String,
}
