//! The request methods served alike over HTTP and WebSocket.

use serde_json::{json, Value};

use super::exchange::Exchange;
use super::history::Sorting;
use super::params::Params;
use crate::deribit::channel::RESOLUTIONS;
use crate::deribit::codes;
use crate::deribit::model::{
    to_ms, CurrencyInfo, Quote, Ticker, TickerStats, TradesPage, VersionResult,
};
use crate::deribit::RpcError;

/// The API version the simulator reports.
pub(super) const VERSION: &str = "1.2.26";
const MAX_COUNT: u64 = 1000;

fn to_value<T: serde::Serialize>(v: T) -> Value {
    serde_json::to_value(v).unwrap_or(Value::Null)
}

fn bad(reason: impl Into<String>, param: &str) -> RpcError {
    RpcError::new(codes::INVALID_PARAMS).because(reason, Some(param))
}

fn now_ms() -> u64 {
    to_ms(std::time::SystemTime::now())
}

/// Serves a stateless method; `None` when `method` is not one of them.
pub(super) fn call(
    exchange: &Exchange,
    method: &str,
    params: &Value,
) -> Option<Result<Value, RpcError>> {
    let p = Params(params);
    let result = match method {
        "public/hello" | "public/test" => Ok(to_value(VersionResult {
            version: VERSION.into(),
        })),
        "public/get_time" => Ok(json!(now_ms())),
        "public/get_currencies" => Ok(to_value(currencies())),
        "public/get_instruments" => instruments(exchange, &p),
        "public/get_order_book" => order_book(exchange, &p),
        "public/get_tradingview_chart_data" => chart(exchange, &p),
        "public/get_last_trades_by_instrument" => trades_by_seq(exchange, &p),
        "public/get_last_trades_by_instrument_and_time" => trades_by_time(exchange, &p),
        "public/auth" => super::auth::authenticate(exchange, params).map(to_value),
        _ => return None,
    };
    Some(result)
}

fn currencies() -> Vec<CurrencyInfo> {
    [("BTC", "Bitcoin", 0.0001), ("ETH", "Ethereum", 0.0006)]
        .into_iter()
        .map(|(currency, long, fee)| CurrencyInfo {
            currency: currency.into(),
            currency_long: long.into(),
            fee_precision: 4,
            min_confirmations: 1,
            min_withdrawal_fee: fee,
            withdrawal_fee: fee,
            coin_type: currency.into(),
        })
        .collect()
}

fn instruments(exchange: &Exchange, p: &Params<'_>) -> Result<Value, RpcError> {
    let currency = p.str("currency")?;
    let kind = p.opt_str("kind")?;
    if p.opt_bool("expired")?.unwrap_or(false) {
        // The simulator lists no expired instruments.
        return Ok(json!([]));
    }
    let list: Vec<_> = exchange
        .infos()
        .into_iter()
        .filter(|i| currency == "any" || i.base_currency == currency)
        .filter(|i| kind.is_none_or(|k| i.kind == k))
        .collect();
    Ok(to_value(list))
}

fn instrument_index(exchange: &Exchange, p: &Params<'_>) -> Result<usize, RpcError> {
    let name = p.str("instrument_name")?;
    exchange
        .instrument(name)
        .ok_or_else(|| bad(format!("unknown instrument `{name}`"), "instrument_name"))
}

/// The ticker of instrument `i`.
pub(super) fn ticker(exchange: &Exchange, i: usize) -> Ticker {
    let venue = exchange.venues[i].lock();
    let market = &venue.market;
    let (bid, bid_amount, ask, ask_amount) = market.best();
    let last = market.last_price();
    let day = venue.history.last(1000);
    let high = day.iter().map(|t| t.price).reduce(f64::max);
    let low = day.iter().map(|t| t.price).reduce(f64::min);
    let volume: f64 = day.iter().map(|t| t.amount).sum();
    Ticker {
        timestamp: now_ms(),
        state: "open".into(),
        instrument_name: market.spec.info.instrument_name.clone(),
        best_bid_price: bid,
        best_bid_amount: bid_amount,
        best_ask_price: ask,
        best_ask_amount: ask_amount,
        last_price: last,
        mark_price: last,
        index_price: last,
        open_interest: 1_000_000.0,
        min_price: last * 0.97,
        max_price: last * 1.03,
        settlement_price: Some(last),
        current_funding: (market.spec.info.settlement_period == "perpetual").then_some(0.0),
        funding_8h: (market.spec.info.settlement_period == "perpetual").then_some(0.0001),
        estimated_delivery_price: last,
        stats: TickerStats {
            high,
            low,
            volume,
            volume_usd: volume * last,
            price_change: None,
        },
    }
}

