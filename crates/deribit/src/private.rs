//! Payloads of Deribit's private API (orders, the account's trades and
//! positions, the `user.*` channels) as the real frames show them, shared by
//! the executor (client) and `keel sim` (server).
//!
//! Fields every recorded frame carries are required; the rest are optional, so
//! a frame from an older API version or another product still reads. Unknown
//! fields are ignored (Deribit adds fields), unknown enum values are not: an
//! order in a state Keel does not know is an error, never a guess.

use serde::{Deserialize, Serialize};

/// The longest `label` Deribit takes.
pub const MAX_LABEL: usize = 64;

/// The side of an order or of the account's trade.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Side {
    /// Buys.
    Buy,
    /// Sells.
    Sell,
}

impl Side {
    /// `buy` or `sell`.
    pub fn as_str(self) -> &'static str {
        match self {
            Side::Buy => "buy",
            Side::Sell => "sell",
        }
    }

    /// The other side.
    pub fn opposite(self) -> Side {
        match self {
            Side::Buy => Side::Sell,
            Side::Sell => Side::Buy,
        }
    }

    /// +1 for a buy, -1 for a sell: what a fill adds to a position.
    pub fn sign(self) -> f64 {
        match self {
            Side::Buy => 1.0,
            Side::Sell => -1.0,
        }
    }
}

/// `order_state`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OrderState {
    /// Resting in the book (possibly partly filled).
    Open,
    /// Completely filled.
    Filled,
    /// Refused by the matching engine.
    Rejected,
    /// Cancelled (by the user, cancel on disconnect, an IOC remainder, ...).
    Cancelled,
    /// A trigger order waiting for its trigger.
    Untriggered,
}

impl OrderState {
    /// No further change can happen to an order in this state.
    pub fn is_terminal(self) -> bool {
        matches!(
            self,
            OrderState::Filled | OrderState::Rejected | OrderState::Cancelled
        )
    }

    /// The name Deribit uses.
    pub fn as_str(self) -> &'static str {
        match self {
            OrderState::Open => "open",
            OrderState::Filled => "filled",
            OrderState::Rejected => "rejected",
            OrderState::Cancelled => "cancelled",
            OrderState::Untriggered => "untriggered",
        }
    }
}

/// `order_type`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OrderType {
    /// At a price or better.
    Limit,
    /// At any price the book offers.
    Market,
    /// A limit order placed when a trigger price is reached.
    StopLimit,
    /// A market order placed when a trigger price is reached.
    StopMarket,
    /// A take-profit limit order.
    TakeLimit,
    /// A take-profit market order.
    TakeMarket,
    /// Market, the remainder resting as a limit at the last fill's price.
    MarketLimit,
    /// A stop that follows the price.
    TrailingStop,
}

/// `time_in_force`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TimeInForce {
    /// Rests until filled or cancelled.
    GoodTilCancelled,
    /// Rests until the end of the trading day (08:00 UTC).
    GoodTilDay,
    /// Fills completely at once, or not at all.
    FillOrKill,
    /// Fills what it can at once; the rest is cancelled.
    ImmediateOrCancel,
}

impl TimeInForce {
    /// The name Deribit uses.
    pub fn as_str(self) -> &'static str {
        match self {
            TimeInForce::GoodTilCancelled => "good_til_cancelled",
            TimeInForce::GoodTilDay => "good_til_day",
            TimeInForce::FillOrKill => "fill_or_kill",
            TimeInForce::ImmediateOrCancel => "immediate_or_cancel",
        }
    }
}

/// An order's `price`: a number, or `"market_price"` for market-style orders
/// not yet priced (as recorded: stop markets).
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum OrderPrice {
    /// A price.
    Price(f64),
    /// The string `"market_price"`.
    Market(MarketPrice),
}

/// The string `"market_price"`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MarketPrice {
    /// `"market_price"`.
    MarketPrice,
}

