//! The private methods of order entry and the account, served to an
//! authenticated connection: `private/buy`, `sell`, `edit*`, `cancel*`,
//! `get_open_orders*`, `get_order_state*`, the histories, positions and the
//! account summary. Cancel on disconnect lives in the session (it belongs to
//! a connection).

use std::sync::atomic::Ordering;
use std::sync::Arc;

use serde_json::{json, Value};

use super::account::{Placement, Selection, UserEvent};
use super::exchange::{Exchange, Tick};
use super::params::Params;
use crate::codes;
use crate::model::{to_ms, PublicTrade};
use crate::private::{OrderType, Side, TimeInForce, UserTradesPage};
use crate::RpcError;

const MAX_COUNT: u64 = 1000;

fn to_value<T: serde::Serialize>(v: T) -> Value {
    serde_json::to_value(v).unwrap_or(Value::Null)
}

fn bad(reason: impl Into<String>, param: &str) -> RpcError {
    RpcError::new(codes::INVALID_PARAMS).because(reason, Some(param))
}

/// How far back the recent view of user trades reaches (Deribit: 24 h).
const RECENT_TRADES_MS: u64 = 24 * 3_600_000;
/// Order history leaves out orders older than this without `include_old` (Deribit: 2 days).
const OLD_ORDERS_MS: u64 = 2 * 24 * 3_600_000;
/// How long a trade takes to appear in the historical view (Deribit indexes
/// with a delay; the simulator's is short enough for tests to meet it).
const HISTORY_INDEX_DELAY_MS: u64 = 5_000;

fn now_ms() -> u64 {
    to_ms(std::time::SystemTime::now())
}

/// Orders closed before this time (ms since the epoch) have left the recent
/// views of orders; only the historical view holds them.
fn recent_from(exchange: &Exchange) -> u64 {
    now_ms().saturating_sub(to_ms_duration(exchange.config.recent_orders))
}

/// How long a closed order takes to reach the historical view: the usual
/// indexing delay, never so long that an order is in neither view.
fn order_index_delay(exchange: &Exchange) -> u64 {
    HISTORY_INDEX_DELAY_MS.min(to_ms_duration(exchange.config.recent_orders) / 2)
}

