//! `keel sim` as the executor's counterparty, over a real WebSocket: order
//! entry against its book, resting orders filled by its trade walk, fills in
//! the public trade stream, the `user.*` channels, label lookups, cancel on
//! disconnect, and the order faults.

mod common;

use std::time::Duration;

use common::deribit::WsClient;
use keel_core::secret::Secret;
use keel_deribit::model::{to_ms, PublicTrade, Ticker};
use keel_deribit::private::*;
use keel_deribit::sim::{self, Fault, SimConfig, SimHandle};
use keel_deribit::{codes, Response, ServerFrame};
use serde_json::{json, Value};

const SECOND: Duration = Duration::from_secs(1);
const BTC: &str = "BTC-PERPETUAL";

fn config(trades_per_sec: f64) -> SimConfig {
    SimConfig {
        listen: "127.0.0.1:0".parse().unwrap(),
        trades_per_sec,
        instruments: vec![BTC.into(), "ETH-PERPETUAL".into()],
        client_id: Some("keel-exec".into()),
        client_secret: Some(Secret::new("s3cret")),
        min_heartbeat: SECOND,
        ..SimConfig::default()
    }
}

/// A connection authenticated by `client_signature`, as the executor does.
async fn trader(sim: &SimHandle) -> WsClient {
    let mut ws = WsClient::connect(&sim.ws_url()).await;
    let timestamp = to_ms(std::time::SystemTime::now());
    let signature = sim::signature("s3cret", timestamp, "n0nce", "");
    let auth = ws
        .request("public/auth", json!({"grant_type": "client_signature", "client_id": "keel-exec", "timestamp": timestamp, "nonce": "n0nce", "data": "", "signature": signature, "scope": "session:keel-exec"}))
        .await;
    assert!(auth.outcome.is_ok(), "authenticated: {:?}", auth.outcome);
    ws
}

fn code(response: &Response) -> Option<i64> {
    response.outcome.as_ref().err().map(|e| e.code)
}

/// `(best bid, best ask)` of the simulator's book.
async fn best(ws: &mut WsClient, instrument: &str) -> (f64, f64) {
    let book: Value = ws
        .request(
            "public/get_order_book",
            json!({"instrument_name": instrument, "depth": 1}),
        )
        .await
        .result()
        .unwrap();
    (
        book["bids"][0][0].as_f64().unwrap(),
        book["asks"][0][0].as_f64().unwrap(),
    )
}

async fn buy(ws: &mut WsClient, params: Value) -> Response {
    ws.request("private/buy", params).await
}

fn notifications_on(ws: &WsClient, channel: &str) -> Vec<Value> {
    ws.backlog
        .iter()
        .filter_map(|f| match f {
            ServerFrame::Subscription { channel: c, data } if c == channel => {
                serde_json::from_str(data.get()).ok()
            }
            _ => None,
        })
        .collect()
}

