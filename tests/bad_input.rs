//! Bad input never stops the pipeline: poison stream entries, entries delivered
//! too often, and an exchange that sends what it should not.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::db::TestDb;
use common::redis::TestPrefix;
use common::{daemon, eventually, eventually_some};
use futures::{SinkExt, StreamExt};
use keel::{tree, Runtime, RuntimeHandle};
use keel_actors::resource::redis::{Fields, RedisClient};
use keel_actors::service::streams;
use keel_deribit::model::PublicTrade;
use serde_json::{json, Value};
use tokio::net::TcpListener;
use tokio_tungstenite::tungstenite::Message;

const WAIT: Duration = Duration::from_secs(20);

/// An `XRANGE` reply entry: id and field/value pairs.
type RangeEntry = (String, Vec<(String, Vec<u8>)>);

fn detail(handle: &RuntimeHandle, actor: &str, key: &str) -> Option<Value> {
    handle.tree().actor(actor)?.details.get(key).cloned()
}

fn now_ms() -> u64 {
    keel_deribit::model::to_ms(std::time::SystemTime::now())
}

fn trade(instrument: &str, seq: i64) -> PublicTrade {
    PublicTrade {
        trade_id: format!("{instrument}-{seq}"),
        ..PublicTrade::buy(instrument, seq, now_ms(), 100.0, 1.0)
    }
}

fn dead_letters(prefix: &TestPrefix) -> Vec<RangeEntry> {
    redis::cmd("XRANGE")
        .arg(format!("{}{}", prefix.prefix, streams::DEAD_LETTER_STREAM))
        .arg("-")
        .arg("+")
        .query(&mut prefix.connection())
        .unwrap()
}

fn field(entry: &RangeEntry, name: &str) -> Option<String> {
    entry
        .1
        .iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| String::from_utf8_lossy(v).into_owned())
}

/// `XPENDING key group`: count, smallest id, greatest id, per-consumer counts.
type PendingSummary = (
    u64,
    Option<String>,
    Option<String>,
    Option<Vec<(String, String)>>,
);

fn pending(prefix: &TestPrefix, group: &str) -> u64 {
    let summary: PendingSummary = redis::cmd("XPENDING")
        .arg(format!("{}trades:BTC-PERPETUAL", prefix.prefix))
        .arg(group)
        .query(&mut prefix.connection())
        .unwrap();
    summary.0
}

async fn stored(db: &TestDb) -> i64 {
    db.client()
        .await
        .query_one("SELECT count(*) FROM trades", &[])
        .await
        .map(|r| r.get(0))
        .unwrap_or(0)
}

/// Waits until exactly `rows` trades are stored.
async fn until_stored(db: &TestDb, rows: i64) {
    eventually_some("good rows stored", WAIT, || async {
        (stored(db).await == rows).then_some(())
    })
    .await;
}

/// The sum of the stored trades' `trade_seq`: which trades were stored.
async fn seq_sum(db: &TestDb) -> i64 {
    db.client()
        .await
        .query_one("SELECT sum(trade_seq)::bigint FROM trades", &[])
        .await
        .unwrap()
        .get(0)
}

