//! Every real frame Deribit sent (`tests/deribit-frames/`, provenance in its
//! `SOURCES.md`) goes through the parser the daemon runs: envelopes through
//! `parse_server_frame` / `parse_request`, notification payloads through
//! `deribit::decode`, and the results of the methods Keel calls into their types.
//! A frame Keel does not consume must be recognised and skipped, never reported
//! as malformed. The test walks the whole corpus and names every file that fails.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use keel_deribit::model::*;
use keel_deribit::private::{
    AccountSummary, CancelOnDisconnect, Order, OrderResult, Position, UserChanges, UserChannel,
    UserFeed, UserTrade, UserTradesPage,
};
use keel_deribit::{
    decode, decode_trades, parse_request, parse_server_frame, parse_subscription, raw_data,
    read_trades, ChannelKind, Payload, ServerFrame,
};
use serde::de::DeserializeOwned;

fn corpus_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/deribit-frames")
}

/// `SOURCES.md`'s `kind` column, by file.
fn kinds() -> BTreeMap<String, String> {
    let sources = std::fs::read_to_string(corpus_dir().join("SOURCES.md")).expect("SOURCES.md");
    sources
        .lines()
        .filter_map(|line| {
            let cells: Vec<&str> = line.split('|').map(str::trim).collect();
            // | file | repository | path | commit | kind | what | provenance |
            (cells.len() >= 8 && cells[1].ends_with(".json"))
                .then(|| (cells[1].to_owned(), cells[5].to_owned()))
        })
        .collect()
}

fn files() -> Vec<String> {
    let root = corpus_dir();
    let mut out = Vec::new();
    for dir in std::fs::read_dir(&root).expect("corpus") {
        let dir = dir.expect("entry").path();
        if !dir.is_dir() {
            continue;
        }
        for file in std::fs::read_dir(&dir).expect("folder") {
            let path = file.expect("entry").path();
            let name = path.strip_prefix(&root).expect("under root");
            out.push(name.to_string_lossy().into_owned());
        }
    }
    out.sort();
    out
}

fn result_as<T: DeserializeOwned>(text: &str) -> Result<T, String> {
    match parse_server_frame(text).map_err(|e| e.to_string())? {
        ServerFrame::Response(r) => r.result::<T>().map_err(|e| e.to_string()),
        other => Err(format!("not a response: {other:?}")),
    }
}

/// What Keel makes of one file; `Ok` names what it was read as.
fn read(kind: &str, text: &str) -> Result<String, String> {
    match kind {
        "client request" => {
            let request = parse_request(text).map_err(|(_, e)| e.to_string())?;
            return Ok(format!("request {}", request.method));
        }
        // Not a frame: the `data` array of a `user.trades` notification.
        "user.trades data array" => {
            serde_json::from_str::<Vec<UserTrade>>(text).map_err(|e| e.to_string())?;
            return decode("user.trades.BTC-PERPETUAL.raw", text)
                .map(|p| format!("{p:?}"))
                .map_err(|e| e.to_string());
        }
        // What the executor reads of the private API.
        "order response (buy/sell/edit/close)" => {
            return result_as::<OrderResult>(text)
                .map(|r| format!("order {} {}", r.order.order_state.as_str(), r.trades.len()))
        }
        "order response (cancel)" => {
            return result_as::<Order>(text).map(|o| format!("order {}", o.order_state.as_str()))
        }
        "open orders / order state list" => {
            let orders = if text.contains("\"jsonrpc\"") {
                result_as::<Vec<Order>>(text)?
            } else {
                // The docs' detailed cancel result: `{currency, type, result: [orders]}`.
                let value: serde_json::Value =
                    serde_json::from_str(text).map_err(|e| e.to_string())?;
                serde_json::from_value(value["result"].clone()).map_err(|e| e.to_string())?
            };
            return Ok(format!("{} orders", orders.len()));
        }
        "get_instruments response" => {
            return result_as::<Vec<InstrumentInfo>>(text)
                .map(|v| format!("{} instruments", v.len()))
        }
        "trades page (get_last_trades / get_user_trades)" => {
            return result_as::<TradesPage>(text).map(|p| format!("{} trades", p.trades.len()))
        }
        "get_tradingview_chart_data response" => {
            return result_as::<TradingViewChart>(text).map(|c| format!("{} bars", c.ticks.len()))
        }
        "auth response" => return result_as::<AuthResult>(text).map(|a| a.token_type),
        "public/test or hello" => return result_as::<VersionResult>(text).map(|v| v.version),
        "public/ticker response" => {
            return result_as::<Ticker>(text).map(|t| format!("ticker {}", t.instrument_name))
        }
        "subscribe/unsubscribe response" => {
            return result_as::<Vec<String>>(text).map(|c| format!("{} channels", c.len()))
        }
        _ => {}
    }
    let frame = parse_server_frame(text).map_err(|e| e.to_string())?;
    match frame {
        ServerFrame::Subscription { channel, data } => {
            // The receiver reads every real notification in one pass, and
            // reads the same as the general parser.
            let one_pass = parse_subscription(text, raw_data);
            if one_pass != Some((channel.as_str(), data.get())) {
                return Err(format!("the one-pass read gives {one_pass:?}"));
            }
            if ChannelKind::of(&channel) == Some(ChannelKind::Trades) {
                let trades = parse_subscription(text, |_, rest| read_trades(rest));
                if trades.map(|(_, t)| t) != decode_trades(&channel, data.get()).ok() {
                    return Err("the one-pass read decodes other trades".into());
                }
            }
            if let Ok(user) = channel.parse::<UserChannel>() {
                let items = match user.feed {
                    UserFeed::Orders if data.get().trim_start().starts_with('[') => {
                        serde_json::from_str::<Vec<Order>>(data.get()).map(|v| v.len())
                    }
                    UserFeed::Orders => serde_json::from_str::<Order>(data.get()).map(|_| 1),
                    UserFeed::Trades => {
                        serde_json::from_str::<Vec<UserTrade>>(data.get()).map(|v| v.len())
                    }
                    UserFeed::Changes => serde_json::from_str::<UserChanges>(data.get())
                        .map(|c| c.orders.len() + c.trades.len()),
                };
                items.map_err(|e| format!("{channel}: {e}"))?;
            }
            let payload = decode(&channel, data.get()).map_err(|e| e.to_string())?;
            let consumed = !matches!(payload, Payload::Skipped(_));
            let expect_consumed = matches!(
                kind,
                "ticker notification"
                    | "book change"
                    | "book snapshot"
                    | "book grouped (full snapshot)"
                    | "trades notification"
                    | "quote notification"
                    | "chart.trades notification"
            );
            if consumed != expect_consumed {
                return Err(format!("{kind} decoded as {payload:?}"));
            }
            // What the receiver publishes: each trade's own text, which reads
            // back as the same trade the whole payload decodes to.
            if let Payload::Trades(trades) = payload {
                let texts = decode_trades(&channel, data.get()).map_err(|e| e.to_string())?;
                let again: Vec<PublicTrade> = texts
                    .iter()
                    .map(|(trade, text)| {
                        let reread: PublicTrade =
                            serde_json::from_str(text).map_err(|e| e.to_string())?;
                        if reread != trade.to_public() {
                            return Err(format!("{text} reads back as {reread:?}"));
                        }
                        Ok(reread)
                    })
                    .collect::<Result<_, String>>()?;
                if again != trades {
                    return Err(format!(
                        "{kind}: the trades' own texts differ from the payload"
                    ));
                }
            }
            Ok(channel)
        }
        ServerFrame::Response(response) => match (&response.outcome, kind) {
            (Err(e), "error response") if !e.message.is_empty() => Ok(format!("error {e}")),
            (Ok(_), "error response") => Err("an error response read as a result".into()),
            (Err(e), _) => Err(format!("{kind} read as an error: {e}")),
            // Results of methods Keel does not call (private ones, until the
            // executor): the envelope is recognised; nothing reads the body.
            (Ok(_), _) => Ok("response".into()),
        },
        ServerFrame::Heartbeat | ServerFrame::TestRequest => Ok("heartbeat".into()),
        ServerFrame::Other(n) => Ok(format!("notification {}", n.method)),
    }
}

