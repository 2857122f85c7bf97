//! Payloads of the channels and methods Keel uses, as Deribit writes them.

use std::borrow::Cow;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};
use serde_json::Value;

use keel_market::{Direction, Instrument, Trade};

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
    /// Mark price at the time (absent in 2019-2020 frames).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mark_price: Option<f64>,
    /// Index price at the time.
    pub index_price: f64,
    /// The instrument traded (`BTC-PERPETUAL`).
    pub instrument_name: String,
    /// `buy` or `sell` (taker side).
    pub direction: String,
    /// Amount traded: USD for inverse futures and perpetuals, the base currency otherwise.
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
    /// The block trade this trade belongs to, when it was one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub block_trade_id: Option<String>,
    /// The combo this trade was part of (a leg of a spread, a straddle, ...).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub combo_id: Option<String>,
    /// The combo trade this leg belongs to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub combo_trade_id: Option<String>,
}

/// A [`PublicTrade`] as read from the exchange's text, its strings borrowed
/// from it (owned only where the text has an escape): the receiver reads
/// thousands a frame and allocates nothing for them. [`PublicTrade::view`]
/// gives the same view of an owned trade, so one set of checks serves both.
/// Fields, names and defaults as [`PublicTrade`]'s; the fuzz targets check
/// the two read every text alike.
#[derive(Clone, Debug, PartialEq, Deserialize)]
pub struct TradeView<'a> {
    /// Per-instrument sequence number.
    pub trade_seq: i64,
    /// Exchange trade id.
    #[serde(borrow)]
    pub trade_id: Cow<'a, str>,
    /// Milliseconds since the epoch.
    pub timestamp: u64,
    /// 0..=3.
    pub tick_direction: i16,
    /// Trade price.
    pub price: f64,
    /// Mark price at the time.
    #[serde(default)]
    pub mark_price: Option<f64>,
    /// Index price at the time.
    pub index_price: f64,
    /// The instrument traded.
    #[serde(borrow)]
    pub instrument_name: Cow<'a, str>,
    /// `buy` or `sell`.
    #[serde(borrow)]
    pub direction: Cow<'a, str>,
    /// Amount traded.
    pub amount: f64,
    /// Size in contracts.
    #[serde(default)]
    pub contracts: Option<f64>,
    /// Implied volatility.
    #[serde(default)]
    pub iv: Option<f64>,
    /// The rare fields: read owned (serde borrows a `Cow` only outside an `Option`).
    #[serde(default)]
    pub liquidation: Option<Cow<'a, str>>,
    /// The block trade.
    #[serde(default)]
    pub block_trade_id: Option<Cow<'a, str>>,
    /// The combo.
    #[serde(default)]
    pub combo_id: Option<Cow<'a, str>>,
    /// The combo trade.
    #[serde(default)]
    pub combo_trade_id: Option<Cow<'a, str>>,
}

impl<'a> TradeView<'a> {
    /// Reads one trade's JSON text (whitespace around it allowed), as serde
    /// reads it: the exchange's usual shape by hand, anything else by serde,
    /// which also says what is wrong with a text that is not a trade.
    pub fn read(text: &'a str) -> Result<Self, serde_json::Error> {
        if let Some((view, end)) = crate::scan::trade(text) {
            if crate::payload::skip_whitespace(text.as_bytes(), end) == text.len() {
                return Ok(view);
            }
        }
        serde_json::from_str(text)
    }
}

impl TradeView<'_> {
    /// The owned trade.
    pub fn to_public(&self) -> PublicTrade {
        let owned = |s: &Option<Cow<'_, str>>| s.as_deref().map(str::to_owned);
        PublicTrade {
            trade_seq: self.trade_seq,
            trade_id: self.trade_id.clone().into_owned(),
            timestamp: self.timestamp,
            tick_direction: self.tick_direction,
            price: self.price,
            mark_price: self.mark_price,
            index_price: self.index_price,
            instrument_name: self.instrument_name.clone().into_owned(),
            direction: self.direction.clone().into_owned(),
            amount: self.amount,
            contracts: self.contracts,
            iv: self.iv,
            liquidation: owned(&self.liquidation),
            block_trade_id: owned(&self.block_trade_id),
            combo_id: owned(&self.combo_id),
            combo_trade_id: owned(&self.combo_trade_id),
        }
    }
}

/// A payload field whose value Keel cannot store.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("trade {instrument}#{seq}: {problem}")]
pub struct BadTrade {
    /// The trade's instrument.
    pub instrument: String,
    /// Sequence.
    pub seq: i64,
    /// What is wrong.
    pub problem: String,
}