/// A duration in whole milliseconds.
pub(super) fn to_ms_duration(d: std::time::Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// Whether `order` is in the recent views of orders: open, or closed lately.
fn recent(order: &crate::private::Order, from: u64) -> bool {
    !order.order_state.is_terminal() || order.last_update_timestamp >= from
}

/// Methods that go through the matching engine (and its faults).
pub(super) fn is_order_entry(method: &str) -> bool {
    matches!(
        method,
        "private/buy" | "private/sell" | "private/edit" | "private/edit_by_label"
    )
}

/// Methods that reach the matching engine, for its credit budget.
pub(super) fn is_matching_engine(method: &str) -> bool {
    is_order_entry(method)
        || method.starts_with("private/cancel")
        || method == "private/close_position"
}

/// Serves a private account method; `None` when `method` is not one of them.
pub(super) fn call(
    exchange: &Exchange,
    connection: u64,
    method: &str,
    params: &Value,
) -> Option<Result<Value, RpcError>> {
    let p = Params(params);
    let result = match method {
        "private/buy" => place(exchange, connection, Side::Buy, &p),
        "private/sell" => place(exchange, connection, Side::Sell, &p),
        "private/edit" => p
            .str("order_id")
            .and_then(|id| edit(exchange, id.to_owned(), &p)),
        "private/edit_by_label" => edit_by_label(exchange, &p),
        "private/cancel" => cancel(exchange, &p),
        "private/cancel_all" => mass_cancel(exchange, Selection::default()),
        "private/cancel_all_by_currency" => p.str("currency").and_then(|c| {
            mass_cancel(
                exchange,
                Selection {
                    currency: Some(c.to_owned()),
                    kind: kind(&p)?,
                    ..Selection::default()
                },
            )
        }),
        "private/cancel_all_by_instrument" => instrument(exchange, &p).and_then(|i| {
            mass_cancel(
                exchange,
                Selection {
                    instrument: Some(i),
                    ..Selection::default()
                },
            )
        }),
        "private/cancel_by_label" => p.str("label").and_then(|label| {
            mass_cancel(
                exchange,
                Selection {
                    label: Some(label.to_owned()),
                    currency: currency(&p)?,
                    ..Selection::default()
                },
            )
        }),
        "private/get_open_orders" => open_orders(exchange, None, None, kind(&p), None),
        "private/get_open_orders_by_currency" => p
            .str("currency")
            .and_then(|c| open_orders(exchange, None, Some(c.to_owned()), kind(&p), None)),
        "private/get_open_orders_by_instrument" => instrument(exchange, &p)
            .and_then(|i| open_orders(exchange, Some(i), None, Ok(None), None)),
        "private/get_open_orders_by_label" => p
            .str("label")
            .and_then(|label| open_orders(exchange, None, currency(&p)?, Ok(None), Some(label))),
        "private/get_order_state" => p.str("order_id").and_then(|id| {
            exchange
                .account
                .lock()
                .order(id)
                .map(|(o, _)| to_value(o))
                .ok_or_else(|| RpcError::new(codes::ORDER_NOT_FOUND))
        }),
        "private/get_order_state_by_label" => p.str("label").map(|label| {
            let currency = currency(&p).ok().flatten();
            let from = recent_from(exchange);
            let account = exchange.account.lock();
            // Recent orders only, as Deribit's: an order closed long ago is
            // found in the historical order history.
            let orders: Vec<_> = account
                .by_label(label)
                .into_iter()
                .filter(|o| recent(o, from))
                .filter(|o| currency_matches(exchange, &o.instrument_name, currency.as_deref()))
                .collect();
            to_value(orders)
        }),
        "private/get_order_history_by_instrument" => order_history(exchange, &p),
        "private/get_user_trades_by_instrument" => user_trades(exchange, &p, false),
        "private/get_user_trades_by_instrument_and_time" => user_trades(exchange, &p, true),
        "private/get_user_trades_by_order" => p.str("order_id").map(|id| {
            let account = exchange.account.lock();
            let trades: Vec<_> = match account.order(id) {
                Some((_, i)) => account
                    .fills(i)
                    .iter()
                    .filter(|t| t.order_id == id)
                    .cloned()
                    .collect(),
                None => Vec::new(),
            };
            to_value(trades)
        }),
        "private/get_positions" => positions(exchange, &p),
        "private/get_position" => instrument(exchange, &p).map(|i| {
            let account = exchange.account.lock();
            let venue = exchange.venues[i].lock();
            to_value(account.position(i, &venue.market))
        }),
        "private/get_account_summary" => account_summary(exchange, &p),
        _ => return None,
    };
    Some(result)
}

fn instrument(exchange: &Exchange, p: &Params<'_>) -> Result<usize, RpcError> {
    let name = p.str("instrument_name")?;
    exchange.instrument(name).ok_or_else(|| {
        RpcError::new(codes::INVALID_INSTRUMENT).because(
            format!("unknown instrument `{name}`"),
            Some("instrument_name"),
        )
    })
}

fn currency(p: &Params<'_>) -> Result<Option<String>, RpcError> {
    Ok(p.opt_str("currency")?
        .filter(|c| !c.eq_ignore_ascii_case("any"))
        .map(str::to_owned))
}

fn kind(p: &Params<'_>) -> Result<Option<String>, RpcError> {
    Ok(p.opt_str("kind")?
        .filter(|k| *k != "any")
        .map(str::to_owned))
}

fn currency_matches(exchange: &Exchange, instrument: &str, currency: Option<&str>) -> bool {
    let Some(currency) = currency else {
        return true;
    };
    exchange.instrument(instrument).is_some_and(|i| {
        exchange
            .info(i)
            .base_currency
            .eq_ignore_ascii_case(currency)
    })
}

fn listing(exchange: &Exchange) -> impl Fn(usize) -> (String, String) + '_ {
    |i| {
        let info = exchange.info(i);
        (info.kind, info.base_currency)
    }
}