#[tokio::test]
async fn orders_trade_against_the_book_and_show_in_every_view() {
    let sim = sim::start(config(0.0)).await.unwrap();
    let mut ws = trader(&sim).await;
    let subscribed = ws
        .request(
            "private/subscribe",
            json!({"channels": ["user.orders.any.any.raw", "user.trades.BTC-PERPETUAL.raw", "trades.BTC-PERPETUAL.raw", "user.changes.future.BTC.100ms"]}),
        )
        .await;
    assert!(subscribed.outcome.is_ok(), "{:?}", subscribed.outcome);
    let (bid, ask) = best(&mut ws, BTC).await;

    // A buy at the best ask takes it: filled at once, the fill in the result.
    let taken: OrderResult = buy(&mut ws, json!({"instrument_name": BTC, "amount": 10, "type": "limit", "price": ask, "label": "take-1"}))
        .await
        .result()
        .unwrap();
    assert_eq!(taken.order.order_state, OrderState::Filled);
    assert_eq!(taken.order.label, "take-1");
    assert_eq!(taken.trades.len(), 1);
    let fill = &taken.trades[0];
    assert_eq!(
        (fill.price, fill.amount, fill.liquidity.as_str()),
        (ask, 10.0, "T")
    );
    // The order's notification came before its answer.
    let updates = notifications_on(&ws, "user.orders.any.any.raw");
    assert!(
        updates
            .iter()
            .any(|o| o["label"] == "take-1" && o["order_state"] == "filled"),
        "user.orders before the answer: {updates:?}"
    );
    // The fill is a public trade with its trade_seq, and a user trade.
    let public: Vec<PublicTrade> = serde_json::from_str(
        &ws.next_on("trades.BTC-PERPETUAL.raw", 5 * SECOND)
            .await
            .expect("public trade"),
    )
    .unwrap();
    assert_eq!(
        (
            public[0].trade_seq,
            public[0].trade_id.as_str(),
            public[0].direction.as_str()
        ),
        (fill.trade_seq, fill.trade_id.as_str(), "buy")
    );
    let mine: Vec<UserTrade> = serde_json::from_str(
        &ws.next_on("user.trades.BTC-PERPETUAL.raw", 5 * SECOND)
            .await
            .expect("user trade"),
    )
    .unwrap();
    assert_eq!(mine[0].trade_id, fill.trade_id);
    let changes: UserChanges = serde_json::from_str(
        &ws.next_on("user.changes.future.BTC.100ms", 5 * SECOND)
            .await
            .expect("user.changes"),
    )
    .unwrap();
    assert_eq!(changes.positions.last().map(|p| p.size), Some(10.0));
    let page: UserTradesPage = ws
        .request(
            "private/get_user_trades_by_instrument",
            json!({"instrument_name": BTC, "sorting": "asc"}),
        )
        .await
        .result()
        .unwrap();
    assert_eq!(
        page.trades.iter().map(|t| &t.trade_id).collect::<Vec<_>>(),
        vec![&fill.trade_id]
    );
    let stats = sim.stats();
    assert_eq!(stats.instruments[BTC].last_trade_seq, fill.trade_seq);

    // A buy far below the book rests; it is found by id, label and listing.
    let low = bid - 500.0;
    let rest: OrderResult = buy(&mut ws, json!({"instrument_name": BTC, "amount": 20, "type": "limit", "price": low, "label": "rest-1"}))
        .await
        .result()
        .unwrap();
    assert_eq!(rest.order.order_state, OrderState::Open);
    assert!(rest.trades.is_empty());
    let by_label: Vec<Order> = ws
        .request(
            "private/get_order_state_by_label",
            json!({"currency": "BTC", "label": "rest-1"}),
        )
        .await
        .result()
        .unwrap();
    assert_eq!(by_label.len(), 1);
    assert_eq!(by_label[0].order_id, rest.order.order_id);
    let open: Vec<Order> = ws
        .request(
            "private/get_open_orders_by_instrument",
            json!({"instrument_name": BTC}),
        )
        .await
        .result()
        .unwrap();
    assert_eq!(
        open.iter().map(|o| &o.order_id).collect::<Vec<_>>(),
        vec![&rest.order.order_id]
    );
    let none: Vec<Order> = ws
        .request(
            "private/get_order_state_by_label",
            json!({"currency": "BTC", "label": "never-sent"}),
        )
        .await
        .result()
        .unwrap();
    assert!(none.is_empty());

    // An edit moves it; a cancel closes it; a second cancel is final (11044).
    let edited: OrderResult = ws
        .request(
            "private/edit",
            json!({"order_id": rest.order.order_id, "amount": 30, "price": low - 1.0}),
        )
        .await
        .result()
        .unwrap();
    assert!(edited.order.replaced);
    assert_eq!(
        (edited.order.amount, edited.order.price.value()),
        (30.0, Some(low - 1.0))
    );
    assert!(edited.order.last_update_timestamp > rest.order.last_update_timestamp);
    let cancelled: Order = ws
        .request("private/cancel", json!({"order_id": rest.order.order_id}))
        .await
        .result()
        .unwrap();
    assert_eq!(cancelled.order_state, OrderState::Cancelled);
    assert_eq!(cancelled.cancel_reason.as_deref(), Some("user_request"));
    let again = ws
        .request("private/cancel", json!({"order_id": rest.order.order_id}))
        .await;
    assert_eq!(code(&again), Some(codes::NOT_OPEN_ORDER));
    let unknown = ws
        .request("private/cancel", json!({"order_id": "BTC-999999"}))
        .await;
    assert_eq!(code(&unknown), Some(codes::ORDER_NOT_FOUND));

    // IOC below the book and FOK beyond its depth: cancelled, nothing traded.
    let ioc: OrderResult = buy(&mut ws, json!({"instrument_name": BTC, "amount": 10, "price": low, "time_in_force": "immediate_or_cancel"}))
        .await
        .result()
        .unwrap();
    assert_eq!(
        (ioc.order.order_state, ioc.trades.len()),
        (OrderState::Cancelled, 0)
    );
    let fok: OrderResult = buy(&mut ws, json!({"instrument_name": BTC, "amount": 100_000_000, "price": ask + 1000.0, "time_in_force": "fill_or_kill"}))
        .await
        .result()
        .unwrap();
    assert_eq!(
        (fok.order.order_state, fok.trades.len()),
        (OrderState::Cancelled, 0)
    );

    // Post-only that would cross: refused with reject_post_only, else repriced.
    let refused = buy(&mut ws, json!({"instrument_name": BTC, "amount": 10, "price": ask, "post_only": true, "reject_post_only": true})).await;
    assert_eq!(code(&refused), Some(codes::POST_ONLY_REJECT));
    let repriced: OrderResult = buy(
        &mut ws,
        json!({"instrument_name": BTC, "amount": 10, "price": ask, "post_only": true}),
    )
    .await
    .result()
    .unwrap();
    assert_eq!(repriced.order.order_state, OrderState::Open);
    assert!(repriced.order.price.value().unwrap() < ask);

    // Reduce-only is cut to the position, and refused when nothing is left to reduce.
    let reduce: OrderResult = ws
        .request(
            "private/sell",
            json!({"instrument_name": BTC, "amount": 50, "type": "market", "reduce_only": true}),
        )
        .await
        .result()
        .unwrap();
    assert_eq!(
        (reduce.order.amount, reduce.order.order_state),
        (10.0, OrderState::Filled)
    );
    let nothing = ws
        .request(
            "private/sell",
            json!({"instrument_name": BTC, "amount": 10, "type": "market", "reduce_only": true}),
        )
        .await;
    assert_eq!(code(&nothing), Some(codes::REDUCE_ONLY_REJECT));
    let positions: Vec<Position> = ws
        .request(
            "private/get_positions",
            json!({"currency": "BTC", "kind": "future"}),
        )
        .await
        .result()
        .unwrap();
    assert_eq!(
        positions.iter().map(|p| p.size).collect::<Vec<_>>(),
        vec![0.0]
    );

    // Bad requests get typed errors.
    for (params, expected) in [
        (
            json!({"instrument_name": BTC, "amount": 15, "price": low}),
            codes::INVALID_AMOUNT,
        ),
        (
            json!({"instrument_name": BTC, "amount": 10, "price": low + 0.3}),
            codes::PRICE_WRONG_TICK,
        ),
        (
            json!({"instrument_name": BTC, "amount": 10}),
            codes::INVALID_PARAMS,
        ),
        (
            json!({"instrument_name": "NOPE-PERPETUAL", "amount": 10, "price": 1}),
            codes::INVALID_INSTRUMENT,
        ),
        (
            json!({"instrument_name": BTC, "amount": 10, "price": low, "label": "x".repeat(65)}),
            codes::INVALID_PARAMS,
        ),
        (
            json!({"instrument_name": BTC, "amount": 10, "price": low, "valid_until": 1}),
            codes::TIMED_OUT,
        ),
    ] {
        let answer = buy(&mut ws, params.clone()).await;
        assert_eq!(code(&answer), Some(expected), "{params}");
    }
    // Not authenticated: no private methods.
    let mut anonymous = WsClient::connect(&sim.ws_url()).await;
    let refused = buy(
        &mut anonymous,
        json!({"instrument_name": BTC, "amount": 10, "price": low}),
    )
    .await;
    assert_eq!(code(&refused), Some(codes::INVALID_TOKEN));
    let summary: AccountSummary = ws
        .request("private/get_account_summary", json!({"currency": "BTC"}))
        .await
        .result()
        .unwrap();
    assert!(summary.limits.unwrap().matching_engine.trading.total.rate > 0);
}

