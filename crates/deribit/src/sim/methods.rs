//! The request methods served alike over HTTP and WebSocket.

use serde_json::{json, Value};

use super::exchange::Exchange;
use super::history::Sorting;
use super::params::Params;
use crate::channel::RESOLUTIONS;
use crate::codes;
use crate::model::{
    to_ms, CurrencyInfo, DeliveryEstimate, Greeks, Quote, Ticker, TickerStats, TradesPage,
    VersionResult,
};
use crate::RpcError;

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
        "public/get_instrument" => instrument(exchange, &p),
        "public/get_contract_size" => contract_size(exchange, &p),
        "public/get_expirations" => expirations(exchange, &p),
        "public/ticker" => instrument_index(exchange, &p).map(|i| to_value(ticker(exchange, i))),
        "public/get_book_summary_by_instrument" => {
            instrument_index(exchange, &p).map(|i| json!([book_summary(exchange, i)]))
        }
        "public/get_book_summary_by_currency" => book_summaries(exchange, &p),
        "public/get_index_price" => index(exchange, &p),
        "public/get_funding_rate_value" => funding_rate_value(exchange, &p),
        // `locked` is a string: "true", "partial" or "false" (Deribit's
        // documented type; clients compare it with "false").
        "public/status" => Ok(json!({"locked": "false", "locked_currencies": []})),
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
    [
        ("BTC", "Bitcoin", "BITCOIN", 0.0001, 8),
        ("ETH", "Ethereum", "ETHER", 0.0006, 6),
    ]
    .into_iter()
    .map(|(currency, long, coin, fee, decimals)| CurrencyInfo {
        currency: currency.into(),
        currency_long: long.into(),
        coin_type: coin.into(),
        min_confirmations: 1,
        min_withdrawal_fee: fee,
        withdrawal_fee: fee,
        withdrawal_priorities: Vec::new(),
        network_currency: Some(currency.into()),
        network_fee: Some(fee),
        decimals: Some(decimals),
    })
    .collect()
}

/// `currency` as the instrument methods take it: omitted or `any` means all.
fn currency_filter<'a>(p: &'a Params<'_>) -> Result<Option<&'a str>, RpcError> {
    Ok(p.opt_str("currency")?
        .filter(|c| !c.eq_ignore_ascii_case("any")))
}

fn kind_filter<'a>(p: &'a Params<'_>) -> Result<Option<&'a str>, RpcError> {
    let kind = p.opt_str("kind")?.filter(|k| *k != "any");
    match kind {
        None | Some("future" | "option" | "spot" | "future_combo" | "option_combo") => Ok(kind),
        Some(_) => Err(bad(
            "kind must be future, option, spot, future_combo, option_combo or any",
            "kind",
        )),
    }
}

fn instruments(exchange: &Exchange, p: &Params<'_>) -> Result<Value, RpcError> {
    let currency = currency_filter(p)?;
    let kind = kind_filter(p)?;
    if p.opt_bool("expired")?.unwrap_or(false) {
        // The simulator lists no expired instruments.
        return Ok(json!([]));
    }
    let list: Vec<_> = exchange
        .infos()
        .into_iter()
        .filter(|i| currency.is_none_or(|c| i.base_currency.eq_ignore_ascii_case(c)))
        .filter(|i| kind.is_none_or(|k| i.kind == k))
        .collect();
    Ok(to_value(list))
}

fn instrument(exchange: &Exchange, p: &Params<'_>) -> Result<Value, RpcError> {
    let i = instrument_index(exchange, p)?;
    Ok(to_value(exchange.info(i)))
}

fn contract_size(exchange: &Exchange, p: &Params<'_>) -> Result<Value, RpcError> {
    let i = instrument_index(exchange, p)?;
    Ok(json!({ "contract_size": exchange.info(i).contract_size }))
}