/// Best bid and ask of instrument `i`.
pub(super) fn quote(exchange: &Exchange, i: usize) -> Quote {
    let venue = exchange.venues[i].lock();
    let (bid, bid_amount, ask, ask_amount) = venue.market.best();
    Quote {
        timestamp: now_ms(),
        instrument_name: venue.market.spec.info.instrument_name.clone(),
        best_bid_price: bid,
        best_bid_amount: bid_amount,
        best_ask_price: ask,
        best_ask_amount: ask_amount,
    }
}

fn order_book(exchange: &Exchange, p: &Params<'_>) -> Result<Value, RpcError> {
    let i = instrument_index(exchange, p)?;
    let depth = p.opt_u64("depth")?.unwrap_or(20).clamp(1, 10_000) as usize;
    let book = exchange.venues[i].lock().market.grouped(depth, now_ms());
    let ticker = ticker(exchange, i);
    let mut value = to_value(&ticker);
    if let Value::Object(map) = &mut value {
        map.insert("change_id".into(), json!(book.change_id));
        map.insert("bids".into(), to_value(&book.bids));
        map.insert("asks".into(), to_value(&book.asks));
    }
    Ok(value)
}

fn resolution_ms(resolution: &str) -> Option<u64> {
    if !RESOLUTIONS.contains(&resolution) {
        return None;
    }
    match resolution {
        "1D" => Some(86_400_000),
        minutes => minutes.parse::<u64>().ok().map(|m| m * 60_000),
    }
}

fn chart(exchange: &Exchange, p: &Params<'_>) -> Result<Value, RpcError> {
    let i = instrument_index(exchange, p)?;
    let start = p.u64("start_timestamp")?;
    let end = p.u64("end_timestamp")?;
    let resolution = p.str("resolution")?;
    let step = resolution_ms(resolution).ok_or_else(|| {
        bad(
            format!("resolution must be one of {RESOLUTIONS:?}"),
            "resolution",
        )
    })?;
    if end < start {
        return Err(bad(
            "end_timestamp is before start_timestamp",
            "end_timestamp",
        ));
    }
    Ok(to_value(
        exchange.venues[i].lock().history.chart(start, end, step),
    ))
}

fn paging(p: &Params<'_>, default_sorting: Sorting) -> Result<(usize, Sorting), RpcError> {
    let count = p.opt_u64("count")?.unwrap_or(10);
    if count == 0 || count > MAX_COUNT {
        return Err(bad(
            format!("count must be between 1 and {MAX_COUNT}"),
            "count",
        ));
    }
    let sorting = match p.opt_str("sorting")? {
        None | Some("default") => default_sorting,
        Some("asc") => Sorting::Asc,
        Some("desc") => Sorting::Desc,
        Some(_) => return Err(bad("sorting must be asc, desc or default", "sorting")),
    };
    Ok((count as usize, sorting))
}

fn trades_by_seq(exchange: &Exchange, p: &Params<'_>) -> Result<Value, RpcError> {
    let i = instrument_index(exchange, p)?;
    let (count, sorting) = paging(p, Sorting::Desc)?;
    let start = p.opt_i64("start_seq")?.unwrap_or(i64::MIN);
    let end = p.opt_i64("end_seq")?.unwrap_or(i64::MAX);
    let (trades, has_more) = exchange.venues[i]
        .lock()
        .history
        .by_seq(start, end, count, sorting);
    Ok(to_value(TradesPage { trades, has_more }))
}

fn trades_by_time(exchange: &Exchange, p: &Params<'_>) -> Result<Value, RpcError> {
    let i = instrument_index(exchange, p)?;
    let (count, sorting) = paging(p, Sorting::Desc)?;
    let start = p.u64("start_timestamp")?;
    let end = p.u64("end_timestamp")?;
    let (trades, has_more) = exchange.venues[i]
        .lock()
        .history
        .by_time(start, end, count, sorting);
    Ok(to_value(TradesPage { trades, has_more }))
}
