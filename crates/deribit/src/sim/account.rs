//! The simulated account: its orders, fills and positions, and the matching
//! engine that trades them.
//!
//! An order that crosses the book trades at once against the simulator's
//! book levels (taker); what is left rests and fills when the trade walk
//! reaches its price (maker). Every fill is a public trade with its own
//! `trade_seq`, so the account's fills appear in the public trade stream as
//! on Deribit. The book's liquidity is replenished at once: a fill does not
//! show as a book change. Self-trades are not simulated (the account's own
//! resting orders are not matched against its new ones).

use std::collections::{BTreeMap, HashMap, VecDeque};

use crate::codes;
use crate::model::PublicTrade;
use crate::private::{
    Order, OrderPrice, OrderResult, OrderState, OrderType, Position, PositionDirection, Side,
    TimeInForce, UserTrade,
};
use crate::RpcError;

use super::market::Market;

/// Closed orders and fills kept per instrument for the history methods.
const KEPT: usize = 100_000;
/// Longest label Deribit takes.
pub(super) use crate::private::MAX_LABEL;

/// The account as the exchange holds it: every order it keeps, by label
/// (oldest first), and every fill it keeps. What a test compares Keel's
/// store with, without spending the account's request budget.
#[derive(Debug, Clone, Default)]
pub struct Ledger {
    /// Orders by label, oldest first.
    pub orders: BTreeMap<String, Vec<Order>>,
    /// Fills of every instrument.
    pub fills: Vec<UserTrade>,
}

/// What one change did, for the `user.*` channels.
#[derive(Debug, Clone)]
pub(super) struct UserEvent {
    pub(super) instrument: usize,
    pub(super) orders: Vec<Order>,
    pub(super) trades: Vec<UserTrade>,
    pub(super) position: Position,
}

#[derive(Debug)]
struct Entry {
    order: Order,
    instrument: usize,
    /// The connection that placed it (for cancel on disconnect).
    connection: u64,
}

#[derive(Debug, Default, Clone, Copy)]
struct Holding {
    size: f64,
    average: f64,
    realized: f64,
}

/// A request to place an order, validated.
#[derive(Debug, Clone)]
pub(super) struct Placement {
    pub(super) instrument: usize,
    pub(super) side: Side,
    pub(super) amount: f64,
    pub(super) order_type: OrderType,
    pub(super) price: Option<f64>,
    pub(super) time_in_force: TimeInForce,
    pub(super) post_only: bool,
    pub(super) reject_post_only: bool,
    pub(super) reduce_only: bool,
    pub(super) label: String,
}

/// Which open orders a mass cancel takes.
#[derive(Debug, Clone, Default)]
pub(super) struct Selection {
    pub(super) instrument: Option<usize>,
    pub(super) currency: Option<String>,
    pub(super) kind: Option<String>,
    pub(super) label: Option<String>,
    pub(super) connection: Option<u64>,
    /// Only `good_til_day` orders.
    pub(super) day_orders: bool,
}

/// The account's state.
#[derive(Debug)]
pub(super) struct Account {
    next_order: u64,
    orders: HashMap<String, Entry>,
    /// Order ids by label, oldest first.
    labels: HashMap<String, Vec<String>>,
    /// Per instrument: open order ids in time priority.
    open: Vec<Vec<String>>,
    /// Per instrument: closed order ids, oldest first (bounded).
    closed: Vec<VecDeque<String>>,
    /// Per instrument: fills, oldest first (bounded).
    fills: Vec<VecDeque<UserTrade>>,
    holdings: Vec<Holding>,
}

fn round(x: f64) -> f64 {
    (x * 1e8).round() / 1e8
}

fn bad(reason: impl Into<String>, param: &str) -> RpcError {
    RpcError::new(codes::INVALID_PARAMS).because(reason, Some(param))
}

fn ticks(price: f64, tick: f64) -> i64 {
    (price / tick).round() as i64
}

impl Account {
    pub(super) fn new(instruments: usize) -> Self {
        // Ids grow across restarts of the simulator, as an exchange's do.
        let start = crate::model::to_ms(std::time::SystemTime::now()) * 1000;
        Self {
            next_order: start,
            orders: HashMap::new(),
            labels: HashMap::new(),
            open: vec![Vec::new(); instruments],
            closed: vec![VecDeque::new(); instruments],
            fills: vec![VecDeque::new(); instruments],
            holdings: vec![Holding::default(); instruments],
        }
    }