impl PublicTrade {
    /// A buy of `amount` at `price` (its mark and index price too) with none of
    /// the optional fields: the trade tests build by hand.
    pub fn buy(instrument: &str, trade_seq: i64, timestamp: u64, price: f64, amount: f64) -> Self {
        Self {
            trade_seq,
            trade_id: trade_seq.to_string(),
            timestamp,
            tick_direction: 0,
            price,
            mark_price: Some(price),
            index_price: price,
            instrument_name: instrument.into(),
            direction: "buy".into(),
            amount,
            contracts: None,
            iv: None,
            liquidation: None,
            block_trade_id: None,
            combo_id: None,
            combo_trade_id: None,
        }
    }

    /// The trade as a [`TradeView`], borrowing its strings.
    pub fn view(&self) -> TradeView<'_> {
        TradeView {
            trade_seq: self.trade_seq,
            trade_id: Cow::Borrowed(&self.trade_id),
            timestamp: self.timestamp,
            tick_direction: self.tick_direction,
            price: self.price,
            mark_price: self.mark_price,
            index_price: self.index_price,
            instrument_name: Cow::Borrowed(&self.instrument_name),
            direction: Cow::Borrowed(&self.direction),
            amount: self.amount,
            contracts: self.contracts,
            iv: self.iv,
            liquidation: self.liquidation.as_deref().map(Cow::Borrowed),
            block_trade_id: self.block_trade_id.as_deref().map(Cow::Borrowed),
            combo_id: self.combo_id.as_deref().map(Cow::Borrowed),
            combo_trade_id: self.combo_trade_id.as_deref().map(Cow::Borrowed),
        }
    }

    /// The trade as Keel stores it.
    pub fn to_trade(&self) -> Result<Trade, BadTrade> {
        self.view().into_trade()
    }
}

impl TradeView<'_> {
    /// The trade as Keel stores it, its strings copied only where borrowed
    /// (what a consumer does with each trade of an entry it reads).
    pub fn into_trade(self) -> Result<Trade, BadTrade> {
        let bad = |problem: String| BadTrade {
            instrument: self.instrument_name.clone().into_owned(),
            seq: self.trade_seq,
            problem,
        };
        let direction = match &*self.direction {
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
            instrument_name: self.instrument_name.into_owned(),
            trade_seq: self.trade_seq,
            trade_id: self.trade_id.into_owned(),
            timestamp: from_ms(self.timestamp),
            price: self.price,
            amount: self.amount,
            direction,
            tick_direction: self.tick_direction,
            mark_price: self.mark_price,
            index_price: self.index_price,
            iv: self.iv,
            liquidation: self.liquidation.map(Cow::into_owned),
            block_trade_id: self.block_trade_id.map(Cow::into_owned),
            combo_id: self.combo_id.map(Cow::into_owned),
            combo_trade_id: self.combo_trade_id.map(Cow::into_owned),
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
    /// `snapshot` or `change`; absent in 2019 frames, where a snapshot is the
    /// update without `prev_change_id` (see [`BookUpdate::is_snapshot`]).
    #[serde(rename = "type", default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
    /// Milliseconds since the epoch.
    pub timestamp: u64,
    /// The instrument whose book this is.
    pub instrument_name: String,
    /// This update's id.
    pub change_id: i64,
    /// The previous update's id (absent on most snapshots).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prev_change_id: Option<i64>,
    /// `[action, price, amount]`, action `new`, `change` or `delete`.
    pub bids: Vec<(String, f64, f64)>,
    /// Same for asks.
    pub asks: Vec<(String, f64, f64)>,
}

impl BookUpdate {
    /// Whether this update replaces the book. A `type` decides when present
    /// (2022 snapshots carry a `prev_change_id` too); without one, as in 2019,
    /// a snapshot is the update without `prev_change_id`.
    pub fn is_snapshot(&self) -> bool {
        match self.kind.as_deref() {
            Some(kind) => kind == "snapshot",
            None => self.prev_change_id.is_none(),
        }
    }

    /// Whether this update starts a chain of changes: a snapshot, or a change
    /// with `prev_change_id: 0`, which links to nothing (recorded in 2021 on an
    /// option book the exchange had just restarted).
    pub fn starts_chain(&self) -> bool {
        self.is_snapshot() || self.prev_change_id == Some(0)
    }
}

/// `book.{instrument}.{group}.{depth}.{interval}`: always a full snapshot.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct BookGrouped {
    /// Milliseconds since the epoch.
    pub timestamp: u64,
    /// The instrument whose book this is.
    pub instrument_name: String,
    /// Id of the book state.
    pub change_id: i64,
    /// `[price, amount]`, best first.
    pub bids: Vec<(f64, f64)>,
    /// `[price, amount]`, best first.
    pub asks: Vec<(f64, f64)>,
}