#[tokio::test]
async fn poison_entries_are_dead_lettered_with_their_reason_and_the_rest_of_the_batch_is_stored() {
    let db = TestDb::create().await;
    let prefix = TestPrefix::new();
    let mut config = daemon::config(&db, &prefix, None);
    config.receiver.enabled = false;
    config.schedule.enabled = false;
    let handle = Runtime::from_config(&config).start().await.unwrap();
    let redis = RedisClient::new(handle.registry().clone(), tree::REDIS);

    // Both kinds from the issue, between good trades, in one batch: a time
    // PostgreSQL cannot store (22008) and a NUL byte in a text field.
    let mut far_future = trade("BTC-PERPETUAL", 2);
    far_future.timestamp = 9_999_999_999_999_999;
    let mut nul = trade("BTC-PERPETUAL", 4);
    nul.trade_id = "bad\0id".into();
    let entries: Vec<Fields> = [
        trade("BTC-PERPETUAL", 1),
        far_future,
        trade("BTC-PERPETUAL", 3),
        nul,
        trade("BTC-PERPETUAL", 5),
    ]
    .iter()
    .map(|t| streams::encode(t).unwrap())
    .collect();
    redis
        .xadd_bulk(&streams::trade_stream("BTC-PERPETUAL"), Arc::from(entries))
        .await
        .unwrap();

    until_stored(&db, 3).await;
    // Each consumer dead-letters both, so four entries in all.
    eventually("both consumers dead-lettered both", WAIT, || {
        dead_letters(&prefix).len() == 4
            && pending(&prefix, "distributor") == 0
            && pending(&prefix, "analyzer") == 0
    })
    .await;
    let dead = dead_letters(&prefix);
    let reasons: Vec<String> = dead.iter().filter_map(|e| field(e, "reason")).collect();
    assert_eq!(
        reasons
            .iter()
            .filter(|r| r.contains("SQLSTATE 22008"))
            .count(),
        2,
        "{reasons:?}"
    );
    assert_eq!(
        reasons.iter().filter(|r| r.contains("bad_text")).count(),
        2,
        "{reasons:?}"
    );
    let mut groups: Vec<String> = dead.iter().filter_map(|e| field(e, "group")).collect();
    groups.sort();
    assert_eq!(
        groups,
        ["analyzer", "analyzer", "distributor", "distributor"]
    );
    assert_eq!(seq_sum(&db).await, 1 + 3 + 5);
    for actor in [tree::DISTRIBUTOR, tree::ANALYZER] {
        assert_eq!(handle.tree().actor(actor).unwrap().restarts, 0, "{actor}");
    }
    assert!(!handle.has_ended());
    handle.shutdown().await;
}

/// Entries packing several trades (what the receiver writes): a bad trade in
/// one is dead-lettered alone, as a `t` entry of its own text with its place
/// in the entry, and the trades around it are stored.
#[tokio::test]
async fn a_bad_trade_in_a_packed_entry_is_dead_lettered_alone() {
    let db = TestDb::create().await;
    let prefix = TestPrefix::new();
    let mut config = daemon::config(&db, &prefix, None);
    config.receiver.enabled = false;
    config.schedule.enabled = false;
    let handle = Runtime::from_config(&config).start().await.unwrap();
    let redis = RedisClient::new(handle.registry().clone(), tree::REDIS);

    let text = |t: &keel_deribit::model::PublicTrade| serde_json::to_string(t).unwrap();
    let mut far_future = trade("BTC-PERPETUAL", 2);
    far_future.timestamp = 9_999_999_999_999_999;
    let mut sideways = trade("BTC-PERPETUAL", 4);
    sideways.direction = "sideways".into();
    let first = [
        text(&trade("BTC-PERPETUAL", 1)),
        text(&far_future),
        text(&trade("BTC-PERPETUAL", 3)),
        text(&sideways),
        r#"{"not":"a trade"}"#.to_owned(),
    ];
    let second = [
        text(&trade("BTC-PERPETUAL", 5)),
        text(&trade("BTC-PERPETUAL", 6)),
    ];
    let entries = vec![
        streams::encode_texts(&first),
        streams::encode_texts(&second),
    ];
    let ids = redis
        .xadd_bulk(&streams::trade_stream("BTC-PERPETUAL"), Arc::from(entries))
        .await
        .unwrap();

    until_stored(&db, 4).await;
    let mine = |group: &str| -> Vec<_> {
        dead_letters(&prefix)
            .into_iter()
            .filter(|e| field(e, "group").as_deref() == Some(group))
            .collect()
    };
    eventually("the distributor dead-lettered three trades", WAIT, || {
        mine("distributor").len() == 3
            && pending(&prefix, "distributor") == 0
            && pending(&prefix, "analyzer") == 0
    })
    .await;
    let mut dead: Vec<(String, String, String)> = mine("distributor")
        .iter()
        .map(|e| {
            (
                field(e, "index").unwrap_or_default(),
                field(e, "t").unwrap_or_default(),
                field(e, "id").unwrap_or_default(),
            )
        })
        .collect();
    dead.sort();
    let expected: Vec<(String, String, String)> = [1, 3, 4]
        .into_iter()
        .map(|i| (i.to_string(), first[i].clone(), ids[0].clone()))
        .collect();
    assert_eq!(dead, expected);
    let reasons: Vec<String> = mine("distributor")
        .iter()
        .filter_map(|e| field(e, "reason"))
        .collect();
    assert!(
        reasons.iter().any(|r| r.contains("SQLSTATE 22008")),
        "{reasons:?}"
    );
    assert!(
        reasons.iter().any(|r| r.contains("bad_direction")),
        "{reasons:?}"
    );
    assert_eq!(seq_sum(&db).await, 1 + 3 + 5 + 6);
    for actor in [tree::DISTRIBUTOR, tree::ANALYZER] {
        assert_eq!(handle.tree().actor(actor).unwrap().restarts, 0, "{actor}");
    }
    handle.shutdown().await;
}

