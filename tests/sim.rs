//! `keel sim` over a real WebSocket and real HTTP: every method and channel,
//! heartbeats, authentication, faults, rate limits and determinism.

mod common;

use std::collections::BTreeMap;
use std::time::Duration;

use common::deribit::{Read, WsClient};
use keel_core::secret::Secret;
use keel_deribit::model::*;
use keel_deribit::sim::{self, Fault, SimConfig, SimHandle};
use keel_deribit::{codes, ServerFrame};
use serde_json::{json, Value};

const SECOND: Duration = Duration::from_secs(1);

fn config() -> SimConfig {
    SimConfig {
        listen: "127.0.0.1:0".parse().unwrap(),
        trades_per_sec: 500.0,
        instruments: vec![
            "BTC-PERPETUAL".into(),
            "ETH-PERPETUAL".into(),
            "BTC-25DEC26-60000-C".into(),
        ],
        client_id: Some("keel-test".into()),
        client_secret: Some(Secret::new("s3cret")),
        min_heartbeat: SECOND,
        ..SimConfig::default()
    }
}

async fn start(config: SimConfig) -> SimHandle {
    sim::start(config).await.expect("simulator starts")
}

async fn http(sim: &SimHandle, path_and_query: &str) -> (u16, Value) {
    let response = reqwest::get(format!("{}{path_and_query}", sim.http_url()))
        .await
        .unwrap();
    let status = response.status().as_u16();
    let body: Value = serde_json::from_str(&response.text().await.unwrap()).unwrap();
    (status, body)
}

async fn post(sim: &SimHandle, path: &str, body: &str) -> (u16, Value) {
    let response = reqwest::Client::new()
        .post(format!("{}{path}", sim.http_url()))
        .body(body.to_owned())
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    (
        status,
        serde_json::from_str(&response.text().await.unwrap()).unwrap(),
    )
}

async fn authenticated(sim: &SimHandle) -> WsClient {
    let mut ws = WsClient::connect(&sim.ws_url()).await;
    let auth = ws
        .request("public/auth", json!({"grant_type": "client_credentials", "client_id": "keel-test", "client_secret": "s3cret"}))
        .await;
    auth.result::<AuthResult>().expect("authenticated");
    ws
}

