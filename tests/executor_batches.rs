//! The executor's batches, in a binary of their own (their load beside the
//! shutdown test's time bounds made it flaky): intents waiting together are
//! handled in the order written, and an order refused for now on every send
//! expires.

mod common;

use common::db::TestDb;
use common::executor::*;
use common::redis::TestPrefix;
use common::{daemon, eventually_some};
use keel::Runtime;
use keel_deribit::codes;
use keel_deribit::sim::Fault;

/// Intents waiting when the executor starts come in as one batch, whose new
/// orders are recorded in one commit: each is still handled in the order
/// written (a cancel or an amend finds the order placed before it in the same
/// batch, and waits for its acknowledgement, a label used twice is one
/// order, a refusal is one), and each
/// order's history reads `pending`, `sent`, then what the exchange said.
#[tokio::test]
async fn a_burst_of_intents_is_handled_in_the_order_written() {
    let sim = daemon::sim(0.0).await;
    let db = TestDb::create().await;
    let prefix = TestPrefix::new();
    let config = executor_only(daemon::config(&db, &prefix, Some(&sim)), &sim);
    let mut ws = exchange(&sim).await;
    let low = best(&mut ws).await.0 - 1000.0;
    let mut conn = prefix.connection();
    let intents = format!("{}orders:intents", prefix.prefix);
    let gtc = "good_til_cancelled";
    xadd(&mut conn, &intents, &place("b-1", "buy", 10.0, low, gtc));
    xadd(&mut conn, &intents, &place("b-2", "buy", 10.0, low, gtc));
    xadd(
        &mut conn,
        &intents,
        &[("action", "cancel".into()), ("label", "b-1".into())],
    );
    xadd(&mut conn, &intents, &place("b-2", "buy", 20.0, low, gtc));
    xadd(&mut conn, &intents, &place("b-3", "buy", 5000.0, low, gtc));
    xadd(
        &mut conn,
        &intents,
        &[
            ("action", "amend".into()),
            ("label", "b-2".into()),
            ("price", (low - 10.0).to_string()),
            ("amount", "10".into()),
        ],
    );
    xadd(&mut conn, &intents, &place("b-4", "buy", 10.0, low, gtc));
    let client = db.client().await;
    let handle = Runtime::from_config(&config).start().await.unwrap();
    let labels = ["b-1", "b-2", "b-3", "b-4"];
    eventually_some("the burst handled", WAIT, || async {
        let orders = stored(&client).await;
        let states: Vec<&str> = labels
            .iter()
            .map(|l| orders.get(*l).map_or("-", |(s, _)| s.as_str()))
            .collect();
        (states == ["cancelled", "open", "rejected", "open"]).then_some(())
    })
    .await;
    let ledger = sim.ledger();
    for label in ["b-1", "b-2", "b-4"] {
        assert_eq!(
            ledger.orders.get(label).map(Vec::len),
            Some(1),
            "{label}: one order on the exchange"
        );
    }
    assert!(
        !ledger.orders.contains_key("b-3"),
        "a refused order was sent"
    );
    // The amend came before the exchange acknowledged b-2: held, and sent
    // once it was (the duplicate's amount never applied).
    eventually_some("b-2 amended on the exchange", WAIT, || async {
        let b2 = sim.ledger().orders.get("b-2")?.first()?.clone();
        ((b2.amount, b2.price.value()) == (10.0, Some(low - 10.0))).then_some(())
    })
    .await;
    let refused = events(&mut conn, &prefix).into_iter().any(|e| {
        e.get("event").map(String::as_str) == Some("amend_rejected")
            && e.get("label").map(String::as_str) == Some("b-2")
    });
    assert!(!refused, "the amend of b-2 was refused");
    let duplicates = events(&mut conn, &prefix)
        .into_iter()
        .filter(|e| {
            e.get("event").map(String::as_str) == Some("duplicate")
                && e.get("label").map(String::as_str) == Some("b-2")
        })
        .count();
    assert_eq!(duplicates, 1, "the strategy hears of its label used twice");
    let reason: String = client
        .query_one("SELECT reason FROM orders WHERE label = 'b-3'", &[])
        .await
        .unwrap()
        .get(0);
    assert!(reason.contains("max_amount"), "{reason}");
    for label in ["b-1", "b-4"] {
        let history: Vec<String> = client
            .query(
                "SELECT state FROM order_history WHERE label = $1 ORDER BY recorded_at",
                &[&label],
            )
            .await
            .unwrap()
            .iter()
            .map(|r| r.get(0))
            .collect();
        assert_eq!(
            history[..3],
            ["pending", "sent", "open"],
            "{label}: {history:?}"
        );
    }
    // Every intent is acknowledged (in batches, so after a while).
    eventually_some("every intent acknowledged", WAIT, || async {
        // The summary form: [count, first id, last id, consumers].
        let pending: Vec<redis::Value> = redis::cmd("XPENDING")
            .arg(&intents)
            .arg("executor")
            .query(&mut prefix.connection())
            .ok()?;
        (pending.first() == Some(&redis::Value::Int(0))).then_some(())
    })
    .await;
    handle.shutdown().await;
}

/// An order the exchange refuses for now (10047) on every send never
/// reached the book: after `max_sends` it is `expired`, with the last code,
/// not `rejected`.
#[tokio::test]
async fn an_order_refused_for_now_on_every_send_expires() {
    let sim = daemon::sim(0.0).await;
    let db = TestDb::create().await;
    let prefix = TestPrefix::new();
    let config = executor_only(daemon::config(&db, &prefix, Some(&sim)), &sim);
    let max_sends = config.executor.max_sends;
    let mut ws = exchange(&sim).await;
    let low = best(&mut ws).await.0 - 1000.0;
    let mut conn = prefix.connection();
    let intents = format!("{}orders:intents", prefix.prefix);
    let client = db.client().await;
    let handle = Runtime::from_config(&config).start().await.unwrap();
    sim.inject(&Fault::RejectOrders {
        code: codes::MATCHING_ENGINE_QUEUE_FULL,
        count: 1000,
    })
    .unwrap();
    xadd(
        &mut conn,
        &intents,
        &place("e-1", "buy", 10.0, low, "good_til_cancelled"),
    );
    let row = eventually_some("e-1 ended", WAIT, || async {
        let row = client
            .query_opt(
                "SELECT state, reject_code, sends, reason FROM orders WHERE label = 'e-1'",
                &[],
            )
            .await
            .ok()??;
        let state: String = row.get(0);
        rank_terminal(&state).then_some(row)
    })
    .await;
    assert_eq!(row.get::<_, String>(0), "expired");
    assert_eq!(
        row.get::<_, Option<i64>>(1),
        Some(codes::MATCHING_ENGINE_QUEUE_FULL)
    );
    assert_eq!(row.get::<_, i32>(2), i32::try_from(max_sends).unwrap());
    assert!(!sim.ledger().orders.contains_key("e-1"));
    handle.shutdown().await;
}