fn parse_enum<T: serde::de::DeserializeOwned>(
    p: &Params<'_>,
    name: &str,
    default: T,
) -> Result<T, RpcError> {
    match p.opt_str(name)? {
        None => Ok(default),
        Some(text) => serde_json::from_value(Value::String(text.to_owned()))
            .map_err(|_| bad(format!("`{text}` is not a valid {name}"), name)),
    }
}

/// Publishes what a call traded: the public trades (history and feed) and
/// the account's event.
fn publish(exchange: &Exchange, instrument: usize, public: Vec<PublicTrade>, event: UserEvent) {
    if !public.is_empty() {
        if let Ok(json) = serde_json::to_string(&public) {
            let mut venue = exchange.venues[instrument].lock();
            for trade in public {
                venue.history.push(trade);
            }
            drop(venue);
            let _ = exchange.feed.send(Arc::new(Tick {
                trades: vec![(instrument, json.into())],
                ..Tick::default()
            }));
        }
    }
    let _ = exchange.user_feed.send(Arc::new(event));
}

fn place(
    exchange: &Exchange,
    connection: u64,
    side: Side,
    p: &Params<'_>,
) -> Result<Value, RpcError> {
    let instrument = instrument(exchange, p)?;
    let order_type: OrderType = parse_enum(p, "type", OrderType::Limit)?;
    let amount = match (p.opt_f64("amount")?, p.opt_f64("contracts")?) {
        (Some(amount), _) => amount,
        (None, Some(contracts)) => contracts * exchange.info(instrument).contract_size,
        (None, None) => return Err(bad("value required", "amount")),
    };
    let mut placement = Placement {
        instrument,
        side,
        amount,
        order_type,
        price: p.opt_f64("price")?,
        time_in_force: parse_enum(p, "time_in_force", TimeInForce::GoodTilCancelled)?,
        post_only: p.opt_bool("post_only")?.unwrap_or(false),
        reject_post_only: p.opt_bool("reject_post_only")?.unwrap_or(false),
        reduce_only: p.opt_bool("reduce_only")?.unwrap_or(false),
        label: p.opt_str("label")?.unwrap_or("").to_owned(),
    };
    let now = now_ms();
    if let Some(until) = p.opt_u64("valid_until")? {
        if now > until {
            return Err(RpcError::new(codes::TIMED_OUT));
        }
    }
    let mut account = exchange.account.lock();
    let mut venue = exchange.venues[instrument].lock();
    account.check(&mut placement, &venue.market)?;
    let (result, public, event) = account.place(placement, &mut venue.market, connection, now)?;
    drop(venue);
    drop(account);
    publish(exchange, instrument, public, event);
    exchange.sync_resting();
    Ok(to_value(result))
}

fn edit(exchange: &Exchange, id: String, p: &Params<'_>) -> Result<Value, RpcError> {
    let amount = p
        .opt_f64("amount")?
        .ok_or_else(|| bad("value required", "amount"))?;
    let price = p.opt_f64("price")?;
    let post_only = p.opt_bool("post_only")?;
    let reject_post_only = p.opt_bool("reject_post_only")?.unwrap_or(false);
    let mut account = exchange.account.lock();
    let i = account
        .order(&id)
        .map(|(_, i)| i)
        .ok_or_else(|| RpcError::new(codes::ORDER_NOT_FOUND))?;
    let mut venue = exchange.venues[i].lock();
    let (result, public, event) = account.edit(
        &id,
        amount,
        price,
        post_only,
        reject_post_only,
        &mut venue.market,
        now_ms(),
    )?;
    drop(venue);
    drop(account);
    publish(exchange, i, public, event);
    exchange.sync_resting();
    Ok(to_value(result))
}

fn edit_by_label(exchange: &Exchange, p: &Params<'_>) -> Result<Value, RpcError> {
    let label = p.str("label")?;
    let i = instrument(exchange, p)?;
    let id = {
        let account = exchange.account.lock();
        let open: Vec<_> = account
            .open_orders(i)
            .into_iter()
            .filter(|o| o.label == label)
            .map(|o| o.order_id.clone())
            .collect();
        match open.as_slice() {
            [id] => id.clone(),
            [] => return Err(RpcError::new(codes::ORDER_NOT_FOUND)),
            _ => return Err(RpcError::new(codes::NON_UNIQUE_ORDER_LABEL)),
        }
    };
    edit(exchange, id, p)
}

