//! Round trips of Deribit's documented message samples (`fixtures/`, modelled on
//! the examples in Deribit's API documentation) through Keel's types, and bad
//! frames that must be errors, never panics.

use serde::de::DeserializeOwned;
use serde::Serialize;

use super::model::*;
use super::*;

fn subscription(text: &str) -> (String, String) {
    match parse_server_frame(text) {
        Ok(ServerFrame::Subscription { channel, data }) => (channel, data.get().to_owned()),
        other => panic!("expected a subscription, got {other:?}"),
    }
}

/// Decodes, re-encodes and decodes again: nothing is lost or invented.
fn round_trip<T: DeserializeOwned + Serialize + PartialEq + std::fmt::Debug>(json: &str) -> T {
    let first: T = serde_json::from_str(json).unwrap_or_else(|e| panic!("{e}: {json}"));
    let again: T = serde_json::from_str(&serde_json::to_string(&first).unwrap()).unwrap();
    assert_eq!(first, again);
    first
}

fn response(text: &str) -> Response {
    match parse_server_frame(text) {
        Ok(ServerFrame::Response(r)) => r,
        other => panic!("expected a response, got {other:?}"),
    }
}

#[test]
fn trades_notification() {
    let (channel, data) = subscription(include_str!("fixtures/trades_notification.json"));
    assert_eq!(
        channel.parse::<Channel>().unwrap().instrument(),
        "BTC-PERPETUAL"
    );
    let trades: Vec<PublicTrade> = round_trip(&data);
    assert_eq!(trades[0].trade_seq, 30_289_442);
    let stored = trades[0].to_trade().unwrap();
    assert_eq!(stored.direction, keel_market::Direction::Sell);
    assert_eq!(to_ms(stored.timestamp), 1_590_484_255_886);
}

#[test]
fn book_snapshot_then_change() {
    let (_, snapshot) = subscription(include_str!("fixtures/book_snapshot.json"));
    let (_, change) = subscription(include_str!("fixtures/book_change.json"));
    let snapshot: BookUpdate = round_trip(&snapshot);
    let change: BookUpdate = round_trip(&change);
    assert!(snapshot.is_snapshot() && !change.is_snapshot());
    assert_eq!(snapshot.prev_change_id, None);
    assert_eq!(
        change.prev_change_id,
        Some(snapshot.change_id),
        "the change continues the snapshot"
    );
    assert_eq!(change.bids[0], ("delete".to_owned(), 5042.64, 0.0));
}

#[test]
fn grouped_book_ticker_chart_and_quote() {
    let (_, grouped) = subscription(include_str!("fixtures/book_grouped.json"));
    assert_eq!(round_trip::<BookGrouped>(&grouped).bids, [(160.0, 40.0)]);
    let (_, ticker) = subscription(include_str!("fixtures/ticker_notification.json"));
    let ticker: Ticker = serde_json::from_str(&ticker).unwrap();
    assert_eq!(ticker.best_ask_price, 36443.0);
    assert_eq!(ticker.stats.high, Some(36824.5));
    let (_, bar) = subscription(include_str!("fixtures/chart_notification.json"));
    assert_eq!(round_trip::<ChartBar>(&bar).tick, 1_573_645_080_000);
    let (_, quote) = subscription(include_str!("fixtures/quote_notification.json"));
    assert_eq!(round_trip::<Quote>(&quote).best_bid_amount, 40.0);
}

#[test]
fn heartbeats() {
    assert!(matches!(
        parse_server_frame(include_str!("fixtures/test_request.json")),
        Ok(ServerFrame::TestRequest)
    ));
    assert!(matches!(
        parse_server_frame(include_str!("fixtures/heartbeat.json")),
        Ok(ServerFrame::Heartbeat)
    ));
}

#[test]
fn responses_with_results_and_errors() {
    let auth = response(include_str!("fixtures/auth_response.json"));
    assert_eq!(auth.id, serde_json::json!(9929));
    let timing = auth.timing.unwrap();
    assert_eq!(timing.us_diff, 12_000);
    assert!(!timing.testnet);
    let tokens: AuthResult = auth.result().unwrap();
    assert_eq!(tokens.token_type, "bearer");

    let error = response(include_str!("fixtures/error_response.json"));
    let err = error.outcome.clone().unwrap_err();
    assert_eq!(
        (err.code, err.message.as_str()),
        (codes::INVALID_TOKEN, "unauthorized")
    );

    let page: TradesPage = response(include_str!("fixtures/last_trades_response.json"))
        .result()
        .unwrap();
    assert!(page.has_more);
    assert_eq!(page.trades[1].liquidation.as_deref(), Some("T"));

    let chart: TradingViewChart = response(include_str!("fixtures/chart_data_response.json"))
        .result()
        .unwrap();
    assert_eq!(chart.ticks.len(), chart.close.len());

    let list: Vec<InstrumentInfo> = response(include_str!("fixtures/instruments_response.json"))
        .result()
        .unwrap();
    assert_eq!(list[1].option_type.as_deref(), Some("call"));
    assert_eq!(list[1].to_instrument().strike, Some(42_000.0));
}