    /// Open orders, across instruments.
    pub(super) fn resting(&self) -> usize {
        self.open.iter().map(Vec::len).sum()
    }

    /// Checks a placement against the instrument; the amount as it will be
    /// placed (a reduce-only order is cut to the position).
    pub(super) fn check(&self, p: &mut Placement, market: &Market) -> Result<(), RpcError> {
        let info = &market.spec.info;
        if p.label.chars().count() > MAX_LABEL {
            return Err(bad(
                format!("label must be at most {MAX_LABEL} characters"),
                "label",
            ));
        }
        if p.amount <= 0.0 || !p.amount.is_finite() {
            return Err(RpcError::new(codes::INVALID_AMOUNT)
                .because("amount must be positive", Some("amount")));
        }
        let lots = p.amount / info.min_trade_amount;
        if (lots - lots.round()).abs() > 1e-6 {
            return Err(RpcError::new(codes::INVALID_AMOUNT).because(
                format!("amount must be a multiple of {}", info.min_trade_amount),
                Some("amount"),
            ));
        }
        match (p.order_type, p.price) {
            (OrderType::Limit, None) => return Err(bad("value required", "price")),
            (OrderType::Limit, Some(price)) => {
                if price <= 0.0 || !price.is_finite() {
                    return Err(RpcError::new(codes::INVALID_PRICE)
                        .because("price must be positive", Some("price")));
                }
                let t = price / info.tick_size;
                if (t - t.round()).abs() > 1e-6 {
                    return Err(RpcError::new(codes::PRICE_WRONG_TICK).because(
                        format!("price must be a multiple of {}", info.tick_size),
                        Some("price"),
                    ));
                }
            }
            (OrderType::Market, _) => {
                if p.post_only {
                    return Err(bad("post_only is for limit orders", "post_only"));
                }
            }
            (other, _) => {
                return Err(bad(
                    format!("order type {other:?} is not simulated (limit and market are)"),
                    "type",
                ))
            }
        }
        if p.reduce_only {
            let size = self.holdings[p.instrument].size;
            let reducible = if p.side == Side::Buy { -size } else { size };
            if reducible <= 0.0 {
                return Err(RpcError::new(codes::REDUCE_ONLY_REJECT).because(
                    "reduce_only order would not reduce the position",
                    Some("reduce_only"),
                ));
            }
            p.amount = p.amount.min(round(reducible));
        }
        Ok(())
    }