/// 24-hour statistics in a ticker. Every figure is `null` on an instrument
/// that has not traded; `volume_usd` appeared in 2021, `volume_notional` later.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct TickerStats {
    /// Highest price.
    #[serde(default)]
    pub high: Option<f64>,
    /// Lowest price.
    #[serde(default)]
    pub low: Option<f64>,
    /// Percentage change over 24 hours.
    #[serde(default)]
    pub price_change: Option<f64>,
    /// Volume in the base currency.
    #[serde(default)]
    pub volume: Option<f64>,
    /// Volume in USD.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub volume_usd: Option<f64>,
    /// Volume in the quote currency.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub volume_notional: Option<f64>,
}

/// `estimated_delivery_price`: a price, or the string `"expired"` on an
/// instrument past its expiry.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum DeliveryEstimate {
    /// The estimate.
    Price(f64),
    /// What the exchange says instead (`expired`).
    State(String),
}

/// Option sensitivities in a ticker.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Greeks {
    /// Change of the option's price per unit change of the underlying's.
    pub delta: f64,
    /// Change of delta per unit change of the underlying's price.
    pub gamma: f64,
    /// Change of the option's price per point of implied volatility.
    pub vega: f64,
    /// Change of the option's price per day that passes.
    pub theta: f64,
    /// Change of the option's price per point of the interest rate.
    pub rho: f64,
}

/// `ticker.{instrument}.{interval}` and `public/ticker`. The fields every real
/// ticker carries are plain; the rest depend on the instrument's kind (options:
/// greeks and volatilities; perpetuals: funding; combos: implied prices) or on
/// the era of the API, and are `Option`s serialized only when present.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Ticker {
    /// Milliseconds since the epoch.
    pub timestamp: u64,
    /// `open` or `closed`.
    pub state: String,
    /// The instrument the ticker describes.
    pub instrument_name: String,
    /// Best bid price (negative on some spreads; 0 when there is none).
    pub best_bid_price: f64,
    /// Amount at the best bid.
    pub best_bid_amount: f64,
    /// Best ask price (0 when there is none).
    pub best_ask_price: f64,
    /// Amount at the best ask.
    pub best_ask_amount: f64,
    /// Last trade price: `null` on an instrument that has not traded.
    #[serde(default)]
    pub last_price: Option<f64>,
    /// The exchange's fair price, used for margin and liquidation.
    pub mark_price: f64,
    /// The underlying's index price.
    pub index_price: f64,
    /// Open positions' size, in the instrument's amount unit.
    pub open_interest: f64,
    /// Lowest price the exchange accepts now.
    pub min_price: f64,
    /// Highest price the exchange accepts now.
    pub max_price: f64,
    /// Last settlement price.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub settlement_price: Option<f64>,
    /// Delivery price (closed instruments).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delivery_price: Option<f64>,
    /// Estimated delivery price, or `expired`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub estimated_delivery_price: Option<DeliveryEstimate>,
    /// Current funding (perpetuals).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub current_funding: Option<f64>,
    /// Funding over 8 hours (perpetuals).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub funding_8h: Option<f64>,
    /// Interest value (perpetuals).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub interest_value: Option<f64>,
    /// Implied volatility of the best bid (options).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bid_iv: Option<f64>,
    /// Implied volatility of the best ask (options).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ask_iv: Option<f64>,
    /// Implied volatility of the mark price (options).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mark_iv: Option<f64>,
    /// Interest rate used for pricing (options).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub interest_rate: Option<f64>,
    /// Underlying price (options).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub underlying_price: Option<f64>,
    /// Underlying index name, or `index_price` (options).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub underlying_index: Option<String>,
    /// Sensitivities (options).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub greeks: Option<Greeks>,
    /// Implied bid from the legs (combos).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub implied_bid: Option<f64>,
    /// Implied ask from the legs (combos).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub implied_ask: Option<f64>,
    /// `active` or `inactive` (combos).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub combo_state: Option<String>,
    /// 24-hour statistics.
    pub stats: TickerStats,
}

/// `quote.{instrument}`: best bid and ask.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Quote {
    /// Milliseconds since the epoch.
    pub timestamp: u64,
    /// The instrument quoted.
    pub instrument_name: String,
    /// Best bid price (0 when there is none).
    pub best_bid_price: f64,
    /// Amount at the best bid.
    pub best_bid_amount: f64,
    /// Best ask price (0 when there is none).
    pub best_ask_price: f64,
    /// Amount at the best ask.
    pub best_ask_amount: f64,
}

/// `chart.trades.{instrument}.{resolution}`: the current bar.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ChartBar {
    /// Bar start, milliseconds since the epoch.
    pub tick: u64,
    /// First trade price in the bar.
    pub open: f64,
    /// Highest trade price in the bar.
    pub high: f64,
    /// Lowest trade price in the bar.
    pub low: f64,
    /// Last trade price in the bar.
    pub close: f64,
    /// Amount traded in the bar, in the base currency.
    pub volume: f64,
    /// Amount traded in the bar, in the quote currency (USD).
    pub cost: f64,
}