#[tokio::test]
async fn max_deliveries_counts_the_deliveries_redis_recorded() {
    let db = TestDb::create().await;
    let prefix = TestPrefix::new();
    let stream = format!("{}trades:BTC-PERPETUAL", prefix.prefix);
    let mut conn = prefix.connection();
    // An entry this consumer already had delivered ten times (as after ten
    // crashes), left pending to it.
    let fields = streams::encode(&trade("BTC-PERPETUAL", 1)).unwrap();
    let mut add = redis::cmd("XADD");
    add.arg(&stream).arg("*");
    for (k, v) in &fields {
        add.arg(k).arg(v.as_slice());
    }
    let id: String = add.query(&mut conn).unwrap();
    let _: () = redis::cmd("XGROUP")
        .arg("CREATE")
        .arg(&stream)
        .arg("distributor")
        .arg("0")
        .query(&mut conn)
        .unwrap();
    let _: redis::Value = redis::cmd("XREADGROUP")
        .arg("GROUP")
        .arg("distributor")
        .arg("crashy")
        .arg("STREAMS")
        .arg(&stream)
        .arg(">")
        .query(&mut conn)
        .unwrap();
    let _: redis::Value = redis::cmd("XCLAIM")
        .arg(&stream)
        .arg("distributor")
        .arg("crashy")
        .arg(0)
        .arg(&id)
        .arg("RETRYCOUNT")
        .arg(10)
        .query(&mut conn)
        .unwrap();

    let mut config = daemon::config(&db, &prefix, None);
    config.receiver.enabled = false;
    config.analyzer.enabled = false;
    config.schedule.enabled = false;
    config.distributor.consumer = "crashy".into();
    let handle = Runtime::from_config(&config).start().await.unwrap();
    eventually("dead-lettered for its deliveries", WAIT, || {
        dead_letters(&prefix).len() == 1 && pending(&prefix, "distributor") == 0
    })
    .await;
    let dead = dead_letters(&prefix);
    let reason = field(&dead[0], "reason").unwrap_or_default();
    assert!(reason.starts_with("delivered 1"), "{reason}");
    assert_eq!(stored(&db).await, 0);
    handle.shutdown().await;
}