    /// Places a checked order: trades what crosses, rests or cancels the rest.
    /// Returns the result, the public trades it made and the event.
    pub(super) fn place(
        &mut self,
        mut p: Placement,
        market: &mut Market,
        connection: u64,
        now: u64,
    ) -> Result<(OrderResult, Vec<PublicTrade>, UserEvent), RpcError> {
        let tick = market.spec.info.tick_size;
        let buying = p.side == Side::Buy;
        let limit = p.price.map(|price| ticks(price, tick));
        let limit = if p.order_type == OrderType::Market {
            None
        } else {
            limit
        };
        let mut levels = market.crossing(buying, limit);
        if p.post_only && !levels.is_empty() {
            if p.reject_post_only {
                return Err(RpcError::new(codes::POST_ONLY_REJECT));
            }
            // As Deribit: repriced one tick inside the opposite side.
            let (bid, ask) = market.best_ticks();
            let inside = if buying {
                ask.map(|a| a - 1)
            } else {
                bid.map(|b| b + 1)
            };
            if let Some(t) = inside {
                p.price = Some(round(t as f64 * tick));
            }
            levels.clear();
        }
        let available: f64 = levels.iter().map(|(_, a)| a).sum();
        if p.time_in_force == TimeInForce::FillOrKill && available + 1e-9 < p.amount {
            levels.clear();
        }
        let order_id = format!("{}-{}", market.spec.info.base_currency, self.next_order);
        self.next_order += 1;
        let mut order = Order {
            order_id: order_id.clone(),
            label: p.label.clone(),
            instrument_name: market.spec.info.instrument_name.clone(),
            direction: p.side,
            amount: p.amount,
            contracts: Some(round(p.amount / market.spec.info.contract_size)),
            filled_amount: Some(0.0),
            average_price: Some(0.0),
            price: match (p.order_type, p.price) {
                (OrderType::Limit, Some(price)) => OrderPrice::Price(price),
                _ => OrderPrice::Price(0.0),
            },
            order_type: p.order_type,
            order_state: OrderState::Open,
            time_in_force: if p.order_type == OrderType::Market {
                TimeInForce::GoodTilCancelled
            } else {
                p.time_in_force
            },
            post_only: p.post_only,
            reject_post_only: Some(p.reject_post_only),
            reduce_only: p.reduce_only,
            replaced: false,
            api: true,
            web: Some(false),
            is_liquidation: false,
            creation_timestamp: now,
            last_update_timestamp: now,
            cancel_reason: None,
            max_show: Some(p.amount),
            mmp: Some(false),
            risk_reducing: Some(false),
            user_id: Some(1),
            original_order_type: None,
            trigger: None,
            trigger_price: None,
            triggered: None,
        };
        let mut public = Vec::new();
        let mut fills = Vec::new();
        let mut remaining = p.amount;
        for (level, size) in levels {
            if remaining <= 1e-9 {
                break;
            }
            let amount = round(remaining.min(size));
            let trade = market.mint_trade(now, level, amount, p.side.as_str());
            remaining = round(remaining - amount);
            fills.push(self.fill(&mut order, p.instrument, &trade, "T", market));
            public.push(trade);
        }
        if remaining > 1e-9 {
            let rests = p.order_type == OrderType::Limit
                && matches!(
                    p.time_in_force,
                    TimeInForce::GoodTilCancelled | TimeInForce::GoodTilDay
                );
            if !rests {
                order.order_state = OrderState::Cancelled;
                order.cancel_reason = Some("user_request".into());
            }
        }
        if p.order_type == OrderType::Market {
            // As recorded: a market order carries the worst price it could take.
            let worst = public.last().map_or(0.0, |t| t.price);
            order.price = OrderPrice::Price(worst);
        }
        // The fills' `state` is the order's state once the call is done.
        for fill in &mut fills {
            fill.state = order.order_state;
        }
        self.store(order.clone(), p.instrument, connection);
        let event = UserEvent {
            instrument: p.instrument,
            orders: vec![order.clone()],
            trades: fills.clone(),
            position: self.position(p.instrument, market),
        };
        Ok((
            OrderResult {
                order,
                trades: fills,
            },
            public,
            event,
        ))
    }

    /// Records a fill of `order` by `trade`; updates the order and the position.
    fn fill(
        &mut self,
        order: &mut Order,
        instrument: usize,
        trade: &PublicTrade,
        liquidity: &str,
        market: &Market,
    ) -> UserTrade {
        let filled = order.filled();
        let total = round(filled + trade.amount);
        let average = order.average_price.unwrap_or(0.0);
        order.average_price = Some(round(
            (average * filled + trade.price * trade.amount) / total,
        ));
        order.filled_amount = Some(total);
        order.last_update_timestamp = trade.timestamp;
        if total + 1e-9 >= order.amount {
            order.order_state = OrderState::Filled;
        }
        let info = &market.spec.info;
        let rate = if liquidity == "M" {
            info.maker_commission
        } else {
            info.taker_commission
        };
        let inverse = info.instrument_type.as_deref() == Some("reversed");
        let notional = if inverse {
            trade.amount / trade.price
        } else {
            trade.amount
        };
        let delta = order.direction.sign() * trade.amount;
        let holding = &mut self.holdings[instrument];
        let before = holding.size;
        let after = round(before + delta);
        if before == 0.0 || before.signum() == delta.signum() {
            holding.average = (holding.average * before.abs() + trade.price * delta.abs())
                / (before.abs() + delta.abs());
        } else {
            let closed = delta.abs().min(before.abs());
            holding.realized += closed * (trade.price - holding.average) * before.signum();
            if after != 0.0 && after.signum() != before.signum() {
                holding.average = trade.price;
            }
        }
        holding.size = after;
        if after == 0.0 {
            holding.average = 0.0;
        }
        let fill = UserTrade {
            trade_id: trade.trade_id.clone(),
            trade_seq: trade.trade_seq,
            order_id: order.order_id.clone(),
            label: (!order.label.is_empty()).then(|| order.label.clone()),
            instrument_name: trade.instrument_name.clone(),
            direction: order.direction,
            amount: trade.amount,
            contracts: trade.contracts,
            price: trade.price,
            index_price: trade.index_price,
            mark_price: trade.mark_price.unwrap_or(trade.price),
            timestamp: trade.timestamp,
            state: order.order_state,
            order_type: order.order_type,
            fee: round(rate * notional),
            fee_currency: info
                .settlement_currency
                .clone()
                .unwrap_or_else(|| info.base_currency.clone()),
            liquidity: liquidity.into(),
            post_only: order.post_only,
            reduce_only: order.reduce_only,
            tick_direction: trade.tick_direction,
            matching_id: None,
            api: Some(true),
            self_trade: Some(false),
            profit_loss: Some(0.0),
            mmp: Some(false),
            risk_reducing: Some(false),
            user_id: Some(1),
        };
        let kept = &mut self.fills[instrument];
        kept.push_back(fill.clone());
        if kept.len() > KEPT {
            kept.pop_front();
        }
        fill
    }