impl OrderPrice {
    /// The price, when it is one.
    pub fn value(self) -> Option<f64> {
        match self {
            OrderPrice::Price(p) => Some(p),
            OrderPrice::Market(_) => None,
        }
    }
}

fn is_false(b: &bool) -> bool {
    !*b
}

/// One order: the result of `private/buy`, `sell`, `edit`, `cancel`,
/// `get_order_state*`, `get_open_orders*`, and the data of `user.orders.*`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Order {
    /// The exchange's id (`ETH-584849853`, `74365704227`).
    pub order_id: String,
    /// The client's label (`""` when none): Keel's client order id.
    #[serde(default)]
    pub label: String,
    /// The instrument.
    pub instrument_name: String,
    /// Buy or sell.
    pub direction: Side,
    /// The order's amount (USD for inverse contracts, the base currency otherwise).
    pub amount: f64,
    /// The amount in contracts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub contracts: Option<f64>,
    /// How much has filled (absent on untriggered stop markets).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub filled_amount: Option<f64>,
    /// The average fill price (absent or 0 before any fill).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub average_price: Option<f64>,
    /// The limit price, or `market_price`.
    pub price: OrderPrice,
    /// Limit, market, ...
    pub order_type: OrderType,
    /// Open, filled, ...
    pub order_state: OrderState,
    /// GTC, GTD, FOK or IOC.
    pub time_in_force: TimeInForce,
    /// Only adds liquidity.
    pub post_only: bool,
    /// A crossing post-only order is rejected, not repriced.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reject_post_only: Option<bool>,
    /// Only reduces a position.
    pub reduce_only: bool,
    /// The order was edited.
    #[serde(default, skip_serializing_if = "is_false")]
    pub replaced: bool,
    /// Placed through the API.
    pub api: bool,
    /// Placed through the web interface.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub web: Option<bool>,
    /// A liquidation order.
    #[serde(default)]
    pub is_liquidation: bool,
    /// Milliseconds since the epoch.
    pub creation_timestamp: u64,
    /// Milliseconds since the epoch of the last change: an update older than
    /// the one already seen is stale.
    pub last_update_timestamp: u64,
    /// Why it was cancelled (`user_request`, `cancel_on_disconnect`, ...).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cancel_reason: Option<String>,
    /// The visible amount of an iceberg order.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_show: Option<f64>,
    /// Market maker protection.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mmp: Option<bool>,
    /// Risk-reducing order (portfolio margin).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub risk_reducing: Option<bool>,
    /// The account's user id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_id: Option<u64>,
    /// The type before it was converted (a market order resting as a limit).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub original_order_type: Option<OrderType>,
    /// The trigger of a trigger order (`index_price`, `mark_price`, `last_price`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trigger: Option<String>,
    /// The trigger price of a trigger order.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trigger_price: Option<f64>,
    /// Whether a trigger order has triggered.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub triggered: Option<bool>,
}

impl Order {
    /// What has filled (0 when the field is absent).
    pub fn filled(&self) -> f64 {
        self.filled_amount.unwrap_or(0.0)
    }
}