/// `{kind: [expiry, ...]}` for `currency=any`, `{currency: {kind: [...]}}`
/// otherwise, as the recorded answers are shaped.
fn expirations(exchange: &Exchange, p: &Params<'_>) -> Result<Value, RpcError> {
    let currency = p.str("currency")?;
    let kind = p.str("kind")?;
    let wanted = if currency.eq_ignore_ascii_case("any") {
        None
    } else {
        Some(currency)
    };
    let kinds: &[&str] = match kind {
        "any" => &["future", "option"],
        "future" => &["future"],
        "option" => &["option"],
        _ => return Err(bad("kind must be future, option or any", "kind")),
    };
    let infos = exchange.infos();
    let mut by_kind = serde_json::Map::new();
    for kind in kinds {
        let mut list: Vec<(u64, String)> = Vec::new();
        for info in infos.iter().filter(|i| i.kind == *kind) {
            if wanted.is_some_and(|c| !info.base_currency.eq_ignore_ascii_case(c)) {
                continue;
            }
            let Some(expiry) = info.instrument_name.split('-').nth(1) else {
                continue;
            };
            let at = info.expiration_timestamp.unwrap_or_default();
            if !list.iter().any(|(_, e)| e == expiry) {
                list.push((at, expiry.to_owned()));
            }
        }
        // Dated expiries in time order, `PERPETUAL` last.
        list.sort();
        by_kind.insert(
            (*kind).to_owned(),
            json!(list.into_iter().map(|(_, e)| e).collect::<Vec<_>>()),
        );
    }
    Ok(match wanted {
        None => Value::Object(by_kind),
        Some(c) => json!({ c.to_ascii_lowercase(): by_kind }),
    })
}

/// One entry of `get_book_summary_by_*`.
fn book_summary(exchange: &Exchange, i: usize) -> Value {
    let t = ticker(exchange, i);
    let info = exchange.info(i);
    let mid = (t.best_bid_price > 0.0 && t.best_ask_price > 0.0)
        .then(|| (t.best_bid_price + t.best_ask_price) / 2.0);
    let mut summary = json!({
        "volume_usd": t.stats.volume_usd,
        "volume": t.stats.volume,
        "quote_currency": info.quote_currency,
        "price_change": t.stats.price_change,
        "open_interest": t.open_interest,
        "mid_price": mid,
        "mark_price": t.mark_price,
        "low": t.stats.low,
        "last": t.last_price,
        "instrument_name": t.instrument_name,
        "high": t.stats.high,
        "estimated_delivery_price": t.estimated_delivery_price,
        "creation_timestamp": t.timestamp,
        "bid_price": (t.best_bid_price > 0.0).then_some(t.best_bid_price),
        "base_currency": info.base_currency,
        "ask_price": (t.best_ask_price > 0.0).then_some(t.best_ask_price),
    });
    if let Value::Object(map) = &mut summary {
        if let (Some(funding), Some(f8h)) = (t.current_funding, t.funding_8h) {
            map.insert("current_funding".into(), json!(funding));
            map.insert("funding_8h".into(), json!(f8h));
        }
        if info.kind == "option" {
            map.insert("underlying_price".into(), json!(t.underlying_price));
            map.insert("underlying_index".into(), json!(t.underlying_index));
            map.insert("interest_rate".into(), json!(t.interest_rate));
            map.insert("mark_iv".into(), json!(t.mark_iv));
        }
    }
    summary
}

fn book_summaries(exchange: &Exchange, p: &Params<'_>) -> Result<Value, RpcError> {
    let currency = p.str("currency")?;
    let kind = kind_filter(p)?;
    let all = currency.eq_ignore_ascii_case("any");
    let list: Vec<Value> = exchange
        .infos()
        .iter()
        .enumerate()
        .filter(|(_, i)| all || i.base_currency.eq_ignore_ascii_case(currency))
        .filter(|(_, i)| kind.is_none_or(|k| i.kind == k))
        .map(|(n, _)| book_summary(exchange, n))
        .collect();
    Ok(json!(list))
}

/// `get_index_price {index_name}`: `btc_usd`, `eth_usd`, ... of the
/// currencies the simulator lists.
fn index(exchange: &Exchange, p: &Params<'_>) -> Result<Value, RpcError> {
    let name = p.str("index_name")?;
    let currency = name
        .strip_suffix("_usd")
        .or_else(|| name.strip_suffix("_usdc"))
        .map(str::to_ascii_uppercase);
    let price = currency
        .as_deref()
        .and_then(|c| index_price(exchange, c))
        .ok_or_else(|| bad(format!("unknown index `{name}`"), "index_name"))?;
    Ok(json!({ "index_price": price, "estimated_delivery_price": price }))
}

/// `get_funding_rate_value`: the funding over the period, perpetuals only.
/// The simulator's funding is a constant 0.0001 per 8 hours.
fn funding_rate_value(exchange: &Exchange, p: &Params<'_>) -> Result<Value, RpcError> {
    let i = instrument_index(exchange, p)?;
    let start = p.u64("start_timestamp")?;
    let end = p.u64("end_timestamp")?;
    if end < start {
        return Err(bad(
            "end_timestamp is before start_timestamp",
            "end_timestamp",
        ));
    }
    if exchange.info(i).settlement_period.as_deref() != Some("perpetual") {
        return Err(bad("funding applies to perpetuals only", "instrument_name"));
    }
    let eight_hours = 8.0 * 3_600_000.0;
    Ok(json!(0.0001 * (end - start) as f64 / eight_hours))
}