/// A WebSocket "exchange" that accepts Keel's requests and then sends what a
/// broken or hostile upstream might: trades for instruments nobody asked for,
/// absurd sequence numbers, another instrument's trade on this channel, bad
/// numbers and times, binary frames and unknown channels, then good trades.
async fn hostile_exchange(good: u64) -> (String, tokio::task::JoinHandle<()>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("ws://{}/ws/api/v2", listener.local_addr().unwrap());
    let task = tokio::spawn(async move {
        let Ok((socket, _)) = listener.accept().await else {
            return;
        };
        let Ok(mut ws) = tokio_tungstenite::accept_async(socket).await else {
            return;
        };
        let note = |channel: &str, data: Value| {
            Message::Text(
                json!({"jsonrpc": "2.0", "method": "subscription",
                       "params": {"channel": channel, "data": data}})
                .to_string()
                .into(),
            )
        };
        let own = "trades.BTC-PERPETUAL.100ms";
        let trades = |list: Vec<PublicTrade>| serde_json::to_value(list).unwrap();
        let mut subscribed = false;
        let mut beat = tokio::time::interval(Duration::from_millis(300));
        loop {
            tokio::select! {
                _ = beat.tick() => {
                    let frame = json!({"jsonrpc": "2.0", "method": "heartbeat",
                                       "params": {"type": "heartbeat"}});
                    if ws.send(Message::Text(frame.to_string().into())).await.is_err() {
                        return;
                    }
                }
                frame = ws.next() => {
                    let Some(Ok(Message::Text(text))) = frame else { return };
                    let request: Value = serde_json::from_str(&text).unwrap_or_default();
                    let Some(id) = request.get("id").and_then(Value::as_u64) else { continue };
                    let result = match request["method"].as_str() {
                        Some("public/subscribe") => request["params"]["channels"].clone(),
                        _ => json!("ok"),
                    };
                    let answer = json!({"jsonrpc": "2.0", "id": id, "result": result,
                                        "usIn": 0, "usOut": 0, "usDiff": 0, "testnet": false});
                    let _ = ws.send(Message::Text(answer.to_string().into())).await;
                    if subscribed || request["method"] != "public/subscribe" {
                        continue;
                    }
                    subscribed = true;
                    let mut bad = Vec::new();
                    // 300 instruments Keel never subscribed to, on their own channels.
                    for i in 0..300 {
                        let name = format!("FAKE{i}-PERPETUAL");
                        bad.push(note(&format!("trades.{name}.100ms"), trades(vec![trade(&name, 1)])));
                    }
                    let seq = |s: i64| trade("BTC-PERPETUAL", s);
                    let mut eth = trade("ETH-PERPETUAL", 1);
                    eth.price = 3000.0;
                    let mut negative = seq(3);
                    negative.price = -5.0;
                    let mut forever = seq(3);
                    forever.timestamp = u64::MAX;
                    let mut ancient = seq(3);
                    ancient.timestamp = 1;
                    let mut sideways = seq(3);
                    sideways.direction = "sideways".into();
                    let mut nul = seq(3);
                    nul.trade_id = "x\0y".into();
                    bad.push(note(own, trades(vec![seq(1), seq(2)])));
                    bad.push(note(own, trades(vec![seq(9_000_000_000_000_000_000)])));
                    bad.push(note(own, trades(vec![seq(2_000_000)])));
                    bad.push(note(own, trades(vec![eth])));
                    bad.push(note(own, trades(vec![negative, forever, ancient, sideways, nul])));
                    bad.push(Message::Binary(vec![0u8, 159, 146, 150].into()));
                    bad.push(note("weird.channel.nobody.asked.for", json!({"x": 1})));
                    bad.push(Message::Text("{not json".into()));
                    // Then the trades that should be stored, continuing from 2.
                    let rest: Vec<PublicTrade> = (3..3 + good as i64).map(seq).collect();
                    bad.push(note(own, trades(rest)));
                    for frame in bad {
                        if ws.send(frame).await.is_err() {
                            return;
                        }
                    }
                }
            }
        }
    });
    (url, task)
}

#[tokio::test]
async fn an_exchange_sending_what_it_should_not_is_turned_away_at_the_edge_and_counted() {
    let db = TestDb::create().await;
    let prefix = TestPrefix::new();
    let (url, exchange) = hostile_exchange(20).await;
    let mut config = daemon::config(&db, &prefix, None);
    config.receiver.url = url;
    config.receiver.instruments = vec!["BTC-PERPETUAL".into(), "ETH-PERPETUAL".into()];
    config.schedule.enabled = false;
    let handle = Runtime::from_config(&config).start().await.unwrap();

    // The good trades of the stream arrive: 1, 2 and 3..=22.
    let deadline = tokio::time::Instant::now() + WAIT;
    while stored(&db).await != 22 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "good trades not stored: {}; receiver {:?}",
            stored(&db).await,
            handle
                .tree()
                .actor(tree::RECEIVER)
                .map(|a| a.details.clone())
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let rejected = detail(&handle, tree::RECEIVER, "rejected").unwrap();
    let expected = [
        ("unsubscribed", 300),
        ("wrong_channel", 1),
        ("seq_out_of_range", 1),
        ("seq_jump", 1),
        ("wrong_sign", 1),
        ("time_out_of_window", 2),
        ("bad_direction", 1),
        ("bad_text", 1),
    ];
    for (reason, count) in expected {
        assert_eq!(rejected[reason], count, "{reason}: {rejected}");
    }
    let sample = detail(&handle, tree::RECEIVER, "rejected_sample").unwrap();
    assert_eq!(sample.as_array().map(Vec::len), Some(20), "bounded sample");
    let counters = detail(&handle, tree::RECEIVER, "receiver").unwrap();
    assert_eq!(counters["binary_frames"], 1, "{counters}");
    assert_eq!(counters["unknown_channels"], 1, "{counters}");
    assert_eq!(counters["malformed_frames"], 1, "{counters}");

    // Nothing rejected reached Redis: one trade stream, no streams for invented names.
    let keys: Vec<String> = redis::cmd("KEYS")
        .arg(format!("{}trades:*", prefix.prefix))
        .query(&mut prefix.connection())
        .unwrap();
    for key in &keys {
        assert!(
            [
                format!("{}trades:BTC-PERPETUAL", prefix.prefix),
                format!("{}trades:ETH-PERPETUAL", prefix.prefix)
            ]
            .contains(key),
            "{keys:?}"
        );
    }
    let client = db.client().await;
    let row = client
        .query_one(
            "SELECT min(trade_seq), max(trade_seq), min(price), count(DISTINCT instrument_name) FROM trades",
            &[],
        )
        .await
        .unwrap();
    assert_eq!(row.get::<_, i64>(0), 1);
    assert_eq!(
        row.get::<_, i64>(1),
        22,
        "the absurd sequence numbers froze nothing"
    );
    assert!(row.get::<_, f64>(2) > 0.0);
    assert_eq!(row.get::<_, i64>(3), 1);
    assert!(!handle.has_ended());
    handle.shutdown().await;
    exchange.abort();
}