    fn store(&mut self, order: Order, instrument: usize, connection: u64) {
        let id = order.order_id.clone();
        if !order.label.is_empty() {
            self.labels
                .entry(order.label.clone())
                .or_default()
                .push(id.clone());
        }
        if order.order_state == OrderState::Open {
            self.open[instrument].push(id.clone());
        } else {
            self.close(instrument, id.clone());
        }
        self.orders.insert(
            id,
            Entry {
                order,
                instrument,
                connection,
            },
        );
    }

    fn close(&mut self, instrument: usize, id: String) {
        let closed = &mut self.closed[instrument];
        closed.push_back(id);
        if closed.len() > KEPT {
            if let Some(old) = closed.pop_front() {
                if let Some(entry) = self.orders.remove(&old) {
                    if let Some(ids) = self.labels.get_mut(&entry.order.label) {
                        ids.retain(|i| i != &old);
                        if ids.is_empty() {
                            self.labels.remove(&entry.order.label);
                        }
                    }
                }
            }
        }
    }

    /// The account's position in instrument `i`.
    pub(super) fn position(&self, i: usize, market: &Market) -> Position {
        let h = self.holdings[i];
        let info = &market.spec.info;
        let mark = market.last_price();
        let floating = h.size * (mark - h.average);
        Position {
            instrument_name: info.instrument_name.clone(),
            kind: info.kind.clone(),
            size: h.size,
            direction: if h.size > 0.0 {
                PositionDirection::Buy
            } else if h.size < 0.0 {
                PositionDirection::Sell
            } else {
                PositionDirection::Zero
            },
            average_price: round(h.average),
            mark_price: mark,
            index_price: mark,
            size_currency: Some(round(if mark > 0.0 { h.size / mark } else { 0.0 })),
            floating_profit_loss: round(if h.size != 0.0 { floating } else { 0.0 }),
            realized_profit_loss: round(h.realized),
            total_profit_loss: round(h.realized + floating),
            leverage: Some(50.0),
            initial_margin: 0.0,
            maintenance_margin: 0.0,
        }
    }

    /// Instruments the account ever traded or holds orders in.
    pub(super) fn touched(&self) -> Vec<usize> {
        (0..self.open.len())
            .filter(|&i| {
                !self.open[i].is_empty()
                    || !self.fills[i].is_empty()
                    || self.holdings[i].size != 0.0
            })
            .collect()
    }

    /// The order with this id.
    pub(super) fn order(&self, id: &str) -> Option<(&Order, usize)> {
        self.orders.get(id).map(|e| (&e.order, e.instrument))
    }

    /// Orders with this label, oldest first.
    pub(super) fn by_label(&self, label: &str) -> Vec<&Order> {
        self.labels
            .get(label)
            .into_iter()
            .flatten()
            .filter_map(|id| self.orders.get(id).map(|e| &e.order))
            .collect()
    }

