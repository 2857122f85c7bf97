//! The executor's batches, in a binary of their own (their load beside the
//! shutdown test's time bounds made it flaky): intents waiting together are
//! handled in the order written, an order refused for now on every send
//! expires, and no order is sent after its intent's `valid_until`.

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

/// A strategy bounds an order with `valid_until`: an intent whose bound
/// passed before it was taken (written while the executor was down) is
/// `expired` and never sent; one refused for now on every send stops being
/// sent once its bound passes; one with time to spare is placed.
#[tokio::test]
async fn an_order_is_not_sent_after_its_intents_valid_until() {
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
    let now = keel_deribit::model::to_ms(std::time::SystemTime::now());
    let with_bound = |label: &str, valid_until: u64| {
        let mut fields = place(label, "buy", 10.0, low, "good_til_cancelled");
        fields.push(("valid_until", valid_until.to_string()));
        fields
    };
    // Written with a bound of a second that passed before the executor ran.
    xadd(&mut conn, &intents, &with_bound("late-1", now - 500));
    xadd(&mut conn, &intents, &with_bound("spare-1", now + 120_000));
    let handle = Runtime::from_config(&config).start().await.unwrap();
    let row_of = |label: &'static str| {
        let client = &client;
        async move {
            let row = client
                .query_opt(
                    "SELECT state, reason, sends FROM orders WHERE label = $1",
                    &[&label],
                )
                .await
                .ok()??;
            Some((
                row.get::<_, String>(0),
                row.get::<_, Option<String>>(1),
                row.get::<_, i32>(2),
            ))
        }
    };
    eventually_some("spare-1 open", WAIT, || async {
        row_of("spare-1")
            .await
            .filter(|(s, _, _)| s == "open")
            .map(|_| ())
    })
    .await;
    let (state, reason, sends) = row_of("late-1").await.unwrap();
    assert_eq!(state, "expired");
    assert_eq!(
        reason.as_deref(),
        Some("its valid_until passed before it was sent")
    );
    assert_eq!(sends, 0);
    let expired: Vec<_> = events(&mut conn, &prefix)
        .into_iter()
        .filter(|e| e.get("label").map(String::as_str) == Some("late-1"))
        .collect();
    assert_eq!(expired.len(), 1, "{expired:?}");
    assert_eq!(expired[0].get("event").map(String::as_str), Some("expired"));

    // Refused for now on every send: resent with backoff until the bound
    // passes, not until max_sends.
    sim.inject(&Fault::RejectOrders {
        code: codes::MATCHING_ENGINE_QUEUE_FULL,
        count: 1000,
    })
    .unwrap();
    let now = keel_deribit::model::to_ms(std::time::SystemTime::now());
    xadd(&mut conn, &intents, &with_bound("late-2", now + 1_000));
    let (state, reason, sends) = eventually_some("late-2 ended", WAIT, || async {
        row_of("late-2").await.filter(|(s, _, _)| rank_terminal(s))
    })
    .await;
    assert_eq!(state, "expired");
    assert_eq!(
        reason.as_deref(),
        Some("its valid_until passed before it was sent")
    );
    assert!(
        (1..i32::try_from(max_sends).unwrap()).contains(&sends),
        "{sends} sends"
    );
    let ledger = sim.ledger();
    assert!(!ledger.orders.contains_key("late-1"));
    assert!(!ledger.orders.contains_key("late-2"));
    assert_eq!(ledger.orders.get("spare-1").map(Vec::len), Some(1));
    handle.shutdown().await;
}

/// A stop while the executor still reconciles (PostgreSQL down, so its
/// reconciliation rides the outage out) ends it at once: nothing of this
/// session is on the book to drain, and the shutdown must not wait for the
/// supervisor to kill it.
#[tokio::test]
async fn a_stop_while_reconciling_through_an_outage_drains_at_once() {
    use common::pg_cluster::PrivatePg;
    let mut pg = PrivatePg::start();
    pg.stop();
    let sim = daemon::sim(0.0).await;
    let prefix = TestPrefix::new();
    let mut config = keel::config::Config {
        postgres: keel_actors::resource::pg::PostgresConfig {
            url: pg.url(),
            ..Default::default()
        },
        redis: keel_actors::resource::redis::RedisConfig {
            key_prefix: prefix.prefix.clone(),
            ..Default::default()
        },
        ..keel::config::Config::default()
    };
    config.sim.in_daemon = false;
    let config = executor_only(config, &sim);
    let handle = Runtime::from_config(&config).start().await.unwrap();
    eventually_some("the executor reconciling", WAIT, || async {
        let tree = handle.tree();
        let session = tree
            .actor(keel::tree::EXECUTOR)?
            .details
            .get("session")?
            .clone();
        (session == "reconciling").then_some(())
    })
    .await;
    let report = handle.shutdown().await;
    assert!(report.drained(), "{report:?}");
}