/// The private methods' other results the executor reads, by file.
fn read_private(file: &str, text: &str) -> Option<Result<String, String>> {
    let method = file
        .strip_prefix("deribit-docs/private-")?
        .strip_suffix(".response.json")?;
    Some(match method {
        "get_positions" => {
            result_as::<Vec<Position>>(text).map(|p| format!("{} positions", p.len()))
        }
        "get_position" => result_as::<Position>(text).map(|p| p.instrument_name),
        "get_user_trades_by_instrument" | "get_user_trades_by_instrument_and_time" => {
            result_as::<UserTradesPage>(text).map(|p| format!("{} trades", p.trades.len()))
        }
        "get_user_trades_by_order" => {
            result_as::<Vec<UserTrade>>(text).map(|t| format!("{} trades", t.len()))
        }
        "get_cancel_on_disconnect" => result_as::<CancelOnDisconnect>(text).map(|c| c.scope),
        "get_account_summary" => result_as::<AccountSummary>(text).and_then(|a| {
            a.limits
                .map(|_| a.currency)
                .ok_or_else(|| "no limits".into())
        }),
        "cancel_all" | "cancel_all_by_instrument" | "cancel_by_label" => {
            result_as::<u64>(text).map(|n| format!("{n} cancelled"))
        }
        "enable_cancel_on_disconnect" | "disable_cancel_on_disconnect" => result_as::<String>(text),
        _ => return None,
    })
}

#[test]
fn every_private_result_the_executor_reads_parses() {
    let mut read = 0;
    let mut failures = Vec::new();
    for file in files() {
        let text = std::fs::read_to_string(corpus_dir().join(&file)).expect("readable");
        match read_private(&file, &text) {
            Some(Ok(_)) => read += 1,
            Some(Err(e)) => failures.push(format!("{file}: {e}")),
            None => {}
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    assert_eq!(read, 12, "the private results in the corpus");
}

#[test]
fn every_real_frame_parses() {
    let kinds = kinds();
    let files = files();
    assert_eq!(files.len(), 370, "the corpus holds 370 frames");
    let mut failures = Vec::new();
    for file in &files {
        let text = std::fs::read_to_string(corpus_dir().join(file)).expect("readable");
        let Some(kind) = kinds.get(file) else {
            failures.push(format!("{file}: not listed in SOURCES.md"));
            continue;
        };
        let outcome = read(kind, &text);
        if file.starts_with("ccxt/") {
            // ccxt stored numbers as strings: not what Deribit sends. A clean,
            // typed failure saying what is of the wrong type is the answer to it.
            match outcome {
                Err(e) if e.contains("wrong type: invalid type: string") => {}
                other => failures.push(format!("{file}: expected a typed failure, got {other:?}")),
            }
            continue;
        }
        if let Err(e) = outcome {
            failures.push(format!("{file} ({kind}): {e}"));
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} files fail:\n{}",
        failures.len(),
        files.len(),
        failures.join("\n")
    );
}