#[test]
fn a_response_survives_its_own_encoding() {
    let original = response(include_str!("fixtures/auth_response.json"));
    let again = response(&original.to_json());
    assert_eq!(again.id, original.id);
    assert_eq!(again.timing, original.timing);
    assert_eq!(
        again.result::<AuthResult>().unwrap(),
        original.result::<AuthResult>().unwrap()
    );
}

#[test]
fn bad_frames_are_typed_errors() {
    for frame in [
        "",
        "not json",
        "{\"jsonrpc\":\"2.0\",\"method\":\"subscription\",\"params\":{\"channel\":",
        "[1,2,3]",
        "{\"jsonrpc\":\"2.0\"}",
        "{\"jsonrpc\":\"2.0\",\"id\":1}",
        "{\"jsonrpc\":\"2.0\",\"method\":\"subscription\",\"params\":{\"data\":[]}}",
        "{\"jsonrpc\":\"2.0\",\"method\":\"heartbeat\",\"params\":{\"type\":\"mystery\"}}",
        "{\"jsonrpc\":\"2.0\",\"method\":\"subscription\"}",
        "{\"id\":\"x\",\"result\":1,\"usIn\":\"soon\"}",
    ] {
        assert!(
            parse_server_frame(frame).is_err(),
            "{frame:?} should be rejected"
        );
    }
    // A well-formed envelope with a payload of the wrong types fails when typed.
    let (_, data) = subscription(
        "{\"jsonrpc\":\"2.0\",\"method\":\"subscription\",\"params\":{\"channel\":\"trades.X.raw\",\"data\":[{\"trade_seq\":\"seven\"}]}}",
    );
    assert!(serde_json::from_str::<Vec<PublicTrade>>(&data).is_err());
}