fn instrument_index(exchange: &Exchange, p: &Params<'_>) -> Result<usize, RpcError> {
    let name = p.str("instrument_name")?;
    exchange
        .instrument(name)
        .ok_or_else(|| bad(format!("unknown instrument `{name}`"), "instrument_name"))
}

/// The index price of `currency` (`btc_usd`): its perpetual's last price,
/// or the first of its instruments that is not an option.
fn index_price(exchange: &Exchange, currency: &str) -> Option<f64> {
    let mut fallback = None;
    for venue in &exchange.venues {
        let venue = venue.lock();
        let info = &venue.market.spec.info;
        if info.base_currency != currency || info.kind == "option" {
            continue;
        }
        if info.settlement_period.as_deref() == Some("perpetual") {
            return Some(venue.market.last_price());
        }
        fallback.get_or_insert(venue.market.last_price());
    }
    fallback
}

/// The ticker of instrument `i`, with the fields real tickers of its kind carry
/// (see the corpus: perpetuals add funding and `interest_value`, options greeks
/// and volatilities).
pub(super) fn ticker(exchange: &Exchange, i: usize) -> Ticker {
    let (info, best, last, day) = {
        let venue = exchange.venues[i].lock();
        (
            venue.market.spec.info.clone(),
            venue.market.best(),
            venue.market.last_price(),
            venue.history.last(1000),
        )
    };
    let (bid, bid_amount, ask, ask_amount) = best;
    let option = info.kind == "option";
    let perpetual = info.settlement_period.as_deref() == Some("perpetual");
    let index = if option {
        index_price(exchange, &info.base_currency).unwrap_or(last)
    } else {
        last
    };
    let high = day.iter().map(|t| t.price).reduce(f64::max);
    let low = day.iter().map(|t| t.price).reduce(f64::min);
    let volume: f64 = day.iter().map(|t| t.amount).sum();
    let first = day.first().map(|t| t.price);
    let traded = !day.is_empty();
    let vol = |v: f64| (v * 1e4).round() / 1e4;
    Ticker {
        timestamp: now_ms(),
        state: "open".into(),
        instrument_name: info.instrument_name.clone(),
        best_bid_price: bid,
        best_bid_amount: bid_amount,
        best_ask_price: ask,
        best_ask_amount: ask_amount,
        last_price: traded.then_some(last),
        mark_price: last,
        index_price: index,
        open_interest: 1_000_000.0,
        min_price: vol(last * 0.97),
        max_price: vol(last * 1.03),
        settlement_price: Some(last),
        delivery_price: None,
        estimated_delivery_price: Some(DeliveryEstimate::Price(index)),
        current_funding: perpetual.then_some(0.0),
        funding_8h: perpetual.then_some(0.0001),
        interest_value: perpetual.then_some(0.0),
        bid_iv: option.then_some(if bid > 0.0 { 48.0 } else { 0.0 }),
        ask_iv: option.then_some(if ask > 0.0 { 52.0 } else { 0.0 }),
        mark_iv: option.then_some(50.0),
        interest_rate: option.then_some(0.0),
        underlying_price: option.then_some(index),
        underlying_index: option.then(|| "index_price".to_owned()),
        greeks: option.then(|| Greeks {
            delta: 0.5,
            gamma: 0.00002,
            vega: 40.0,
            theta: -30.0,
            rho: 10.0,
        }),
        implied_bid: None,
        implied_ask: None,
        combo_state: None,
        stats: TickerStats {
            high,
            low,
            price_change: first
                .filter(|f| *f != 0.0)
                .map(|f| vol((last - f) / f * 100.0)),
            volume: Some(vol(volume)),
            volume_usd: Some(vol(volume * index)),
            volume_notional: Some(vol(volume * index)),
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
    // Deribit answers without `start_timestamp` (its own docs example omits it).
    let start = p.opt_u64("start_timestamp")?.unwrap_or(0);
    let end = p.u64("end_timestamp")?;
    let (trades, has_more) = exchange.venues[i]
        .lock()
        .history
        .by_time(start, end, count, sorting);
    Ok(to_value(TradesPage { trades, has_more }))
}