fn cancel(exchange: &Exchange, p: &Params<'_>) -> Result<Value, RpcError> {
    let id = p.str("order_id")?;
    let mut account = exchange.account.lock();
    let i = account
        .order(id)
        .map(|(_, i)| i)
        .ok_or_else(|| RpcError::new(codes::ORDER_NOT_FOUND))?;
    let venue = exchange.venues[i].lock();
    let (order, event) = account.cancel(id, "user_request", &venue.market, now_ms())?;
    drop(venue);
    drop(account);
    publish(exchange, i, Vec::new(), event);
    exchange.sync_resting();
    Ok(to_value(order))
}

/// Cancels every open order the selection takes; the count.
pub(super) fn mass_cancel(exchange: &Exchange, selection: Selection) -> Result<Value, RpcError> {
    Ok(json!(exchange.cancel_selected(&selection, "user_request")))
}

fn open_orders(
    exchange: &Exchange,
    instrument: Option<usize>,
    currency: Option<String>,
    kind: Result<Option<String>, RpcError>,
    label: Option<&str>,
) -> Result<Value, RpcError> {
    let kind = kind?;
    let account = exchange.account.lock();
    let mut out = Vec::new();
    for i in 0..exchange.venues.len() {
        if instrument.is_some_and(|x| x != i) {
            continue;
        }
        let info = exchange.info(i);
        if kind.as_ref().is_some_and(|k| k != &info.kind)
            || currency
                .as_ref()
                .is_some_and(|c| !c.eq_ignore_ascii_case(&info.base_currency))
        {
            continue;
        }
        out.extend(
            account
                .open_orders(i)
                .into_iter()
                .filter(|o| label.is_none_or(|l| o.label == l))
                .cloned(),
        );
    }
    Ok(to_value(out))
}

fn order_history(exchange: &Exchange, p: &Params<'_>) -> Result<Value, RpcError> {
    let i = instrument(exchange, p)?;
    let count = p.opt_u64("count")?.unwrap_or(20);
    if !(1..=MAX_COUNT).contains(&count) {
        return Err(bad(format!("count must be 1 to {MAX_COUNT}"), "count"));
    }
    let offset = p.opt_u64("offset")?.unwrap_or(0) as usize;
    let unfilled = p.opt_bool("include_unfilled")?.unwrap_or(false);
    // Deribit's two views: the recent one holds what closed in the last
    // `recent_orders` (30 min); the historical one what is indexed, which is
    // all but what closed in the last few seconds.
    let from = recent_from(exchange);
    let historical = p.opt_bool("historical")?.unwrap_or(false);
    let now = now_ms();
    let indexed = now.saturating_sub(order_index_delay(exchange));
    // Orders older than two days only with `include_old`.
    let old = if p.opt_bool("include_old")?.unwrap_or(false) {
        0
    } else {
        now.saturating_sub(OLD_ORDERS_MS)
    };
    let in_view = |o: &crate::private::Order| {
        if o.last_update_timestamp < old {
            false
        } else if historical {
            o.last_update_timestamp <= indexed
        } else {
            recent(o, from)
        }
    };
    let account = exchange.account.lock();
    let orders: Vec<_> = account
        .closed_orders(i)
        .filter(|o| in_view(o))
        .filter(|o| unfilled || o.filled() > 0.0)
        .skip(offset)
        .take(count as usize)
        .cloned()
        .collect();
    Ok(to_value(orders))
}