/// One of the account's trades (a fill): in the result of order methods, of
/// `get_user_trades_*`, and the data of `user.trades.*`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct UserTrade {
    /// The exchange's trade id: fills are deduplicated on it.
    pub trade_id: String,
    /// The instrument's trade sequence number: the same trade in the public stream.
    pub trade_seq: i64,
    /// The order it filled.
    pub order_id: String,
    /// The order's label, when it had one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub label: Option<String>,
    /// The instrument.
    pub instrument_name: String,
    /// The order's side.
    pub direction: Side,
    /// Amount filled.
    pub amount: f64,
    /// In contracts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub contracts: Option<f64>,
    /// Fill price.
    pub price: f64,
    /// Index price at the time.
    pub index_price: f64,
    /// Mark price at the time.
    pub mark_price: f64,
    /// Milliseconds since the epoch.
    pub timestamp: u64,
    /// The order's state after this fill.
    pub state: OrderState,
    /// The order's type.
    pub order_type: OrderType,
    /// Fee paid (negative: a rebate).
    pub fee: f64,
    /// The fee's currency.
    pub fee_currency: String,
    /// `M` (maker) or `T` (taker).
    pub liquidity: String,
    /// The order was post-only.
    pub post_only: bool,
    /// The order was reduce-only.
    pub reduce_only: bool,
    /// 0..=3, as in the public trade.
    pub tick_direction: i16,
    /// Always null on the recorded frames.
    #[serde(default)]
    pub matching_id: Option<String>,
    /// Placed through the API.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api: Option<bool>,
    /// Both sides were the account's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub self_trade: Option<bool>,
    /// Profit or loss of the fill.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub profit_loss: Option<f64>,
    /// Market maker protection.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mmp: Option<bool>,
    /// Risk-reducing order.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub risk_reducing: Option<bool>,
    /// The account's user id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_id: Option<u64>,
}

/// The result of `private/buy`, `sell`, `edit`, `edit_by_label`, `close_position`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct OrderResult {
    /// The order after the call.
    pub order: Order,
    /// The fills the call made at once.
    #[serde(default)]
    pub trades: Vec<UserTrade>,
}

/// A position's `direction`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PositionDirection {
    /// Long.
    Buy,
    /// Short.
    Sell,
    /// Flat.
    Zero,
}

/// One position (`private/get_positions`, `get_position`, `user.changes.*`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Position {
    /// The instrument.
    pub instrument_name: String,
    /// `future`, `option`, ...
    pub kind: String,
    /// Signed size: positive long, negative short.
    pub size: f64,
    /// Long, short or flat.
    pub direction: PositionDirection,
    /// Average entry price.
    pub average_price: f64,
    /// Mark price now.
    pub mark_price: f64,
    /// Index price now.
    pub index_price: f64,
    /// Size in the base currency.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub size_currency: Option<f64>,
    /// Unrealised profit or loss.
    #[serde(default)]
    pub floating_profit_loss: f64,
    /// Realised profit or loss.
    #[serde(default)]
    pub realized_profit_loss: f64,
    /// Total profit or loss.
    #[serde(default)]
    pub total_profit_loss: f64,
    /// Leverage used.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub leverage: Option<f64>,
    /// Initial margin.
    #[serde(default)]
    pub initial_margin: f64,
    /// Maintenance margin.
    #[serde(default)]
    pub maintenance_margin: f64,
}

/// The data of `user.changes.*`: what one event did to orders, trades and positions.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct UserChanges {
    /// The instrument (absent on kind/currency channels' older frames).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub instrument_name: Option<String>,
    /// Orders changed.
    #[serde(default)]
    pub orders: Vec<Order>,
    /// Fills.
    #[serde(default)]
    pub trades: Vec<UserTrade>,
    /// Positions changed.
    #[serde(default)]
    pub positions: Vec<Position>,
}

/// `private/get_user_trades_by_*`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct UserTradesPage {
    /// The trades.
    pub trades: Vec<UserTrade>,
    /// More trades exist beyond `count`.
    pub has_more: bool,
}

/// `private/get_cancel_on_disconnect`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CancelOnDisconnect {
    /// `connection` or `account`.
    pub scope: String,
    /// Whether it is on.
    pub enabled: bool,
}

/// One credit bucket of `limits`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Bucket {
    /// Requests the bucket holds.
    pub burst: u32,
    /// Requests per second it refills.
    pub rate: u32,
}

/// The matching engine's buckets of `limits`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct MatchingLimits {
    /// Order entry (`trading.total`).
    pub trading: TradingLimits,
    /// Mass cancels.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cancel_all: Option<Bucket>,
}

/// `limits.matching_engine.trading`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TradingLimits {
    /// All order entry.
    pub total: Bucket,
}