    /// Open orders of instrument `i`, in time priority.
    pub(super) fn open_orders(&self, i: usize) -> Vec<&Order> {
        self.open[i]
            .iter()
            .filter_map(|id| self.orders.get(id).map(|e| &e.order))
            .collect()
    }

    /// Closed orders of instrument `i`, newest first.
    pub(super) fn closed_orders(&self, i: usize) -> impl Iterator<Item = &Order> {
        self.closed[i]
            .iter()
            .rev()
            .filter_map(|id| self.orders.get(id).map(|e| &e.order))
    }

    /// Every order it holds (open and the closed it keeps), by label.
    pub(super) fn ledger(&self) -> Ledger {
        let mut orders: BTreeMap<String, Vec<Order>> = BTreeMap::new();
        for (label, ids) in &self.labels {
            let held: Vec<Order> = ids
                .iter()
                .filter_map(|id| self.orders.get(id).map(|e| e.order.clone()))
                .collect();
            if !held.is_empty() {
                orders.insert(label.clone(), held);
            }
        }
        Ledger {
            orders,
            fills: self.fills.iter().flatten().cloned().collect(),
        }
    }

    /// Fills of instrument `i`, oldest first.
    pub(super) fn fills(&self, i: usize) -> &VecDeque<UserTrade> {
        &self.fills[i]
    }

    /// Cancels an open order.
    pub(super) fn cancel(
        &mut self,
        id: &str,
        reason: &str,
        market: &Market,
        now: u64,
    ) -> Result<(Order, UserEvent), RpcError> {
        let entry = self
            .orders
            .get_mut(id)
            .ok_or_else(|| RpcError::new(codes::ORDER_NOT_FOUND))?;
        if entry.order.order_state != OrderState::Open {
            return Err(RpcError::new(codes::NOT_OPEN_ORDER));
        }
        entry.order.order_state = OrderState::Cancelled;
        entry.order.cancel_reason = Some(reason.into());
        entry.order.last_update_timestamp = now.max(entry.order.last_update_timestamp + 1);
        let order = entry.order.clone();
        let i = entry.instrument;
        self.open[i].retain(|o| o != id);
        self.close(i, id.to_owned());
        let event = UserEvent {
            instrument: i,
            orders: vec![order.clone()],
            trades: Vec::new(),
            position: self.position(i, market),
        };
        Ok((order, event))
    }

    /// Ids of open orders the selection takes, with their instruments.
    pub(super) fn select(
        &self,
        selection: &Selection,
        listing: impl Fn(usize) -> (String, String),
    ) -> Vec<(String, usize)> {
        let mut out = Vec::new();
        for (i, ids) in self.open.iter().enumerate() {
            if selection.instrument.is_some_and(|s| s != i) {
                continue;
            }
            let (kind, currency) = listing(i);
            if selection.kind.as_ref().is_some_and(|k| k != &kind)
                || selection
                    .currency
                    .as_ref()
                    .is_some_and(|c| !c.eq_ignore_ascii_case(&currency))
            {
                continue;
            }
            for id in ids {
                let Some(entry) = self.orders.get(id) else {
                    continue;
                };
                if selection
                    .label
                    .as_ref()
                    .is_some_and(|l| l != &entry.order.label)
                    || selection.connection.is_some_and(|c| c != entry.connection)
                    || (selection.day_orders
                        && entry.order.time_in_force != TimeInForce::GoodTilDay)
                {
                    continue;
                }
                out.push((id.clone(), i));
            }
        }
        out
    }