#[test]
fn requests_from_clients() {
    let r = parse_request(r#"{"jsonrpc":"2.0","id":"auth_1f3","method":"public/auth","params":{"grant_type":"client_credentials"}}"#).unwrap();
    assert_eq!(r.id, serde_json::json!("auth_1f3"));
    let (id, err) = parse_request(r#"{"jsonrpc":"2.0","method":"public/test"}"#).unwrap_err();
    assert_eq!(
        (id, err.code),
        (serde_json::Value::Null, codes::INVALID_REQUEST)
    );
    assert_eq!(
        parse_request("{oops").unwrap_err().1.code,
        codes::PARSE_ERROR
    );
    assert_eq!(
        parse_request(r#"{"id":1,"method":"public/test","params":[1]}"#)
            .unwrap_err()
            .1
            .code,
        codes::INVALID_PARAMS
    );
}

#[test]
fn a_stored_trade_refuses_what_the_database_cannot_hold() {
    let (_, data) = subscription(include_str!("fixtures/trades_notification.json"));
    let mut trade: PublicTrade = serde_json::from_str::<Vec<PublicTrade>>(&data)
        .unwrap()
        .remove(0);
    trade.direction = "sideways".into();
    assert!(trade.to_trade().is_err());
    trade.direction = "buy".into();
    trade.instrument_name = "BAD\0".into();
    assert!(trade.to_trade().is_err());
}

/// `decode_trades` reads the array in one pass: each trade's text is exactly
/// the element as written, whatever the whitespace around it, and every way the
/// array can be malformed is an error naming the channel.
#[test]
fn trades_are_decoded_in_one_pass_with_their_exact_texts() {
    let a = serde_json::to_string(&PublicTrade::buy(
        "BTC-PERPETUAL",
        7,
        1_700_000_000_000,
        50_000.5,
        10.0,
    ))
    .unwrap();
    let b = serde_json::to_string(&PublicTrade::buy(
        "BTC-PERPETUAL",
        8,
        1_700_000_000_001,
        50_001.0,
        20.0,
    ))
    .unwrap();
    let channel = "trades.BTC-PERPETUAL.100ms";
    for data in [
        format!("[{a},{b}]"),
        format!(" [ {a} ,\n\t{b} ] "),
        format!("[{a},\r\n{b}\n]"),
    ] {
        let trades = decode_trades(channel, &data).unwrap();
        let texts: Vec<&str> = trades.iter().map(|(_, text)| *text).collect();
        assert_eq!(texts, [a.as_str(), b.as_str()], "{data:?}");
        let seqs: Vec<i64> = trades.iter().map(|(t, _)| t.trade_seq).collect();
        assert_eq!(seqs, [7, 8]);
        for (trade, text) in &trades {
            assert_eq!(
                serde_json::from_str::<PublicTrade>(text).unwrap(),
                trade.to_public()
            );
        }
    }
    assert!(decode_trades(channel, "[]").unwrap().is_empty());
    assert!(decode_trades(channel, " [ ] ").unwrap().is_empty());
    for bad in [
        String::new(),
        "{}".to_owned(),
        "null".to_owned(),
        "[1]".to_owned(),
        format!("[{a}"),
        format!("[{a},"),
        format!("[{a},]"),
        format!("[{a} {b}]"),
        format!("[{a}]]"),
        format!("[{a}] x"),
        format!("[{a},{{\"trade_seq\":1}}]"),
    ] {
        let error = decode_trades(channel, &bad).expect_err(&bad);
        assert_eq!(error.channel, channel);
        assert!(!error.reason.is_empty());
    }
}

#[test]
fn one_pass_subscription_read() {
    let text = include_str!("fixtures/trades_notification.json");
    let (channel, data) = subscription(text);
    assert_eq!(
        parse_subscription(text, raw_data),
        Some((channel.as_str(), data.as_str()))
    );
    let (read_channel, trades) = parse_subscription(text, |_, rest| read_trades(rest)).unwrap();
    assert_eq!(read_channel, channel);
    assert_eq!(trades, decode_trades(&channel, &data).unwrap());
    // What it declines goes the general way: responses, heartbeats, escapes,
    // a notification with an id, duplicate fields, bad timing, the data before
    // the channel, trailing text.
    for declined in [
        include_str!("fixtures/auth_response.json"),
        include_str!("fixtures/heartbeat.json"),
        include_str!("fixtures/test_request.json"),
        r#"{"method":"subscription","params":{"channel":"trades.BTC\u002dPERPETUAL.raw","data":[]}}"#,
        r#"{"method":"subscr\u0069ption","params":{"channel":"c","data":[]}}"#,
        r#"{"method":"subscription","par\u0061ms":{"channel":"c","data":[]}}"#,
        r#"{"id":1,"method":"subscription","params":{"channel":"c","data":[]}}"#,
        r#"{"method":"subscription","params":{"channel":"c","data":[]},"result":1}"#,
        r#"{"method":"subscription","method":"subscription","params":{"channel":"c","data":[]}}"#,
        r#"{"method":"subscription","params":{"channel":"c","data":[],"data":[]}}"#,
        r#"{"method":"subscription","params":{"channel":"c","data":[]},"usIn":"soon"}"#,
        r#"{"method":"subscription","params":{"channel":"c","data":[]},"usIn":1,"usIn":2}"#,
        r#"{"method":"subscription","params":{"channel":"c"}}"#,
        r#"{"method":"subscription","params":{"data":[],"channel":"c"}}"#,
        r#"{"method":"subscription","params":{"channel":"c","data":[]}} x"#,
        r#"{"method":"subscription","params":{"channel":"c","data":[]},}"#,
        "{\"method\":\"subscription\",\"params\":{\"channel\":\"c\",\"data\":[]}\u{c}}",
        r#"{"method":"heartbeat","params":{"channel":"c","data":[]}}"#,
    ] {
        assert_eq!(parse_subscription(declined, raw_data), None, "{declined}");
    }
    // Whitespace anywhere JSON allows it, unknown fields skipped.
    let spaced = "\r\n { \"jsonrpc\" : \"2.0\" ,\t\"x\":{\"y\":[1,{}]}, \"params\" : { \"channel\" : \"c\" , \"data\" : [ ] , \"z\":null } , \"method\" : \"subscription\" , \"usIn\":1 } \n";
    assert_eq!(parse_subscription(spaced, raw_data), Some(("c", "[ ]")));
    // The reader declining sends the frame the general way too.
    let trades_text =
        r#"{"method":"subscription","params":{"channel":"c","data":{"not":"trades"}}}"#;
    assert!(parse_subscription(trades_text, |_, rest| read_trades(rest)).is_none());
    assert_eq!(
        parse_subscription(trades_text, raw_data),
        Some(("c", r#"{"not":"trades"}"#))
    );
}