async fn wait_for_trades(sim: &SimHandle, instrument: &str, at_least: i64) {
    let deadline = tokio::time::Instant::now() + 10 * SECOND;
    while sim.stats().instruments[instrument].last_trade_seq < at_least {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the simulator is not trading"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test]
async fn every_request_method_answers_alike_over_websocket_and_http() {
    let sim = start(config()).await;
    wait_for_trades(&sim, "BTC-PERPETUAL", 30).await;
    let mut ws = WsClient::connect(&sim.ws_url()).await;
    let calls: Vec<(&str, Value)> = vec![
        (
            "public/hello",
            json!({"client_name": "keel-test", "client_version": "1"}),
        ),
        ("public/test", json!({})),
        ("public/get_time", json!({})),
        ("public/get_currencies", json!({})),
        ("public/get_instruments", json!({"currency": "BTC"})),
        (
            "public/get_order_book",
            json!({"instrument_name": "BTC-PERPETUAL", "depth": 5}),
        ),
        (
            "public/get_tradingview_chart_data",
            json!({"instrument_name": "BTC-PERPETUAL", "start_timestamp": 0, "end_timestamp": 99_999_999_999_999u64, "resolution": "1"}),
        ),
        (
            "public/get_last_trades_by_instrument",
            json!({"instrument_name": "BTC-PERPETUAL", "start_seq": 3, "end_seq": 12, "count": 5, "sorting": "asc"}),
        ),
        (
            "public/get_last_trades_by_instrument_and_time",
            json!({"instrument_name": "BTC-PERPETUAL", "start_timestamp": 0, "end_timestamp": 99_999_999_999_999u64, "count": 3}),
        ),
    ];
    for (method, params) in calls {
        let over_ws = ws.request(method, params.clone()).await;
        let timing = over_ws.timing.expect("usIn, usOut, usDiff, testnet");
        assert!(timing.us_out >= timing.us_in && timing.testnet, "{method}");
        let query: Vec<String> = params
            .as_object()
            .unwrap()
            .iter()
            .map(|(k, v)| format!("{k}={}", v.as_str().map_or(v.to_string(), str::to_owned)))
            .collect();
        let (status, over_http) =
            http(&sim, &format!("/api/v2/{method}?{}", query.join("&"))).await;
        assert_eq!(status, 200, "{method}: {over_http}");
        assert!(
            over_http.get("usDiff").is_some() && over_http.get("id").is_none(),
            "{method}: {over_http}"
        );
        let ws_result: Value = over_ws.result().unwrap();
        match method {
            "public/hello" | "public/test" => {
                assert_eq!(ws_result["version"], over_http["result"]["version"]);
            }
            "public/get_time" => {
                let now = to_ms(std::time::SystemTime::now());
                assert!(now.abs_diff(ws_result.as_u64().unwrap()) < 5_000);
            }
            "public/get_currencies" => {
                let list: Vec<CurrencyInfo> = serde_json::from_value(ws_result).unwrap();
                assert_eq!(
                    list.iter().map(|c| c.currency.as_str()).collect::<Vec<_>>(),
                    ["BTC", "ETH"]
                );
            }
            "public/get_instruments" => {
                let list: Vec<InstrumentInfo> = serde_json::from_value(ws_result).unwrap();
                let names: Vec<&str> = list.iter().map(|i| i.instrument_name.as_str()).collect();
                assert_eq!(names, ["BTC-PERPETUAL", "BTC-25DEC26-60000-C"]);
                assert_eq!(list[1].kind, "option");
                assert_eq!(over_http["result"].as_array().unwrap().len(), 2);
            }
            "public/get_order_book" => {
                let bids = ws_result["bids"].as_array().unwrap();
                let asks = ws_result["asks"].as_array().unwrap();
                assert!(!bids.is_empty() && bids.len() <= 5 && !asks.is_empty());
                assert!(
                    bids[0][0].as_f64() < asks[0][0].as_f64(),
                    "best bid below best ask"
                );
            }
            "public/get_tradingview_chart_data" => {
                let chart: TradingViewChart = serde_json::from_value(ws_result).unwrap();
                assert_eq!(chart.status, "ok");
                assert_eq!(chart.ticks.len(), chart.volume.len());
            }
            "public/get_last_trades_by_instrument" => {
                let page: TradesPage = serde_json::from_value(ws_result).unwrap();
                let seqs: Vec<i64> = page.trades.iter().map(|t| t.trade_seq).collect();
                assert_eq!(seqs, [3, 4, 5, 6, 7]);
                assert!(page.has_more);
                let http_page: TradesPage =
                    serde_json::from_value(over_http["result"].clone()).unwrap();
                assert_eq!(http_page, page, "HTTP and WebSocket serve the same history");
            }
            "public/get_last_trades_by_instrument_and_time" => {
                let page: TradesPage = serde_json::from_value(ws_result).unwrap();
                assert_eq!(page.trades.len(), 3);
                assert!(
                    page.trades[0].trade_seq > page.trades[2].trade_seq,
                    "newest first by default"
                );
            }
            _ => unreachable!(),
        }
    }
}

#[tokio::test]
async fn ids_of_any_json_type_are_echoed_and_bad_requests_get_json_rpc_errors() {
    let sim = start(config()).await;
    let mut ws = WsClient::connect(&sim.ws_url()).await;
    for id in [json!(7), json!("auth_5f0c"), json!(-3), json!(2.5)] {
        let r = ws
            .request_with_id(id.clone(), "public/test", json!({}))
            .await;
        assert_eq!(r.id, id);
    }
    let unknown = ws.request("public/nothing", json!({})).await;
    assert_eq!(unknown.outcome.unwrap_err().code, codes::METHOD_NOT_FOUND);
    let bad = ws
        .request(
            "public/get_last_trades_by_instrument",
            json!({"instrument_name": "BTC-PERPETUAL", "count": 5000}),
        )
        .await;
    assert_eq!(bad.outcome.unwrap_err().code, codes::INVALID_PARAMS);
    ws.send_raw("{this is not json".into()).await;
    match ws.read(5 * SECOND).await {
        Read::Frame(ServerFrame::Response(r)) => {
            assert_eq!(r.outcome.unwrap_err().code, codes::PARSE_ERROR)
        }
        _ => panic!("expected a parse error response"),
    }
    ws.send_raw(r#"{"jsonrpc":"2.0","method":"public/test"}"#.into())
        .await;
    match ws.read(5 * SECOND).await {
        Read::Frame(ServerFrame::Response(r)) => {
            assert_eq!(r.outcome.unwrap_err().code, codes::INVALID_REQUEST)
        }
        _ => panic!("expected an invalid request response"),
    }
    // The connection is still fine.
    assert!(ws
        .request("public/test", json!({}))
        .await
        .result::<VersionResult>()
        .is_ok());
    let (status, body) = http(&sim, "/api/v2/public/get_order_book?instrument_name=NOPE").await;
    assert_eq!(
        (status, body["error"]["code"].as_i64()),
        (400, Some(codes::INVALID_PARAMS))
    );
    let (status, _) = http(&sim, "/no/such/route").await;
    assert_eq!(status, 404);
}

#[tokio::test]
async fn every_channel_delivers_its_payload() {
    let sim = start(config()).await;
    let mut ws = authenticated(&sim).await;
    let channels = [
        "trades.BTC-PERPETUAL.raw",
        "trades.BTC-PERPETUAL.100ms",
        "trades.ETH-PERPETUAL.agg2",
        "ticker.BTC-PERPETUAL.100ms",
        "book.BTC-PERPETUAL.100ms",
        "book.ETH-PERPETUAL.none.10.100ms",
        "chart.trades.BTC-PERPETUAL.1",
        "quote.BTC-PERPETUAL",
    ];
    let subscribed: Vec<String> = ws
        .request("private/subscribe", json!({"channels": channels}))
        .await
        .result()
        .unwrap();
    assert_eq!(subscribed, channels);
    for channel in [
        "trades.BTC-PERPETUAL.raw",
        "trades.BTC-PERPETUAL.100ms",
        "trades.ETH-PERPETUAL.agg2",
    ] {
        let data = ws
            .next_on(channel, 5 * SECOND)
            .await
            .unwrap_or_else(|| panic!("nothing on {channel}"));
        let trades: Vec<PublicTrade> = serde_json::from_str(&data).unwrap();
        assert!(!trades.is_empty());
        assert!(
            trades
                .windows(2)
                .all(|w| w[1].trade_seq == w[0].trade_seq + 1),
            "{channel}: contiguous"
        );
    }
    let ticker: Ticker = serde_json::from_str(
        &ws.next_on("ticker.BTC-PERPETUAL.100ms", 5 * SECOND)
            .await
            .unwrap(),
    )
    .unwrap();
    assert_eq!(ticker.instrument_name, "BTC-PERPETUAL");
    let snapshot: BookUpdate = serde_json::from_str(
        &ws.next_on("book.BTC-PERPETUAL.100ms", 5 * SECOND)
            .await
            .unwrap(),
    )
    .unwrap();
    assert_eq!(
        (snapshot.kind.as_deref(), snapshot.prev_change_id),
        (Some("snapshot"), None)
    );
    let mut last = snapshot.change_id;
    for _ in 0..3 {
        let change: BookUpdate = serde_json::from_str(
            &ws.next_on("book.BTC-PERPETUAL.100ms", 5 * SECOND)
                .await
                .unwrap(),
        )
        .unwrap();
        assert_eq!(change.kind.as_deref(), Some("change"));
        assert_eq!(
            change.prev_change_id,
            Some(last),
            "changes chain on from the snapshot"
        );
        last = change.change_id;
    }
    let grouped: BookGrouped = serde_json::from_str(
        &ws.next_on("book.ETH-PERPETUAL.none.10.100ms", 5 * SECOND)
            .await
            .unwrap(),
    )
    .unwrap();
    assert!(grouped.bids.len() <= 10 && grouped.bids.windows(2).all(|w| w[0].0 > w[1].0));
    let bar: ChartBar = serde_json::from_str(
        &ws.next_on("chart.trades.BTC-PERPETUAL.1", 5 * SECOND)
            .await
            .unwrap(),
    )
    .unwrap();
    assert!(bar.low <= bar.open && bar.open <= bar.high && bar.tick % 60_000 == 0);
    let quote: Quote =
        serde_json::from_str(&ws.next_on("quote.BTC-PERPETUAL", 5 * SECOND).await.unwrap())
            .unwrap();
    assert!(quote.best_bid_price < quote.best_ask_price);

    let removed: Vec<String> = ws
        .request(
            "public/unsubscribe",
            json!({"channels": ["quote.BTC-PERPETUAL", "quote.ETH-PERPETUAL"]}),
        )
        .await
        .result()
        .unwrap();
    assert_eq!(
        removed,
        ["quote.BTC-PERPETUAL"],
        "only channels actually removed"
    );
    assert_eq!(sim.stats().subscriptions, 7);
    let all: String = ws
        .request("public/unsubscribe_all", json!({}))
        .await
        .result()
        .unwrap();
    assert_eq!(all, "ok");
    assert_eq!(sim.stats().subscriptions, 0);
}

#[tokio::test]
async fn raw_channels_need_authentication() {
    let sim = start(config()).await;
    let mut ws = WsClient::connect(&sim.ws_url()).await;
    let refused = ws
        .request(
            "public/subscribe",
            json!({"channels": ["trades.BTC-PERPETUAL.raw"]}),
        )
        .await;
    assert_eq!(
        refused.outcome.unwrap_err().code,
        codes::RAW_SUBSCRIPTIONS_UNAUTHORIZED
    );
    let private = ws
        .request(
            "private/subscribe",
            json!({"channels": ["trades.BTC-PERPETUAL.100ms"]}),
        )
        .await;
    assert_eq!(private.outcome.unwrap_err().code, codes::INVALID_TOKEN);
    let bad = ws
        .request(
            "public/subscribe",
            json!({"channels": ["trades.NOPE-PERPETUAL.100ms"]}),
        )
        .await;
    assert_eq!(bad.outcome.unwrap_err().code, codes::INVALID_PARAMS);
}

#[tokio::test]
async fn streamed_trades_are_contiguous_and_match_the_history_and_the_chart() {
    let sim = start(config()).await;
    let mut ws = authenticated(&sim).await;
    ws.request(
        "public/subscribe",
        json!({"channels": ["trades.ETH-PERPETUAL.raw"]}),
    )
    .await;
    let mut streamed: Vec<PublicTrade> = Vec::new();
    while streamed.len() < 100 {
        let data = ws
            .next_on("trades.ETH-PERPETUAL.raw", 5 * SECOND)
            .await
            .expect("trades flow");
        streamed.extend(serde_json::from_str::<Vec<PublicTrade>>(&data).unwrap());
    }
    assert!(streamed
        .windows(2)
        .all(|w| w[1].trade_seq == w[0].trade_seq + 1));
    let (first, last) = (streamed[0].trade_seq, streamed[99].trade_seq);
    let page: TradesPage = ws
        .request("public/get_last_trades_by_instrument", json!({"instrument_name": "ETH-PERPETUAL", "start_seq": first, "end_seq": last, "count": 1000, "sorting": "asc"}))
        .await
        .result()
        .unwrap();
    assert_eq!(
        page.trades,
        streamed[..100],
        "the history serves exactly what was streamed"
    );

    // Every trade from seq 1, paged by trade_seq, aggregates to the chart's bars.
    let mut all: Vec<PublicTrade> = Vec::new();
    loop {
        let from = all.last().map_or(1, |t| t.trade_seq + 1);
        let page: TradesPage = ws
            .request("public/get_last_trades_by_instrument", json!({"instrument_name": "ETH-PERPETUAL", "start_seq": from, "end_seq": last, "count": 1000, "sorting": "asc"}))
            .await
            .result()
            .unwrap();
        all.extend(page.trades);
        if !page.has_more {
            break;
        }
    }
    assert_eq!(all.len() as i64, last);
    let end = all.last().unwrap().timestamp;
    let chart: TradingViewChart = ws
        .request("public/get_tradingview_chart_data", json!({"instrument_name": "ETH-PERPETUAL", "start_timestamp": 0, "end_timestamp": end, "resolution": "1"}))
        .await
        .result()
        .unwrap();
    let mut expected: BTreeMap<u64, (f64, f64, f64, f64, f64)> = BTreeMap::new();
    for t in &all {
        let bucket = t.timestamp - t.timestamp % 60_000;
        let bar = expected
            .entry(bucket)
            .or_insert((t.price, t.price, t.price, t.price, 0.0));
        bar.1 = bar.1.max(t.price);
        bar.2 = bar.2.min(t.price);
        bar.3 = t.price;
        bar.4 += t.amount;
    }
    for (i, tick) in chart.ticks.iter().enumerate() {
        if let Some((o, h, l, c, v)) = expected.get(tick) {
            assert_eq!(
                (chart.open[i], chart.high[i], chart.low[i], chart.close[i]),
                (*o, *h, *l, *c)
            );
            assert!((chart.volume[i] - v).abs() < 1e-6);
        }
    }
    assert!(
        expected.keys().all(|b| chart.ticks.contains(b)),
        "every bucket with trades has a bar"
    );
}

#[tokio::test]
async fn a_connection_that_does_not_answer_test_requests_is_closed() {
    let sim = start(config()).await;
    let mut silent = WsClient::connect(&sim.ws_url()).await;
    let mut polite = WsClient::connect(&sim.ws_url()).await;
    let too_short = silent
        .request("public/set_heartbeat", json!({"interval": 0}))
        .await;
    assert_eq!(too_short.outcome.unwrap_err().code, codes::INVALID_PARAMS);
    for ws in [&mut silent, &mut polite] {
        let ok: String = ws
            .request("public/set_heartbeat", json!({"interval": 1}))
            .await
            .result()
            .unwrap();
        assert_eq!(ok, "ok");
    }
    // The polite client answers three test_requests and stays connected.
    for _ in 0..3 {
        loop {
            match polite.read(5 * SECOND).await {
                Read::Frame(ServerFrame::TestRequest) => break,
                Read::Frame(_) => {}
                _ => panic!("expected a test_request"),
            }
        }
        polite.request("public/test", json!({})).await;
    }
    // The silent one was closed after its first unanswered interval.
    assert!(
        silent.closed_within(5 * SECOND).await,
        "an unresponsive connection is closed"
    );
    assert!(polite
        .request("public/test", json!({}))
        .await
        .result::<VersionResult>()
        .is_ok());
}

#[tokio::test]
async fn authentication_by_credentials_and_by_signature() {
    let sim = start(config()).await;
    let mut ws = WsClient::connect(&sim.ws_url()).await;
    let wrong = ws.request("public/auth", json!({"grant_type": "client_credentials", "client_id": "keel-test", "client_secret": "nope"})).await;
    assert_eq!(wrong.outcome.unwrap_err().code, codes::INVALID_CREDENTIALS);

    let timestamp = to_ms(std::time::SystemTime::now());
    let good = sim::signature("s3cret", timestamp, "abc123", "");
    let bad = sim::signature("wrong-secret", timestamp, "abc123", "");
    let rejected = ws
        .request("public/auth", json!({"grant_type": "client_signature", "client_id": "keel-test", "timestamp": timestamp, "nonce": "abc123", "data": "", "signature": bad}))
        .await;
    assert_eq!(
        rejected.outcome.unwrap_err().code,
        codes::INVALID_CREDENTIALS
    );
    let stale = ws
        .request("public/auth", json!({"grant_type": "client_signature", "client_id": "keel-test", "timestamp": timestamp - 3_600_000, "nonce": "abc123", "data": "", "signature": sim::signature("s3cret", timestamp - 3_600_000, "abc123", "")}))
        .await;
    assert_eq!(stale.outcome.unwrap_err().code, codes::INVALID_CREDENTIALS);
    let tokens: AuthResult = ws
        .request("public/auth", json!({"grant_type": "client_signature", "client_id": "keel-test", "timestamp": timestamp, "nonce": "abc123", "data": "", "signature": good, "scope": "session:keel"}))
        .await
        .result()
        .unwrap();
    assert_eq!(
        (tokens.token_type.as_str(), tokens.scope.as_str()),
        ("bearer", "session:keel")
    );
    // Authenticated now: raw channels are allowed.
    assert!(ws
        .request(
            "public/subscribe",
            json!({"channels": ["trades.BTC-PERPETUAL.raw"]})
        )
        .await
        .outcome
        .is_ok());
    // The refresh token works once issued.
    let mut other = WsClient::connect(&sim.ws_url()).await;
    let refreshed = other
        .request(
            "public/auth",
            json!({"grant_type": "refresh_token", "refresh_token": tokens.refresh_token}),
        )
        .await;
    assert!(refreshed.result::<AuthResult>().is_ok());
    // Credentials appear nowhere in the simulator's stats.
    assert!(!serde_json::to_string(&sim.stats())
        .unwrap()
        .contains("s3cret"));
}

#[tokio::test]
async fn disconnect_stall_and_duplicate_faults_are_seen_by_clients() {
    let sim = start(config()).await;
    let mut ws = authenticated(&sim).await;
    ws.request(
        "public/subscribe",
        json!({"channels": ["trades.BTC-PERPETUAL.raw"]}),
    )
    .await;
    let mut seen: Vec<i64> = Vec::new();
    let read_some = |data: String, seen: &mut Vec<i64>| {
        let trades: Vec<PublicTrade> = serde_json::from_str(&data).unwrap();
        seen.extend(trades.iter().map(|t| t.trade_seq));
    };
    read_some(
        ws.next_on("trades.BTC-PERPETUAL.raw", 5 * SECOND)
            .await
            .unwrap(),
        &mut seen,
    );

    // duplicate_trades: trades already seen arrive again.
    let (status, _) = post(
        &sim,
        "/sim/faults",
        r#"{"fault":"duplicate_trades","count":5}"#,
    )
    .await;
    assert_eq!(status, 200);
    let mut duplicated = false;
    for _ in 0..50 {
        let data = ws
            .next_on("trades.BTC-PERPETUAL.raw", 5 * SECOND)
            .await
            .unwrap();
        let before = seen.clone();
        read_some(data, &mut seen);
        if seen[before.len()..].iter().any(|s| before.contains(s)) {
            duplicated = true;
            break;
        }
    }
    assert!(duplicated, "re-sent trades were observed");

    // stall: trades generated during the stall are never sent, while requests
    // are still answered; afterwards the sequence jumps. Judged by each trade's
    // generation time, so notifications already in flight do not matter.
    let t0 = to_ms(std::time::SystemTime::now());
    let stalled_at = sim.stats().instruments["BTC-PERPETUAL"].last_trade_seq;
    post(&sim, "/sim/faults", r#"{"fault":"stall","ms":700}"#).await;
    assert!(
        ws.request("public/test", json!({}))
            .await
            .result::<VersionResult>()
            .is_ok(),
        "requests still answered during a stall"
    );
    let mut after: Vec<PublicTrade> = Vec::new();
    while after.last().is_none_or(|t| t.timestamp < t0 + 900) {
        let data = ws
            .next_on("trades.BTC-PERPETUAL.raw", 5 * SECOND)
            .await
            .expect("data resumes");
        after.extend(serde_json::from_str::<Vec<PublicTrade>>(&data).unwrap());
    }
    let inside: Vec<u64> = after
        .iter()
        .map(|t| t.timestamp)
        .filter(|ts| *ts > t0 + 50 && *ts < t0 + 650)
        .collect();
    assert!(
        inside.is_empty(),
        "trades generated during the stall were sent: {inside:?}"
    );
    let first_after = after
        .iter()
        .find(|t| t.timestamp >= t0 + 650)
        .expect("trades after the stall");
    // About 0.6 s at 500 trades/s (a third of them on this instrument) were withheld.
    assert!(
        first_after.trade_seq > stalled_at + 10,
        "the sequence jumps over the stall: {} after {stalled_at}",
        first_after.trade_seq
    );

    // disconnect: the server closes the connection.
    post(&sim, "/sim/faults", r#"{"fault":"disconnect"}"#).await;
    assert!(ws.closed_within(5 * SECOND).await);
    let stats = sim.stats();
    assert_eq!(
        (
            stats.faults["disconnect"],
            stats.faults["stall"],
            stats.faults["duplicate_trades"]
        ),
        (1, 1, 1)
    );
}

#[tokio::test]
async fn malformed_book_gap_rate_limit_slow_consumer_and_ignored_test_faults() {
    let sim = start(config()).await;
    let mut ws = WsClient::connect(&sim.ws_url()).await;

    // malformed: frames no Deribit client can parse.
    sim.inject(&Fault::Malformed { count: 4 }).unwrap();
    ws.request("public/test", json!({})).await;
    assert_eq!(
        ws.garbage.len(),
        4,
        "four frames no Deribit client can parse: {:?}",
        ws.garbage
    );

    // book_gap: a change whose prev_change_id is not the last change_id.
    ws.request(
        "public/subscribe",
        json!({"channels": ["book.ETH-PERPETUAL.100ms"]}),
    )
    .await;
    let snapshot: BookUpdate = serde_json::from_str(
        &ws.next_on("book.ETH-PERPETUAL.100ms", 5 * SECOND)
            .await
            .unwrap(),
    )
    .unwrap();
    sim.inject(&Fault::BookGap {
        instrument: Some("ETH-PERPETUAL".into()),
    })
    .unwrap();
    let mut last = snapshot.change_id;
    let mut gap = false;
    for _ in 0..20 {
        let change: BookUpdate = serde_json::from_str(
            &ws.next_on("book.ETH-PERPETUAL.100ms", 5 * SECOND)
                .await
                .unwrap(),
        )
        .unwrap();
        if change.prev_change_id != Some(last) {
            gap = true;
            break;
        }
        last = change.change_id;
    }
    assert!(gap, "a gap in change_id was observable");

    // slow_consumer: requests wait while the server is not reading.
    sim.inject(&Fault::SlowConsumer { ms: 600 }).unwrap();
    tokio::time::sleep(Duration::from_millis(50)).await;
    let started = std::time::Instant::now();
    ws.request("public/test", json!({})).await;
    assert!(
        started.elapsed() >= Duration::from_millis(400),
        "answered only after the pause"
    );

    // ignore_test_request: the answer is disregarded, so the connection is closed.
    let mut hb = WsClient::connect(&sim.ws_url()).await;
    hb.request("public/set_heartbeat", json!({"interval": 1}))
        .await;
    sim.inject(&Fault::IgnoreTestRequest).unwrap();
    loop {
        match hb.read(5 * SECOND).await {
            Read::Frame(ServerFrame::TestRequest) => break,
            Read::Frame(_) => {}
            _ => panic!("expected a test_request"),
        }
    }
    hb.request("public/test", json!({})).await;
    assert!(
        hb.closed_within(5 * SECOND).await,
        "closed although it answered"
    );

    // rate_limit: 10028 and the session closes.
    sim.inject(&Fault::RateLimit).unwrap();
    let limited = ws.request("public/test", json!({})).await;
    assert_eq!(limited.outcome.unwrap_err().code, codes::TOO_MANY_REQUESTS);
    assert!(ws.closed_within(5 * SECOND).await);
    assert_eq!(sim.stats().faults.values().sum::<u64>(), 5);
    let (status, _) = post(
        &sim,
        "/sim/faults",
        r#"{"fault":"book_gap","instrument":"NOPE"}"#,
    )
    .await;
    assert_eq!(status, 400);
}

#[tokio::test]
async fn credit_rate_limits_answer_10028_and_close() {
    let mut cfg = config();
    cfg.rate_limits.enabled = true;
    cfg.rate_limits.max_credits = 2_000;
    cfg.rate_limits.refill_per_sec = 1;
    let sim = start(cfg).await;
    let mut ws = WsClient::connect(&sim.ws_url()).await;
    for _ in 0..4 {
        assert!(
            ws.request("public/test", json!({})).await.outcome.is_ok(),
            "the burst is allowed"
        );
    }
    let refused = ws.request("public/test", json!({})).await;
    assert_eq!(refused.outcome.unwrap_err().code, codes::TOO_MANY_REQUESTS);
    assert!(
        ws.closed_within(5 * SECOND).await,
        "the session is closed after 10028"
    );
}

#[tokio::test]
async fn one_seed_gives_the_same_trades_and_another_does_not() {
    let history = |sim: &SimHandle, instrument: &str| {
        let url = format!("{}/api/v2/public/get_last_trades_by_instrument?instrument_name={instrument}&start_seq=1&end_seq=200&count=200&sorting=asc", sim.http_url());
        async move {
            let body: Value =
                serde_json::from_str(&reqwest::get(url).await.unwrap().text().await.unwrap())
                    .unwrap();
            let page: TradesPage = serde_json::from_value(body["result"].clone()).unwrap();
            page.trades
                .into_iter()
                .map(|t| {
                    (
                        t.trade_seq,
                        t.price.to_bits(),
                        t.amount.to_bits(),
                        t.direction,
                        t.tick_direction,
                    )
                })
                .collect::<Vec<_>>()
        }
    };
    let mut a_cfg = config();
    a_cfg.seed = 99;
    a_cfg.trades_per_sec = 3_000.0;
    let mut b_cfg = a_cfg.clone();
    b_cfg.trades_per_sec = 700.0; // a different pace must not change the sequence
    let mut c_cfg = a_cfg.clone();
    c_cfg.seed = 100;
    let (a, b, c) = (start(a_cfg).await, start(b_cfg).await, start(c_cfg).await);
    for sim in [&a, &b, &c] {
        wait_for_trades(sim, "BTC-25DEC26-60000-C", 200).await;
    }
    for instrument in ["BTC-PERPETUAL", "BTC-25DEC26-60000-C"] {
        let (ha, hb, hc) = (
            history(&a, instrument).await,
            history(&b, instrument).await,
            history(&c, instrument).await,
        );
        assert_eq!(ha.len(), 200);
        assert_eq!(ha, hb, "{instrument}: same seed, same trades");
        assert_ne!(ha, hc, "{instrument}: another seed, other trades");
    }
}

#[tokio::test]
async fn the_generation_rate_changes_at_run_time() {
    let sim = start(config()).await;
    let (status, body) = post(&sim, "/sim/rate", r#"{"trades_per_sec": 0}"#).await;
    assert_eq!((status, body["trades_per_sec"].as_f64()), (200, Some(0.0)));
    tokio::time::sleep(Duration::from_millis(50)).await;
    let frozen = sim.stats();
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        sim.stats().instruments,
        frozen.instruments,
        "rate 0 generates nothing"
    );
    let (status, _) = post(&sim, "/sim/rate", r#"{"trades_per_sec": -1}"#).await;
    assert_eq!(status, 400);
    post(&sim, "/sim/rate", r#"{"trades_per_sec": 1000}"#).await;
    wait_for_trades(
        &sim,
        "BTC-PERPETUAL",
        frozen.instruments["BTC-PERPETUAL"].last_trade_seq + 50,
    )
    .await;
}

#[tokio::test]
async fn a_frame_over_32_kb_is_refused_without_an_id_and_batches_under_it_subscribe() {
    let instruments: Vec<String> = (0..250)
        .map(|i| format!("BTC-25JUN27-{}-C", 20_000 + i * 500))
        .collect();
    let sim = start(SimConfig {
        instruments: instruments.clone(),
        ..config()
    })
    .await;
    let channels: Vec<String> = instruments
        .iter()
        .flat_map(|i| {
            [
                format!("trades.{i}.100ms"),
                format!("book.{i}.none.10.100ms"),
                format!("ticker.{i}.100ms"),
                format!("book.{i}.100ms"),
                format!("quote.{i}"),
            ]
        })
        .collect();
    let mut ws = WsClient::connect(&sim.ws_url()).await;
    let one = json!({"jsonrpc": "2.0", "id": 7, "method": "public/subscribe",
                     "params": {"channels": channels}})
    .to_string();
    assert!(one.len() > codes::MAX_REQUEST_BYTES, "{} bytes", one.len());
    ws.send_raw(one).await;
    let refusal = loop {
        match ws.read(5 * SECOND).await {
            Read::Frame(ServerFrame::Response(r)) => break r,
            Read::Frame(_) => continue,
            Read::Closed | Read::TimedOut => panic!("no answer to the large frame"),
        }
    };
    assert!(refusal.is_unaddressed(), "{:?}", refusal.id);
    let error = refusal.outcome.unwrap_err();
    assert_eq!(
        (error.code, error.message.as_str()),
        (codes::INVALID_REQUEST, codes::REQUEST_TOO_LARGE)
    );
    assert_eq!(sim.stats().subscriptions, 0);
    let batches = keel_deribit::channel::subscribe_batches(channels.clone());
    assert!(batches.len() >= 2);
    for batch in batches {
        let answer = ws
            .request("public/subscribe", json!({ "channels": batch }))
            .await;
        assert_eq!(answer.result::<Vec<String>>().unwrap(), batch);
    }
    assert_eq!(sim.stats().subscriptions, channels.len());
    sim.stop().await;
}

#[tokio::test]
async fn the_market_data_methods_unmodified_clients_call_answer_as_deribit_documents() {
    let sim = start(config()).await;
    wait_for_trades(&sim, "BTC-PERPETUAL", 5).await;
    let get = |path: &'static str| {
        let sim = &sim;
        async move {
            let (status, body) = http(sim, path).await;
            assert_eq!(status, 200, "{path}: {body}");
            body["result"].clone()
        }
    };
    // ccxt loads markets with no currency at all; cryptofeed asks per currency.
    let all = get("/api/v2/public/get_instruments").await;
    assert_eq!(all.as_array().unwrap().len(), 3, "{all}");
    let any = get("/api/v2/public/get_instruments?currency=any&kind=any").await;
    assert_eq!(any, all);
    let futures = get("/api/v2/public/get_instruments?kind=future&expired=false").await;
    assert_eq!(futures.as_array().unwrap().len(), 2);
    let sol = get("/api/v2/public/get_instruments?currency=SOL").await;
    assert_eq!(
        sol,
        json!([]),
        "a currency without instruments is an empty list"
    );
    let info: InstrumentInfo = serde_json::from_value(
        get("/api/v2/public/get_instrument?instrument_name=BTC-PERPETUAL").await,
    )
    .unwrap();
    assert_eq!(info.settlement_period.as_deref(), Some("perpetual"));
    assert_eq!(info.settlement_currency.as_deref(), Some("BTC"));
    assert_eq!(info.counter_currency.as_deref(), Some("USD"));

    let ticker: Ticker =
        serde_json::from_value(get("/api/v2/public/ticker?instrument_name=BTC-PERPETUAL").await)
            .unwrap();
    assert!(ticker.best_bid_price > 0.0 && ticker.best_ask_price > ticker.best_bid_price);
    assert!(ticker.current_funding.is_some() && ticker.funding_8h.is_some());
    assert!(ticker.last_price.is_some() && ticker.stats.volume.is_some());
    let option: Ticker = serde_json::from_value(
        get("/api/v2/public/ticker?instrument_name=BTC-25DEC26-60000-C").await,
    )
    .unwrap();
    assert!(
        option.greeks.is_some() && option.mark_iv.is_some() && option.current_funding.is_none()
    );
    assert_eq!(option.underlying_price, Some(option.index_price));

    let status = get("/api/v2/public/status").await;
    assert_eq!(status, json!({"locked": "false", "locked_currencies": []}));
    let index = get("/api/v2/public/get_index_price?index_name=btc_usd").await;
    assert!(
        index["index_price"].as_f64().is_some_and(|p| p > 0.0),
        "{index}"
    );
    assert_eq!(index["index_price"], index["estimated_delivery_price"]);
    let size = get("/api/v2/public/get_contract_size?instrument_name=BTC-PERPETUAL").await;
    assert_eq!(size, json!({"contract_size": 10.0}));
    let summary =
        get("/api/v2/public/get_book_summary_by_instrument?instrument_name=BTC-PERPETUAL").await;
    let summary = &summary[0];
    for key in [
        "instrument_name",
        "mark_price",
        "bid_price",
        "ask_price",
        "mid_price",
        "volume",
        "open_interest",
        "funding_8h",
    ] {
        assert!(summary.get(key).is_some(), "{key} in {summary}");
    }
    let by_currency =
        get("/api/v2/public/get_book_summary_by_currency?currency=BTC&kind=option").await;
    assert_eq!(by_currency.as_array().unwrap().len(), 1, "{by_currency}");
    assert!(by_currency[0].get("mark_iv").is_some());
    let now = to_ms(std::time::SystemTime::now());
    let funding = get(Box::leak(
        format!(
            "/api/v2/public/get_funding_rate_value?instrument_name=BTC-PERPETUAL&start_timestamp={}&end_timestamp={now}",
            now - 8 * 3_600_000
        )
        .into_boxed_str(),
    ))
    .await;
    assert!(
        (funding.as_f64().unwrap() - 0.0001).abs() < 1e-12,
        "{funding}"
    );
    let (status, body) = http(
        &sim,
        &format!("/api/v2/public/get_funding_rate_value?instrument_name=BTC-25DEC26&start_timestamp=0&end_timestamp={now}"),
    )
    .await;
    assert_eq!(
        (status, body["error"]["code"].as_i64()),
        (400, Some(codes::INVALID_PARAMS)),
        "{body}"
    );
    let expirations = get("/api/v2/public/get_expirations?currency=any&kind=any").await;
    assert_eq!(
        expirations,
        json!({"future": ["PERPETUAL"], "option": ["25DEC26"]})
    );
    let btc = get("/api/v2/public/get_expirations?currency=btc&kind=option").await;
    assert_eq!(btc, json!({"btc": {"option": ["25DEC26"]}}));
    // A missing parameter, in Deribit's words.
    let (status, body) = http(&sim, "/api/v2/public/ticker").await;
    assert_eq!(status, 400);
    assert_eq!(
        body["error"],
        json!({"code": -32602, "message": "Invalid params", "data": {"reason": "value required", "param": "instrument_name"}})
    );
    sim.stop().await;
}