/// `public/get_tradingview_chart_data`: parallel arrays.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct TradingViewChart {
    /// Bar starts, milliseconds since the epoch.
    pub ticks: Vec<u64>,
    /// Each bar's first trade price.
    pub open: Vec<f64>,
    /// Each bar's highest trade price.
    pub high: Vec<f64>,
    /// Each bar's lowest trade price.
    pub low: Vec<f64>,
    /// Each bar's last trade price.
    pub close: Vec<f64>,
    /// Each bar's amount traded, in the base currency.
    pub volume: Vec<f64>,
    /// Each bar's amount traded, in the quote currency (USD).
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

/// Deribit's expiration timestamp for instruments that never expire (perpetuals, spot).
pub const NEVER_EXPIRES_MS: u64 = 32_503_708_800_000;

/// One instrument from `public/get_instruments` / `public/get_instrument`.
/// Fields added to the API after 2020 (`instrument_id`, `counter_currency`,
/// `settlement_currency`, `price_index`, ...) are `Option`s: older bodies lack
/// them, and spot pairs carry no `settlement_period` or expiry.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct InstrumentInfo {
    /// e.g. `BTC-PERPETUAL`.
    pub instrument_name: String,
    /// Numeric id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub instrument_id: Option<u64>,
    /// `future`, `option`, `spot`, `future_combo`, `option_combo`.
    pub kind: String,
    /// `linear` or `reversed`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub instrument_type: Option<String>,
    /// `linear` or `reversed` (futures).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub future_type: Option<String>,
    /// e.g. `BTC`.
    pub base_currency: String,
    /// e.g. `USD`.
    pub quote_currency: String,
    /// e.g. `USD`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub counter_currency: Option<String>,
    /// e.g. `BTC`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub settlement_currency: Option<String>,
    /// `perpetual`, `month`, `week`, `day` (absent on spot).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub settlement_period: Option<String>,
    /// Minimum price increment.
    pub tick_size: f64,
    /// Larger increments above given prices (options).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tick_size_steps: Option<Vec<TickSizeStep>>,
    /// What one contract is worth, in the amount's unit.
    pub contract_size: f64,
    /// Smallest amount.
    pub min_trade_amount: f64,
    /// Listing time, ms.
    pub creation_timestamp: u64,
    /// Expiry, ms ([`NEVER_EXPIRES_MS`] for perpetuals; absent on spot).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expiration_timestamp: Option<u64>,
    /// Still trading.
    pub is_active: bool,
    /// `call` / `put` (options).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub option_type: Option<String>,
    /// Strike (options).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub strike: Option<f64>,
    /// Index, e.g. `btc_usd`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub price_index: Option<String>,
    /// Maker fee.
    pub maker_commission: f64,
    /// Taker fee.
    pub taker_commission: f64,
    /// Block trade fee.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub block_trade_commission: Option<f64>,
    /// Smallest block trade.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub block_trade_min_trade_amount: Option<f64>,
    /// Block trade price increment.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub block_trade_tick_size: Option<f64>,
    /// Maximum liquidation fee (futures).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_liquidation_commission: Option<f64>,
    /// Maximum leverage (futures).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_leverage: Option<f64>,
    /// Maximum leverage without asking for more (perpetuals).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_non_default_leverage: Option<f64>,
}

/// One entry of `tick_size_steps`: from `above_price` on, prices move by `tick_size`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TickSizeStep {
    /// The price above which the step applies.
    pub above_price: f64,
    /// The increment there.
    pub tick_size: f64,
}

impl InstrumentInfo {
    /// The instrument as Keel stores it (one that never expires gets
    /// [`NEVER_EXPIRES_MS`], as Deribit writes perpetuals).
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
            expiration_timestamp: from_ms(self.expiration_timestamp.unwrap_or(NEVER_EXPIRES_MS)),
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
    /// `BITCOIN`, `ETHER`, ...
    pub coin_type: String,
    /// Minimum confirmations for deposits.
    pub min_confirmations: u32,
    /// Minimum withdrawal fee.
    pub min_withdrawal_fee: f64,
    /// Fee the exchange charges for a withdrawal.
    pub withdrawal_fee: f64,
    /// Fee levels for faster withdrawals.
    #[serde(default)]
    pub withdrawal_priorities: Vec<Value>,
    /// The network's own currency.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub network_currency: Option<String>,
    /// The network's fee.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub network_fee: Option<f64>,
    /// Decimal places of amounts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub decimals: Option<u32>,
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
    /// Features enabled for the key.
    #[serde(default)]
    pub enabled_features: Vec<String>,
}

/// `public/hello`, `public/test`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct VersionResult {
    /// Server API version.
    pub version: String,
}