/// An HTTP "exchange" whose history never moves forward: whatever is asked
/// for, it answers with trade 1 (and a trade of another instrument).
async fn stuck_history() -> (String, tokio::task::JoinHandle<()>) {
    use axum::extract::Query;
    use std::collections::HashMap;
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let app = axum::Router::new().route(
        "/api/v2/public/get_last_trades_by_instrument",
        axum::routing::get(|Query(q): Query<HashMap<String, String>>| async move {
            let trades = if q.get("sorting").map(String::as_str) == Some("desc") {
                vec![trade("BTC-PERPETUAL", 10)]
            } else {
                vec![trade("BTC-PERPETUAL", 1), trade("ETH-PERPETUAL", 7)]
            };
            axum::Json(json!({"jsonrpc": "2.0", "result": {"trades": trades, "has_more": true}}))
        }),
    );
    let task = tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    (url, task)
}

#[tokio::test]
async fn gap_repair_fails_instead_of_looping_on_a_history_that_does_not_move_forward() {
    let db = TestDb::create().await;
    let prefix = TestPrefix::new();
    let (url, exchange) = stuck_history().await;
    let mut config = daemon::config(&db, &prefix, None);
    config.backfill.http_url = url;
    config.receiver.enabled = false;
    config.distributor.enabled = false;
    config.analyzer.enabled = false;
    config.schedule.enabled = false;
    // Migrate, then store trades 1 and 10 of BTC-PERPETUAL: a hole of 2..=9.
    let setup = Runtime::from_config(&config).start().await.unwrap();
    let client = db.client().await;
    let deadline = tokio::time::Instant::now() + WAIT;
    while client
        .query_one("SELECT 'trades'::regclass::text", &[])
        .await
        .is_err()
    {
        assert!(tokio::time::Instant::now() < deadline, "never migrated");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    setup.shutdown().await;
    db.client()
        .await
        .batch_execute(
            "INSERT INTO trades (instrument_name, trade_seq, trade_id, ts, price, amount, \
             direction, tick_direction, mark_price, index_price) VALUES \
             ('BTC-PERPETUAL', 1, 'a', now(), 1, 1, 'buy', 0, 1, 1), \
             ('BTC-PERPETUAL', 10, 'b', now(), 1, 1, 'buy', 0, 1, 1)",
        )
        .await
        .unwrap();

    match common::conservation::repair(&config, WAIT).await {
        keel::TaskOutcome::Failed(reason) => {
            assert!(reason.contains("does not move forward"), "{reason}")
        }
        other => panic!("{other:?}"),
    }
    // Nothing of the other instrument, nothing outside the gap was stored.
    let count: i64 = db
        .client()
        .await
        .query_one("SELECT count(*) FROM trades", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(count, 2);
    exchange.abort();
}