    /// Edits an open order's amount and price; a crossing edit trades.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn edit(
        &mut self,
        id: &str,
        amount: f64,
        price: Option<f64>,
        post_only: Option<bool>,
        reject_post_only: bool,
        market: &mut Market,
        now: u64,
    ) -> Result<(OrderResult, Vec<PublicTrade>, UserEvent), RpcError> {
        let (order, i) = self
            .order(id)
            .map(|(o, i)| (o.clone(), i))
            .ok_or_else(|| RpcError::new(codes::ORDER_NOT_FOUND))?;
        if order.order_state != OrderState::Open {
            return Err(RpcError::new(codes::NOT_OPEN_ORDER));
        }
        let filled = order.filled();
        if amount + 1e-9 < filled {
            return Err(RpcError::new(codes::INVALID_AMOUNT)
                .because("amount is below what has filled", Some("amount")));
        }
        let price = price.or(order.price.value());
        let mut p = Placement {
            instrument: i,
            side: order.direction,
            amount,
            order_type: order.order_type,
            price,
            time_in_force: order.time_in_force,
            post_only: post_only.unwrap_or(order.post_only),
            reject_post_only,
            reduce_only: order.reduce_only,
            label: order.label.clone(),
        };
        self.check(&mut p, market)?;
        let tick = market.spec.info.tick_size;
        let buying = p.side == Side::Buy;
        let limit = p.price.map(|x| ticks(x, tick));
        let levels = market.crossing(buying, limit);
        if p.post_only && !levels.is_empty() && p.reject_post_only {
            return Err(RpcError::new(codes::POST_ONLY_REJECT));
        }
        let mut order = order;
        order.amount = p.amount;
        order.contracts = Some(round(p.amount / market.spec.info.contract_size));
        order.max_show = Some(p.amount);
        if let Some(x) = p.price {
            order.price = OrderPrice::Price(x);
        }
        order.replaced = true;
        order.last_update_timestamp = now.max(order.last_update_timestamp + 1);
        let mut public = Vec::new();
        let mut fills = Vec::new();
        if !p.post_only {
            let mut remaining = round(order.amount - filled);
            for (level, size) in levels {
                if remaining <= 1e-9 {
                    break;
                }
                let amount = round(remaining.min(size));
                let trade = market.mint_trade(now, level, amount, p.side.as_str());
                remaining = round(remaining - amount);
                fills.push(self.fill(&mut order, i, &trade, "T", market));
                public.push(trade);
            }
        }
        if order.filled() + 1e-9 >= order.amount {
            order.order_state = OrderState::Filled;
        }
        for fill in &mut fills {
            fill.state = order.order_state;
        }
        if order.order_state != OrderState::Open {
            self.open[i].retain(|o| o != id);
            self.close(i, id.to_owned());
        }
        if let Some(entry) = self.orders.get_mut(id) {
            entry.order = order.clone();
        }
        let event = UserEvent {
            instrument: i,
            orders: vec![order.clone()],
            trades: fills.clone(),
            position: self.position(i, market),
        };
        Ok((
            OrderResult {
                order,
                trades: fills,
            },
            public,
            event,
        ))
    }

    /// A generated trade on instrument `i` reached the price of the oldest
    /// crossing resting order: that order fills (maker), and the trade becomes
    /// its fill (the taker on the other side, at the order's price, at most
    /// the order's remaining amount).
    pub(super) fn on_walk(
        &mut self,
        i: usize,
        trade: &mut PublicTrade,
        market: &Market,
    ) -> Option<UserEvent> {
        let tick = market.spec.info.tick_size;
        let at = ticks(trade.price, tick);
        let id = self.open[i].iter().find(|id| {
            self.orders.get(*id).is_some_and(|e| {
                let limit = e.order.price.value().map_or(0, |p| ticks(p, tick));
                match e.order.direction {
                    Side::Buy => at <= limit,
                    Side::Sell => at >= limit,
                }
            })
        })?;
        let id = id.clone();
        let mut order = self.orders.get(&id)?.order.clone();
        let remaining = round(order.amount - order.filled());
        trade.amount = round(trade.amount.min(remaining));
        trade.contracts = Some(round(trade.amount / market.spec.info.contract_size));
        if let Some(limit) = order.price.value() {
            trade.price = limit;
        }
        trade.direction = order.direction.opposite().as_str().into();
        let fill = self.fill(&mut order, i, trade, "M", market);
        if order.order_state != OrderState::Open {
            self.open[i].retain(|o| o != &id);
            self.close(i, id.clone());
        }
        if let Some(entry) = self.orders.get_mut(&id) {
            entry.order = order.clone();
        }
        Some(UserEvent {
            instrument: i,
            orders: vec![order],
            trades: vec![fill],
            position: self.position(i, market),
        })
    }
}