#[tokio::test]
async fn a_resting_order_fills_from_the_trade_walk() {
    let sim = sim::start(SimConfig {
        instruments: vec![BTC.into()],
        ..config(2000.0)
    })
    .await
    .unwrap();
    let mut ws = trader(&sim).await;
    ws.request(
        "private/subscribe",
        json!({"channels": ["trades.BTC-PERPETUAL.raw"]}),
    )
    .await;
    // A simulator just started may not have traded yet: wait for a last price.
    let deadline = tokio::time::Instant::now() + 10 * SECOND;
    let last_price = loop {
        let ticker: Ticker = ws
            .request("public/ticker", json!({"instrument_name": BTC}))
            .await
            .result()
            .unwrap();
        if let Some(price) = ticker.last_price {
            break price;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no trade within 10 s"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let placed: OrderResult = buy(&mut ws, json!({"instrument_name": BTC, "amount": 1000, "price": last_price, "post_only": true, "label": "walk-1"}))
        .await
        .result()
        .unwrap();
    let id = placed.order.order_id;
    // The walk moves away sometimes: re-price at the last trade until it fills.
    let deadline = tokio::time::Instant::now() + 30 * SECOND;
    loop {
        let order: Order = ws
            .request("private/get_order_state", json!({"order_id": id}))
            .await
            .result()
            .unwrap();
        if order.filled() > 0.0 {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "never filled: {order:?}"
        );
        let last: Ticker = ws
            .request("public/ticker", json!({"instrument_name": BTC}))
            .await
            .result()
            .unwrap();
        let (_, ask) = best(&mut ws, BTC).await;
        let price = last.last_price.unwrap().min(ask - 0.5);
        ws.request(
            "private/edit",
            json!({"order_id": id, "amount": 1000, "price": price, "post_only": true}),
        )
        .await;
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // Stop it filling further (a filled order answers 11044), then compare.
    ws.request("private/cancel", json!({"order_id": id})).await;
    let order: Order = ws
        .request("private/get_order_state", json!({"order_id": id}))
        .await
        .result()
        .unwrap();
    assert!(order.order_state.is_terminal());
    let fills: Vec<UserTrade> = ws
        .request("private/get_user_trades_by_order", json!({"order_id": id}))
        .await
        .result()
        .unwrap();
    assert!(!fills.is_empty());
    let total: f64 = fills.iter().map(|f| f.amount).sum();
    assert!(
        (total - order.filled()).abs() < 1e-9,
        "fills add up to the filled amount"
    );
    for fill in &fills {
        // Maker: the public trade shows the other side taking, at the order's price.
        assert_eq!(fill.liquidity, "M");
        let history: Value = ws
            .request("public/get_last_trades_by_instrument", json!({"instrument_name": BTC, "start_seq": fill.trade_seq, "end_seq": fill.trade_seq}))
            .await
            .result()
            .unwrap();
        let public: PublicTrade = serde_json::from_value(history["trades"][0].clone()).unwrap();
        assert_eq!(
            (
                public.trade_id.as_str(),
                public.price,
                public.amount,
                public.direction.as_str()
            ),
            (fill.trade_id.as_str(), fill.price, fill.amount, "sell")
        );
    }
}

#[tokio::test]
async fn cancel_on_disconnect_cancels_that_connections_orders_and_logout_does_not() {
    let sim = sim::start(config(0.0)).await.unwrap();
    let mut watcher = trader(&sim).await;
    let (bid, _) = best(&mut watcher, BTC).await;

    let mut first = trader(&sim).await;
    let enabled = first
        .request(
            "private/enable_cancel_on_disconnect",
            json!({"scope": "connection"}),
        )
        .await;
    assert!(enabled.outcome.is_ok());
    let cod: CancelOnDisconnect = first
        .request(
            "private/get_cancel_on_disconnect",
            json!({"scope": "connection"}),
        )
        .await
        .result()
        .unwrap();
    assert!(cod.enabled);
    let on_first: OrderResult = buy(
        &mut first,
        json!({"instrument_name": BTC, "amount": 10, "price": bid - 100.0, "label": "cod-1"}),
    )
    .await
    .result()
    .unwrap();
    // An order of another connection stays.
    let on_watcher: OrderResult = buy(
        &mut watcher,
        json!({"instrument_name": BTC, "amount": 10, "price": bid - 100.0, "label": "stays-1"}),
    )
    .await
    .result()
    .unwrap();
    drop(first);
    let deadline = tokio::time::Instant::now() + 10 * SECOND;
    loop {
        let order: Order = watcher
            .request(
                "private/get_order_state",
                json!({"order_id": on_first.order.order_id}),
            )
            .await
            .result()
            .unwrap();
        if order.order_state == OrderState::Cancelled {
            assert_eq!(order.cancel_reason.as_deref(), Some("cancel_on_disconnect"));
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "not cancelled on disconnect"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let kept: Order = watcher
        .request(
            "private/get_order_state",
            json!({"order_id": on_watcher.order.order_id}),
        )
        .await
        .result()
        .unwrap();
    assert_eq!(kept.order_state, OrderState::Open);

    // A logout is a graceful close: cancel on disconnect does not fire.
    let mut second = trader(&sim).await;
    second
        .request("private/enable_cancel_on_disconnect", json!({}))
        .await;
    let on_second: OrderResult = buy(
        &mut second,
        json!({"instrument_name": BTC, "amount": 10, "price": bid - 100.0}),
    )
    .await
    .result()
    .unwrap();
    second
        .send_raw(
            json!({"jsonrpc": "2.0", "id": 99, "method": "private/logout", "params": {}})
                .to_string(),
        )
        .await;
    assert!(
        second.closed_within(5 * SECOND).await,
        "logout closes the connection"
    );
    // Give a wrongly fired cancel the time to happen, then look.
    let deadline = tokio::time::Instant::now() + SECOND;
    while tokio::time::Instant::now() < deadline {
        let order: Order = watcher
            .request(
                "private/get_order_state",
                json!({"order_id": on_second.order.order_id}),
            )
            .await
            .result()
            .unwrap();
        assert_eq!(
            order.order_state,
            OrderState::Open,
            "logout cancelled an order"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn order_faults_drop_delay_and_reject_answers() {
    let sim = sim::start(config(0.0)).await.unwrap();
    let mut ws = trader(&sim).await;
    ws.request(
        "private/subscribe",
        json!({"channels": ["user.orders.BTC-PERPETUAL.raw"]}),
    )
    .await;
    let (bid, _) = best(&mut ws, BTC).await;
    let price = bid - 100.0;

    // Rejected: not executed.
    sim.inject(&Fault::RejectOrders {
        code: codes::MATCHING_ENGINE_QUEUE_FULL,
        count: 1,
    })
    .unwrap();
    let refused = buy(
        &mut ws,
        json!({"instrument_name": BTC, "amount": 10, "price": price, "label": "rej-1"}),
    )
    .await;
    assert_eq!(code(&refused), Some(codes::MATCHING_ENGINE_QUEUE_FULL));
    let found: Vec<Order> = ws
        .request(
            "private/get_order_state_by_label",
            json!({"currency": "BTC", "label": "rej-1"}),
        )
        .await
        .result()
        .unwrap();
    assert!(found.is_empty(), "a rejected request placed nothing");

    // Dropped: placed, notified, never answered.
    sim.inject(&Fault::DropOrderAnswers { count: 1 }).unwrap();
    ws.send_raw(json!({"jsonrpc": "2.0", "id": 7001, "method": "private/buy", "params": {"instrument_name": BTC, "amount": 10, "price": price, "label": "drop-1"}}).to_string())
        .await;
    let update: Order = serde_json::from_str(
        &ws.next_on("user.orders.BTC-PERPETUAL.raw", 5 * SECOND)
            .await
            .expect("notified"),
    )
    .unwrap();
    assert_eq!(
        (update.label.as_str(), update.order_state),
        ("drop-1", OrderState::Open)
    );
    let found: Vec<Order> = ws
        .request(
            "private/get_order_state_by_label",
            json!({"currency": "BTC", "label": "drop-1"}),
        )
        .await
        .result()
        .unwrap();
    assert_eq!(found.len(), 1, "the dropped request placed its order");
    assert!(
        !ws.backlog
            .iter()
            .any(|f| matches!(f, ServerFrame::Response(r) if r.id == json!(7001))),
        "no answer to the dropped request"
    );

    // Delayed: answered late, after its notification.
    sim.inject(&Fault::DelayOrderAnswers { ms: 700, count: 1 })
        .unwrap();
    let sent = tokio::time::Instant::now();
    let late: OrderResult = buy(
        &mut ws,
        json!({"instrument_name": BTC, "amount": 10, "price": price, "label": "late-1"}),
    )
    .await
    .result()
    .unwrap();
    assert!(sent.elapsed() >= Duration::from_millis(700));
    assert_eq!(late.order.label, "late-1");
    assert!(notifications_on(&ws, "user.orders.BTC-PERPETUAL.raw")
        .iter()
        .any(|o| o["label"] == "late-1"));
    assert_eq!(sim.stats().faults.get("drop_order_answers"), Some(&1));
}

/// `Authorization: deri-hmac-sha256 ...` for `method` on `path_and_query`
/// with `body`, signed as Deribit specifies.
fn hmac_header(secret: &str, method: &str, path_and_query: &str, body: &str, ts: u64) -> String {
    let data = format!("{method}\n{path_and_query}\n{body}\n");
    let sig = sim::signature(secret, ts, "abc123", &data);
    format!("deri-hmac-sha256 id=keel-exec,ts={ts},sig={sig},nonce=abc123")
}

#[tokio::test]
async fn the_private_api_over_http_takes_a_signed_request_or_a_token_and_nothing_else() {
    let sim = sim::start(config(0.0)).await.unwrap();
    let mut ws = trader(&sim).await;
    let (bid, _) = best(&mut ws, BTC).await;
    let price = bid - 1000.0;
    let http = reqwest::Client::new();
    let now = || to_ms(std::time::SystemTime::now());
    let get = |path: String, auth: Option<String>| {
        let mut request = http.get(format!("{}{path}", sim.http_url()));
        if let Some(auth) = auth {
            request = request.header("Authorization", auth);
        }
        async move {
            let response = request.send().await.unwrap();
            let status = response.status().as_u16();
            let text = response.text().await.unwrap();
            (status, serde_json::from_str::<Value>(&text).unwrap())
        }
    };

    // Signed over method, path with query, and the (empty) body.
    let path = format!(
        "/api/v2/private/buy?instrument_name={BTC}&amount=10&type=limit&price={price}&label=h-1"
    );
    let (status, body) = get(
        path.clone(),
        Some(hmac_header("s3cret", "GET", &path, "", now())),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["result"]["order"]["label"], "h-1");
    assert_eq!(body["result"]["order"]["order_state"], "open");
    // The same account the WebSocket sees.
    let found: Vec<Order> = ws
        .request(
            "private/get_order_state_by_label",
            json!({"currency": "BTC", "label": "h-1"}),
        )
        .await
        .result()
        .unwrap();
    assert_eq!(found.len(), 1);

    // A signature over another request, another secret, an old timestamp or
    // no header at all: refused, and nothing is placed.
    let other = format!(
        "/api/v2/private/buy?instrument_name={BTC}&amount=10&type=limit&price={price}&label=h-2"
    );
    for auth in [
        Some(hmac_header("s3cret", "GET", &path, "", now())),
        Some(hmac_header("wrong", "GET", &other, "", now())),
        Some(hmac_header("s3cret", "POST", &other, "", now())),
        Some(hmac_header("s3cret", "GET", &other, "", now() - 120_000)),
        Some("Bearer not-a-token".to_owned()),
        None,
    ] {
        let (status, body) = get(other.clone(), auth.clone()).await;
        assert_eq!(status, 400, "{auth:?}: {body}");
        let code = body["error"]["code"].as_i64().unwrap();
        assert!(
            [codes::INVALID_TOKEN, codes::INVALID_CREDENTIALS].contains(&code),
            "{auth:?}: {body}"
        );
    }
    let found: Vec<Order> = ws
        .request(
            "private/get_order_state_by_label",
            json!({"currency": "BTC", "label": "h-2"}),
        )
        .await
        .result()
        .unwrap();
    assert!(found.is_empty(), "a refused request placed nothing");

    // An access token from public/auth over HTTP, then a JSON-RPC POST.
    let (status, auth) = get(
        "/api/v2/public/auth?grant_type=client_credentials&client_id=keel-exec&client_secret=s3cret"
            .into(),
        None,
    )
    .await;
    assert_eq!(status, 200, "{auth}");
    let token = auth["result"]["access_token"].as_str().unwrap().to_owned();
    let request = json!({"jsonrpc": "2.0", "id": 7, "method": "private/cancel_by_label",
                         "params": {"label": "h-1"}});
    let response = http
        .post(format!("{}/api/v2/private/cancel_by_label", sim.http_url()))
        .header("Authorization", format!("Bearer {token}"))
        .header("content-type", "application/json")
        .body(request.to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 200);
    let body: Value = serde_json::from_str(&response.text().await.unwrap()).unwrap();
    assert_eq!(body["id"], 7);
    assert_eq!(body["result"], 1, "one order cancelled: {body}");

    // A signed POST covers its body.
    let body_text = json!({"jsonrpc": "2.0", "id": 8, "method": "private/get_positions",
                           "params": {"currency": "BTC"}})
    .to_string();
    let path = "/api/v2/private/get_positions";
    for (signed_over, expected) in [(body_text.clone(), 200), ("{}".to_owned(), 400)] {
        let response = http
            .post(format!("{}{path}", sim.http_url()))
            .header(
                "Authorization",
                hmac_header("s3cret", "POST", path, &signed_over, now()),
            )
            .header("content-type", "application/json")
            .body(body_text.clone())
            .send()
            .await
            .unwrap();
        assert_eq!(response.status().as_u16(), expected);
    }
}

/// Order entry over HTTP spends the matching engine's budget as it does over
/// the WebSocket: past the burst an order or a cancel is refused with 10028
/// (status 429) and places nothing, while other private calls still pass;
/// the budget refills at its rate.
#[tokio::test]
async fn order_entry_over_http_keeps_to_the_matching_engines_budget() {
    let mut cfg = config(0.0);
    cfg.rate_limits.enabled = true;
    cfg.rate_limits.matching_burst = 3;
    cfg.rate_limits.matching_rate = 2;
    let sim = sim::start(cfg).await.unwrap();
    let mut ws = trader(&sim).await;
    let (bid, _) = best(&mut ws, BTC).await;
    let price = bid - 1000.0;
    let http = reqwest::Client::new();
    let get = |path: String| {
        let request = http.get(format!("{}{path}", sim.http_url()));
        async move {
            let response = request.send().await.unwrap();
            let status = response.status().as_u16();
            let text = response.text().await.unwrap();
            (status, serde_json::from_str::<Value>(&text).unwrap())
        }
    };
    let (status, auth) = get(
        "/api/v2/public/auth?grant_type=client_credentials&client_id=keel-exec&client_secret=s3cret"
            .into(),
    )
    .await;
    assert_eq!(status, 200, "{auth}");
    let token = auth["result"]["access_token"].as_str().unwrap().to_owned();
    let private = |method: &str, query: String| {
        let request = http
            .get(format!(
                "{}/api/v2/private/{method}?{query}",
                sim.http_url()
            ))
            .header("Authorization", format!("Bearer {token}"));
        async move {
            let response = request.send().await.unwrap();
            let status = response.status().as_u16();
            let text = response.text().await.unwrap();
            (status, serde_json::from_str::<Value>(&text).unwrap())
        }
    };
    let order = |label: &str| {
        format!("instrument_name={BTC}&amount=10&type=limit&price={price}&label={label}")
    };

    for n in 0..3 {
        let (status, body) = private("buy", order(&format!("m-{n}"))).await;
        assert_eq!(status, 200, "order {n} within the burst: {body}");
    }
    let (status, body) = private("buy", order("m-over")).await;
    assert_eq!(status, 429, "past the burst: {body}");
    assert_eq!(body["error"]["code"], codes::TOO_MANY_REQUESTS);
    let (status, body) = private("cancel_by_label", "label=m-0".into()).await;
    assert_eq!(status, 429, "a cancel spends the same budget: {body}");
    // Not order entry: the matching engine's budget does not apply.
    let (status, body) = private("get_positions", "currency=BTC".into()).await;
    assert_eq!(status, 200, "{body}");
    let refused: Vec<Order> = ws
        .request(
            "private/get_order_state_by_label",
            json!({"currency": "BTC", "label": "m-over"}),
        )
        .await
        .result()
        .unwrap();
    assert!(refused.is_empty(), "a refused order is not placed");

    // At 2 a second, a request is allowed again within a second.
    common::eventually_some("the matching budget refilled", 5 * SECOND, || async {
        let (status, body) = private("buy", order("m-later")).await;
        assert!([200, 429].contains(&status), "{body}");
        (status == 200).then_some(())
    })
    .await;
}

/// At the trading day's end (Deribit: 08:00 UTC, here set two seconds ahead)
/// resting `good_til_day` orders are cancelled, with cancel_reason
/// `settlement`, and notified; good-til-cancelled ones rest on.
#[tokio::test]
async fn good_til_day_orders_are_cancelled_at_the_days_end() {
    let day_ms = 86_400_000;
    let now = to_ms(std::time::SystemTime::now());
    let end = (now % day_ms + 2_000) % day_ms;
    let sim = sim::start(SimConfig {
        day_end: Duration::from_millis(end),
        ..config(0.0)
    })
    .await
    .unwrap();
    let mut ws = trader(&sim).await;
    let (bid, _) = best(&mut ws, BTC).await;
    let subscribed = ws
        .request(
            "private/subscribe",
            json!({"channels": ["user.orders.any.any.raw"]}),
        )
        .await;
    assert!(subscribed.outcome.is_ok());
    let place = |label: &'static str, tif: &'static str| {
        json!({"instrument_name": BTC, "amount": 10, "price": bid - 1000.0,
               "label": label, "time_in_force": tif})
    };
    let day: Value = buy(&mut ws, place("day-1", "good_til_day"))
        .await
        .result()
        .unwrap();
    assert_eq!(day["order"]["order_state"], "open");
    let gtc: Value = buy(&mut ws, place("gtc-1", "good_til_cancelled"))
        .await
        .result()
        .unwrap();
    assert_eq!(gtc["order"]["order_state"], "open");

    let deadline = tokio::time::Instant::now() + 30 * SECOND;
    let cancelled = loop {
        let text = ws
            .next_on(
                "user.orders.any.any.raw",
                deadline - tokio::time::Instant::now(),
            )
            .await
            .expect("a notification of the day's end within 30 s");
        let order: Order = serde_json::from_str(&text).unwrap();
        if order.label == "day-1" && order.order_state == OrderState::Cancelled {
            break order;
        }
    };
    assert_eq!(cancelled.cancel_reason.as_deref(), Some("settlement"));
    let open: Vec<Order> = ws
        .request(
            "private/get_open_orders_by_instrument",
            json!({"instrument_name": BTC}),
        )
        .await
        .result()
        .unwrap();
    let labels: Vec<&str> = open.iter().map(|o| o.label.as_str()).collect();
    assert_eq!(labels, ["gtc-1"]);
}