fn user_trades(exchange: &Exchange, p: &Params<'_>, by_time: bool) -> Result<Value, RpcError> {
    let i = instrument(exchange, p)?;
    let count = p.opt_u64("count")?.unwrap_or(10);
    if !(1..=MAX_COUNT).contains(&count) {
        return Err(bad(format!("count must be 1 to {MAX_COUNT}"), "count"));
    }
    let ascending = match p.opt_str("sorting")?.unwrap_or("default") {
        "asc" => true,
        "desc" | "default" => false,
        other => {
            return Err(bad(
                format!("`{other}` is not asc, desc or default"),
                "sorting",
            ))
        }
    };
    let (lo, hi) = if by_time {
        (
            p.u64("start_timestamp")? as i64,
            p.u64("end_timestamp")? as i64,
        )
    } else {
        (
            p.opt_i64("start_seq")?.unwrap_or(i64::MIN),
            p.opt_i64("end_seq")?.unwrap_or(i64::MAX),
        )
    };
    // Deribit's two views: the recent one holds the last 24 hours; the
    // historical one everything but what is not indexed yet.
    let now = now_ms();
    let (from, until) = if p.opt_bool("historical")?.unwrap_or(false) {
        (0, now.saturating_sub(HISTORY_INDEX_DELAY_MS))
    } else {
        (now.saturating_sub(RECENT_TRADES_MS), u64::MAX)
    };
    let account = exchange.account.lock();
    let key = |t: &crate::private::UserTrade| {
        if by_time {
            t.timestamp as i64
        } else {
            t.trade_seq
        }
    };
    let matching: Vec<_> = account
        .fills(i)
        .iter()
        .filter(|t| (lo..=hi).contains(&key(t)) && (from..=until).contains(&t.timestamp))
        .collect();
    let count = count as usize;
    let has_more = matching.len() > count;
    let trades: Vec<_> = if ascending {
        matching.into_iter().take(count).cloned().collect()
    } else {
        matching.into_iter().rev().take(count).cloned().collect()
    };
    Ok(to_value(UserTradesPage { trades, has_more }))
}

fn positions(exchange: &Exchange, p: &Params<'_>) -> Result<Value, RpcError> {
    let currency = currency(p)?;
    let kind = kind(p)?;
    let account = exchange.account.lock();
    let mut out = Vec::new();
    for i in account.touched() {
        let venue = exchange.venues[i].lock();
        let info = &venue.market.spec.info;
        if currency
            .as_ref()
            .is_some_and(|c| !c.eq_ignore_ascii_case(&info.base_currency))
            || kind.as_ref().is_some_and(|k| k != &info.kind)
        {
            continue;
        }
        out.push(account.position(i, &venue.market));
    }
    Ok(to_value(out))
}

fn account_summary(exchange: &Exchange, p: &Params<'_>) -> Result<Value, RpcError> {
    let currency = p.str("currency")?.to_ascii_uppercase();
    let limits = &exchange.config.rate_limits;
    let per_sec = |cost: u64| (limits.refill_per_sec / cost.max(1)) as u32;
    let burst = |cost: u64| (limits.max_credits / cost.max(1)) as u32;
    let me = json!({"burst": limits.matching_burst, "rate": limits.matching_rate});
    Ok(json!({
        "currency": currency,
        "balance": 100.0,
        "equity": 100.0,
        "available_funds": 100.0,
        "initial_margin": 0.0,
        "maintenance_margin": 0.0,
        "margin_model": "segregated_sm",
        "limits": {
            "limits_per_currency": false,
            "non_matching_engine": {
                "burst": burst(limits.request_cost),
                "rate": per_sec(limits.request_cost),
            },
            "matching_engine": {
                "trading": {"total": me},
                "cancel_all": me,
            }
        }
    }))
}

impl Exchange {
    /// Cancels every open order `selection` takes with `reason`; how many.
    pub(super) fn cancel_selected(&self, selection: &Selection, reason: &str) -> usize {
        let now = now_ms();
        let mut account = self.account.lock();
        let ids = account.select(selection, listing(self));
        let mut events = Vec::new();
        for (id, i) in &ids {
            let venue = self.venues[*i].lock();
            if let Ok((_, event)) = account.cancel(id, reason, &venue.market, now) {
                events.push(event);
            }
        }
        drop(account);
        let cancelled = events.len();
        for event in events {
            let instrument = event.instrument;
            publish(self, instrument, Vec::new(), event);
        }
        self.sync_resting();
        cancelled
    }

    /// Keeps the engine's count of resting orders current (it skips the
    /// account on ticks when there are none).
    pub(super) fn sync_resting(&self) {
        let resting = self.account.lock().resting();
        self.resting.store(resting, Ordering::Release);
    }
}