/// `limits` of `private/get_account_summary`: the account's rate limits.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Limits {
    /// Limits are per currency.
    #[serde(default)]
    pub limits_per_currency: bool,
    /// Every method that is not order entry.
    pub non_matching_engine: Bucket,
    /// Order entry and cancels.
    pub matching_engine: MatchingLimits,
}

/// `private/get_account_summary`, the fields Keel reads.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct AccountSummary {
    /// The currency summarised.
    pub currency: String,
    /// Balance.
    pub balance: f64,
    /// Equity.
    pub equity: f64,
    /// Funds available for new orders.
    pub available_funds: f64,
    /// Initial margin in use.
    pub initial_margin: f64,
    /// Maintenance margin in use.
    pub maintenance_margin: f64,
    /// The account's rate limits (absent unless asked for on some versions).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limits: Option<Limits>,
}

/// What a `user.*` channel carries.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum UserFeed {
    /// `user.orders.*`: order updates.
    Orders,
    /// `user.trades.*`: the account's fills.
    Trades,
    /// `user.changes.*`: orders, fills and positions of one event together.
    Changes,
}

impl UserFeed {
    /// The wire spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            UserFeed::Orders => "orders",
            UserFeed::Trades => "trades",
            UserFeed::Changes => "changes",
        }
    }
}

/// Which instruments a `user.*` channel covers.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum UserScope {
    /// One instrument (`user.orders.BTC-PERPETUAL.raw`).
    Instrument(String),
    /// A kind and a currency, either `any` (`user.orders.future.BTC.raw`,
    /// `user.orders.any.any.raw`).
    Kind {
        /// `future`, `option`, `spot`, ... or `any`.
        kind: String,
        /// `BTC`, `ETH`, ... or `any`.
        currency: String,
    },
}

/// A `user.{orders|trades|changes}.{instrument | kind.currency}.{interval}` channel.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct UserChannel {
    /// What it carries.
    pub feed: UserFeed,
    /// Which instruments.
    pub scope: UserScope,
    /// `raw` or aggregated.
    pub interval: crate::Interval,
}

/// A name that is not a `user.*` channel Keel knows.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("`{0}` is not a user.orders, user.trades or user.changes channel")]
pub struct NotAUserChannel(pub String);

impl UserChannel {
    /// Whether the channel covers `instrument`, of `kind` in `currency`.
    pub fn covers(&self, instrument: &str, kind: &str, currency: &str) -> bool {
        match &self.scope {
            UserScope::Instrument(name) => name == instrument,
            UserScope::Kind {
                kind: k,
                currency: c,
            } => (k == "any" || k == kind) && (c == "any" || c.eq_ignore_ascii_case(currency)),
        }
    }
}

impl std::str::FromStr for UserChannel {
    type Err = NotAUserChannel;

    fn from_str(name: &str) -> Result<Self, NotAUserChannel> {
        let wrong = || NotAUserChannel(name.to_owned());
        let parts: Vec<&str> = name.split('.').collect();
        if parts.first() != Some(&"user") {
            return Err(wrong());
        }
        let feed = match parts.get(1) {
            Some(&"orders") => UserFeed::Orders,
            Some(&"trades") => UserFeed::Trades,
            Some(&"changes") => UserFeed::Changes,
            _ => return Err(wrong()),
        };
        let (scope, interval) = match parts.as_slice() {
            [_, _, instrument, interval] if !instrument.is_empty() => {
                (UserScope::Instrument((*instrument).to_owned()), interval)
            }
            [_, _, kind, currency, interval] if !kind.is_empty() && !currency.is_empty() => (
                UserScope::Kind {
                    kind: (*kind).to_owned(),
                    currency: (*currency).to_owned(),
                },
                interval,
            ),
            _ => return Err(wrong()),
        };
        let interval = crate::Interval::try_from((*interval).to_owned()).map_err(|_| wrong())?;
        Ok(UserChannel {
            feed,
            scope,
            interval,
        })
    }
}

impl std::fmt::Display for UserChannel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.scope {
            UserScope::Instrument(name) => {
                write!(f, "user.{}.{name}.{}", self.feed.as_str(), self.interval)
            }
            UserScope::Kind { kind, currency } => write!(
                f,
                "user.{}.{kind}.{currency}.{}",
                self.feed.as_str(),
                self.interval
            ),
        }
    }
}

/// Whether a private-API error is worth retrying (the same request, after a
/// delay), as Deribit's error table and the notes on other clients say.
/// Everything else is final for that request.
pub fn retryable(code: i64) -> bool {
    matches!(
        code,
        crate::codes::RETRY
            | crate::codes::SETTLEMENT_IN_PROGRESS
            | crate::codes::MATCHING_ENGINE_QUEUE_FULL
            | crate::codes::SYSTEM_MAINTENANCE
            | crate::codes::TEMPORARILY_UNAVAILABLE
            | crate::codes::INTERNAL_SERVER_ERROR
            | crate::codes::TOO_MANY_REQUESTS
            // Could not start before its valid_until: nothing was placed.
            | crate::codes::TIMED_OUT
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_order_reads_and_writes_back_the_same() {
        let text = r#"{"order_id":"ETH-1","label":"a","instrument_name":"ETH-PERPETUAL",
            "direction":"buy","amount":40,"filled_amount":0,"price":"market_price",
            "order_type":"stop_market","order_state":"untriggered",
            "time_in_force":"good_til_cancelled","post_only":false,"reduce_only":false,
            "api":true,"creation_timestamp":1,"last_update_timestamp":2,"unknown":7}"#;
        let order: Order = serde_json::from_str(text).unwrap();
        assert_eq!(order.price.value(), None);
        assert_eq!(order.order_state, OrderState::Untriggered);
        let again: Order = serde_json::from_str(&serde_json::to_string(&order).unwrap()).unwrap();
        assert_eq!(again, order);
    }

    #[test]
    fn an_unknown_state_is_an_error_not_a_guess() {
        let text = r#"{"order_id":"1","instrument_name":"X","direction":"buy","amount":1,
            "price":1,"order_type":"limit","order_state":"exploded",
            "time_in_force":"good_til_cancelled","post_only":false,"reduce_only":false,
            "api":true,"creation_timestamp":1,"last_update_timestamp":2}"#;
        assert!(serde_json::from_str::<Order>(text).is_err());
    }

    #[test]
    fn user_channels_read_and_print_back() {
        for name in [
            "user.orders.BTC-PERPETUAL.raw",
            "user.trades.any.any.100ms",
            "user.changes.future.BTC.raw",
            "user.orders.PAXG-USDC-30MAY25.raw",
        ] {
            let channel: UserChannel = name.parse().unwrap();
            assert_eq!(channel.to_string(), name);
        }
        let any: UserChannel = "user.orders.any.any.raw".parse().unwrap();
        assert!(any.covers("ETH-PERPETUAL", "future", "ETH"));
        let btc: UserChannel = "user.orders.future.btc.raw".parse().unwrap();
        assert!(btc.covers("BTC-PERPETUAL", "future", "BTC"));
        assert!(!btc.covers("BTC-PERPETUAL", "option", "BTC"));
        for wrong in [
            "user.orders",
            "user.portfolio.btc",
            "user.orders.X.1s",
            "trades.X.raw",
        ] {
            assert!(wrong.parse::<UserChannel>().is_err(), "{wrong}");
        }
    }

    #[test]
    fn retryable_codes_are_the_transient_ones() {
        assert!(retryable(crate::codes::MATCHING_ENGINE_QUEUE_FULL));
        assert!(retryable(crate::codes::RETRY));
        assert!(!retryable(crate::codes::NOT_ENOUGH_FUNDS));
        assert!(!retryable(crate::codes::NOT_OPEN_ORDER));
        assert!(!retryable(crate::codes::POST_ONLY_REJECT));
    }
}
