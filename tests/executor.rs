//! The executor under the daemon's tree against `keel sim`: intents on Redis
//! become orders on the exchange exactly once while answers are dropped,
//! orders are refused for now and the session is cut; PostgreSQL and the
//! exchange agree on every order's state and every fill; limits and bad
//! intents are refused with their reasons; a shutdown cancels what is open.

mod common;

use std::collections::BTreeSet;
use std::time::Duration;

use common::db::TestDb;
use common::executor::*;
use common::redis::TestPrefix;
use common::{daemon, eventually_some};
use keel::{tree, Runtime};
use keel_core::secret::Secret;
use keel_deribit::codes;
use keel_deribit::model::to_ms;
use keel_deribit::private::{Order, UserTradesPage};
use keel_deribit::sim::{self, Fault};
use serde_json::{json, Value};

#[tokio::test]
async fn every_intent_is_one_order_on_the_exchange_under_dropped_answers_refusals_and_disconnects()
{
    let sim = daemon::sim(200.0).await;
    let db = TestDb::create().await;
    let prefix = TestPrefix::new();
    let config = executor_only(daemon::config(&db, &prefix, Some(&sim)), &sim);
    let handle = Runtime::from_config(&config).start().await.unwrap();
    let mut conn = prefix.connection();
    let intents = format!("{}orders:intents", prefix.prefix);
    let mut ws = exchange(&sim).await;
    let (bid, ask) = best(&mut ws).await;

    // Faults on the exchange from the first orders on.
    sim.inject(&Fault::RejectOrders {
        code: codes::MATCHING_ENGINE_QUEUE_FULL,
        count: 3,
    })
    .unwrap();
    let mut expected: BTreeSet<String> = BTreeSet::new();
    let mut resting = Vec::new();
    let client = db.client().await;
    // Resting orders whose answers are lost: the executor hears of them only
    // by their notifications, and must not send them again at the deadline.
    sim.inject(&Fault::DropOrderAnswers { count: 4 }).unwrap();
    for j in 0..4 {
        let label = format!("d-{j}");
        xadd(
            &mut conn,
            &intents,
            &place(&label, "buy", 10.0, bid - 2000.0, "good_til_cancelled"),
        );
        expected.insert(label.clone());
        resting.push(label);
    }
    let counter = |name: &'static str| {
        let handle = &handle;
        move || {
            handle
                .tree()
                .actor(tree::EXECUTOR)
                .and_then(|a| a.details.get("executor").and_then(|e| e[name].as_u64()))
                .unwrap_or(0)
        }
    };
    let ambiguous = counter("ambiguous");
    common::eventually("the lost answers' deadlines passed", WAIT, || {
        ambiguous() >= 4
    })
    .await;
    // Two rounds: answers dropped while the session lives (the executor must
    // ask by label, never resend blindly), then the session cut mid-stream
    // (it must reconcile by label before taking more).
    for round in [0..60, 60..120] {
        for i in round.clone() {
            if i == 10 {
                sim.inject(&Fault::DropOrderAnswers { count: 4 }).unwrap();
            }
            if i == 70 {
                sim.inject(&Fault::Disconnect).unwrap();
            }
            let label = format!("c-{i:04}");
            let fields = match i % 3 {
                // Takes the book at once.
                0 => place(&label, "buy", 10.0, ask + 100.0, "immediate_or_cancel"),
                // Rests far below it.
                1 => {
                    resting.push(label.clone());
                    place(&label, "buy", 10.0, bid - 2000.0, "good_til_cancelled")
                }
                // More than the book holds: killed whole.
                _ => place(&label, "sell", 1000.0, bid - 100.0, "fill_or_kill"),
            };
            xadd(&mut conn, &intents, &fields);
            expected.insert(label.clone());
            // A strategy that sends an intent twice gets one order.
            if i % 25 == 0 {
                xadd(
                    &mut conn,
                    &intents,
                    &place(&label, "buy", 10.0, ask + 100.0, "immediate_or_cancel"),
                );
            }
            if i % 10 == 9 {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
        let round: BTreeSet<String> = round.map(|i| format!("c-{i:04}")).collect();
        eventually_some("the round settled in PostgreSQL", WAIT, || async {
            let orders = stored(&client).await;
            round
                .iter()
                .all(|l| {
                    orders
                        .get(l)
                        .is_some_and(|(s, _)| !matches!(s.as_str(), "pending" | "sent" | "unknown"))
                })
                .then_some(())
        })
        .await;
    }
    // Refused by a limit, and not an intent at all.
    xadd(
        &mut conn,
        &intents,
        &place("too-big", "buy", 5000.0, bid, "good_til_cancelled"),
    );
    xadd(
        &mut conn,
        &intents,
        &[("action", "place".into()), ("label", "no-side".into())],
    );
    let orders = eventually_some("the refused intent recorded", WAIT, || async {
        let orders = stored(&client).await;
        orders.contains_key("too-big").then_some(orders)
    })
    .await;
    assert_eq!(
        orders.get("too-big").map(|(s, _)| s.as_str()),
        Some("rejected")
    );
    assert!(
        !orders.contains_key("no-side"),
        "an invalid intent records no order"
    );

    // Cancel what rests (some were cancelled on disconnect already).
    for label in &resting {
        xadd(
            &mut conn,
            &intents,
            &[("action", "cancel".into()), ("label", label.clone())],
        );
    }
    let orders = eventually_some("every order terminal", WAIT, || async {
        let orders = stored(&client).await;
        let done = expected.iter().all(|l| {
            orders.get(l).is_some_and(|(s, _)| {
                !matches!(
                    s.as_str(),
                    "pending" | "sent" | "unknown" | "open" | "partially_filled"
                )
            })
        });
        done.then_some(orders)
    })
    .await;

    // The exchange holds exactly one order per intent, in the state stored
    // (a new session: the disconnect fault closed the test's too).
    let mut ws = exchange(&sim).await;
    for label in &expected {
        let found: Vec<Order> = ws
            .request(
                "private/get_order_state_by_label",
                json!({"currency": "BTC", "label": label}),
            )
            .await
            .result()
            .unwrap();
        assert_eq!(
            found.len(),
            1,
            "{label}: {} orders on the exchange",
            found.len()
        );
        let exchange_state = found[0].order_state.as_str();
        let (state, filled) = &orders[label];
        assert_eq!(state, exchange_state, "{label}");
        assert_eq!(*filled, found[0].filled(), "{label}");
    }
    let refused: Vec<Order> = ws
        .request(
            "private/get_order_state_by_label",
            json!({"currency": "BTC", "label": "too-big"}),
        )
        .await
        .result()
        .unwrap();
    assert!(refused.is_empty(), "a refused intent reaches no exchange");
    // Every fill of the exchange is stored once.
    let page: UserTradesPage = ws
        .request(
            "private/get_user_trades_by_instrument",
            json!({"instrument_name": BTC, "count": 1000, "sorting": "asc"}),
        )
        .await
        .result()
        .unwrap();
    let on_exchange: BTreeSet<String> = page.trades.iter().map(|t| t.trade_id.clone()).collect();
    assert!(!on_exchange.is_empty(), "some orders filled");
    let rows = client
        .query("SELECT trade_id FROM fills", &[])
        .await
        .unwrap();
    let in_store: Vec<String> = rows.iter().map(|r| r.get(0)).collect();
    assert_eq!(in_store.len(), on_exchange.len());
    assert_eq!(in_store.into_iter().collect::<BTreeSet<_>>(), on_exchange);
    // Events for the strategy; the bad intent dead-lettered with its reason.
    assert!(stream_len(&mut conn, &format!("{}orders:events", prefix.prefix)) >= expected.len());
    let dead: Vec<(String, Vec<(String, String)>)> = redis::cmd("XRANGE")
        .arg(format!("{}orders:dead", prefix.prefix))
        .arg("-")
        .arg("+")
        .query(&mut conn)
        .unwrap();
    assert_eq!(dead.len(), 1);
    assert!(dead[0]
        .1
        .iter()
        .any(|(k, v)| k == "reason" && v.contains("side")));
    let stats = sim.stats();
    assert_eq!(stats.faults.get("drop_order_answers"), Some(&2));
    handle.shutdown().await;
}

#[tokio::test]
async fn a_shutdown_cancels_open_orders_and_a_restart_resolves_ambiguous_ones_by_label() {
    let sim = daemon::sim(0.0).await;
    let db = TestDb::create().await;
    let prefix = TestPrefix::new();
    let config = executor_only(daemon::config(&db, &prefix, Some(&sim)), &sim);
    let mut ws = exchange(&sim).await;
    let low = best(&mut ws).await.0 - 1000.0;
    let mut conn = prefix.connection();
    let intents = format!("{}orders:intents", prefix.prefix);
    let client = db.client().await;
    let state_of = |label: &'static str| {
        let client = &client;
        async move { stored(client).await.get(label).map(|(s, _)| s.clone()) }
    };

    let handle = Runtime::from_config(&config).start().await.unwrap();
    xadd(
        &mut conn,
        &intents,
        &place("open-1", "buy", 10.0, low, "good_til_cancelled"),
    );
    eventually_some("open-1 open", WAIT, || async {
        (state_of("open-1").await.as_deref() == Some("open")).then_some(())
    })
    .await;
    // A shutdown cancels what is open (by the executor, not by disconnect).
    handle.shutdown().await;
    let found: Vec<Order> = ws
        .request(
            "private/get_order_state_by_label",
            json!({"currency": "BTC", "label": "open-1"}),
        )
        .await
        .result()
        .unwrap();
    assert_eq!(found.len(), 1);
    assert_eq!(found[0].order_state.as_str(), "cancelled");
    assert_eq!(found[0].cancel_reason.as_deref(), Some("user_request"));
    assert_eq!(state_of("open-1").await.as_deref(), Some("cancelled"));

    // What a crash leaves: an order recorded and never sent; one sent and
    // placed, its answer never heard; one sent that never reached the
    // exchange, its valid_until past.
    let past = to_ms(std::time::SystemTime::now()) as i64 - 60_000;
    for (label, state, sends) in [
        ("never-1", "pending", 0),
        ("lost-1", "sent", 1),
        ("gone-1", "sent", 1),
    ] {
        client
            .execute(
                "INSERT INTO orders (label, instrument_name, side, order_type, amount, price,
                     time_in_force, post_only, reduce_only, state, state_rank, valid_until_ms, sends)
                 VALUES ($1, $2, 'buy', 'limit', 10, $3, 'good_til_cancelled', false, false, $4, $5, $6, $7)",
                &[&label, &BTC, &low, &state, &(if state == "pending" { 0i16 } else { 1i16 }), &past, &sends],
            )
            .await
            .unwrap();
    }
    let placed: Value = ws
        .request(
            "private/buy",
            json!({"instrument_name": BTC, "amount": 10, "price": low, "label": "lost-1"}),
        )
        .await
        .result()
        .unwrap();
    assert_eq!(placed["order"]["order_state"], "open");

    // The restart asks by label before it takes an intent: lost-1 is found,
    // never-1 and gone-1 are sent (the exchange had nothing).
    let handle = Runtime::from_config(&config).start().await.unwrap();
    for label in ["lost-1", "never-1", "gone-1"] {
        eventually_some("reconciled", WAIT, || async {
            (state_of(label).await.as_deref() == Some("open")).then_some(())
        })
        .await;
        let found: Vec<Order> = ws
            .request(
                "private/get_order_state_by_label",
                json!({"currency": "BTC", "label": label}),
            )
            .await
            .result()
            .unwrap();
        assert_eq!(found.len(), 1, "{label}: {} orders", found.len());
    }
    handle.shutdown().await;
    for label in ["lost-1", "never-1", "gone-1"] {
        assert_eq!(
            state_of(label).await.as_deref(),
            Some("cancelled"),
            "{label}"
        );
    }
}

#[tokio::test]
async fn an_order_that_ended_long_before_a_restart_is_read_from_the_order_history_not_sent_again() {
    // Deribit's recent views of orders (get_order_state_by_label among them)
    // hold what closed in the last 30 minutes; this exchange's, 2 s, so the
    // restart below comes "long" after the orders ended.
    let sim = sim::start(sim::SimConfig {
        listen: "127.0.0.1:0".parse().unwrap(),
        instruments: vec![BTC.into()],
        trades_per_sec: 0.0,
        client_id: Some("k".into()),
        client_secret: Some(Secret::new("s")),
        min_heartbeat: Duration::from_secs(1),
        recent_orders: Duration::from_secs(2),
        ..sim::SimConfig::default()
    })
    .await
    .unwrap();
    let db = TestDb::create().await;
    let prefix = TestPrefix::new();
    let config = executor_only(daemon::config(&db, &prefix, Some(&sim)), &sim);
    let mut ws = exchange(&sim).await;
    let (bid, ask) = best(&mut ws).await;
    let client = db.client().await;
    // A first run makes the tables.
    let first = Runtime::from_config(&config).start().await.unwrap();
    eventually_some("ready", WAIT, || async {
        first.not_ready().is_empty().then_some(())
    })
    .await;
    first.shutdown().await;

    // What a crash leaves, as in the test above: filled-1 sent, placed and
    // filled, its answer never heard; cancelled-1 acknowledged, then
    // cancelled on the exchange while Keel was down; gone-2 sent, never on
    // the exchange.
    let filled: Value = ws
        .request(
            "private/buy",
            json!({"instrument_name": BTC, "amount": 10, "price": ask + 100.0, "label": "filled-1"}),
        )
        .await
        .result()
        .unwrap();
    assert_eq!(filled["order"]["order_state"], "filled");
    let open: Value = ws
        .request(
            "private/buy",
            json!({"instrument_name": BTC, "amount": 10, "price": bid - 1000.0, "label": "cancelled-1"}),
        )
        .await
        .result()
        .unwrap();
    let cancelled_id = open["order"]["order_id"].as_str().unwrap().to_owned();
    let _: Value = ws
        .request("private/cancel", json!({"order_id": cancelled_id}))
        .await
        .result()
        .unwrap();
    let now = to_ms(std::time::SystemTime::now()) as i64;
    let intent_id = format!("{}-0", now - 10_000);
    for (label, state, rank, price, order_id) in [
        ("filled-1", "sent", 1i16, ask + 100.0, None),
        (
            "cancelled-1",
            "open",
            3i16,
            bid - 1000.0,
            Some(cancelled_id.clone()),
        ),
        ("gone-2", "sent", 1i16, bid - 1000.0, None),
    ] {
        client
            .execute(
                "INSERT INTO orders (label, instrument_name, side, order_type, amount, price,
                     time_in_force, post_only, reduce_only, state, state_rank, order_id,
                     valid_until_ms, sends, intent_id)
                 VALUES ($1, $2, 'buy', 'limit', 10, $3, 'good_til_cancelled', false, false,
                     $4, $5, $6, $7, 1, $8)",
                &[
                    &label,
                    &BTC,
                    &price,
                    &state,
                    &rank,
                    &order_id,
                    &(now - 60_000),
                    &intent_id,
                ],
            )
            .await
            .unwrap();
    }
    // Until both have left the recent view and reached the historical one.
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let mut recent = 0;
        for label in ["filled-1", "cancelled-1"] {
            let found: Vec<Order> = ws
                .request(
                    "private/get_order_state_by_label",
                    json!({"currency": "BTC", "label": label}),
                )
                .await
                .result()
                .unwrap();
            recent += found.len();
        }
        let historical: Vec<Order> = ws
            .request(
                "private/get_order_history_by_instrument",
                json!({"instrument_name": BTC, "include_unfilled": true, "historical": true}),
            )
            .await
            .result()
            .unwrap();
        if recent == 0 && historical.len() == 2 {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "still in the recent view: {recent}, in the historical one: {}",
            historical.len()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    let handle = Runtime::from_config(&config).start().await.unwrap();
    let state_of = |label: &'static str| {
        let client = &client;
        async move { stored(client).await.get(label).cloned() }
    };
    eventually_some("gone-2 sent again and open", WAIT, || async {
        (state_of("gone-2").await.map(|(s, _)| s).as_deref() == Some("open")).then_some(())
    })
    .await;
    assert_eq!(
        state_of("filled-1").await,
        Some(("filled".to_owned(), 10.0)),
        "filled-1 takes the state the history holds"
    );
    assert_eq!(
        state_of("cancelled-1").await.map(|(s, _)| s).as_deref(),
        Some("cancelled")
    );
    let ledger = sim.ledger();
    for label in ["filled-1", "cancelled-1", "gone-2"] {
        assert_eq!(
            ledger.orders.get(label).map(Vec::len),
            Some(1),
            "{label}: one order on the exchange"
        );
    }
    handle.shutdown().await;
}

#[tokio::test]
async fn the_kill_switch_cancels_open_orders_stops_intake_and_holds_until_resumed() {
    let sim = daemon::sim(0.0).await;
    let db = TestDb::create().await;
    let prefix = TestPrefix::new();
    let config = executor_only(daemon::config(&db, &prefix, Some(&sim)), &sim);
    let mut ws = exchange(&sim).await;
    let low = best(&mut ws).await.0 - 1000.0;
    let mut conn = prefix.connection();
    let intents = format!("{}orders:intents", prefix.prefix);
    let client = db.client().await;
    let state_of = |label: &'static str| {
        let client = &client;
        async move { stored(client).await.get(label).map(|(s, _)| s.clone()) }
    };
    let handle = Runtime::from_config(&config).start().await.unwrap();
    xadd(
        &mut conn,
        &intents,
        &place("k-1", "buy", 10.0, low, "good_til_cancelled"),
    );
    eventually_some("k-1 open", WAIT, || async {
        (state_of("k-1").await.as_deref() == Some("open")).then_some(())
    })
    .await;

    let registry = handle.registry().clone();
    // Halted as an operator does it, and seen as one would see it.
    let handle = std::sync::Arc::new(handle);
    let admin = common::admin_endpoint(&handle, "t0ken").await;
    let url = format!("http://{}", admin.addr());
    let ctl = move |args: &'static [&'static str]| {
        let url = url.clone();
        tokio::task::spawn_blocking(move || {
            let out = std::process::Command::new(env!("CARGO_BIN_EXE_keel"))
                .args(["ctl", "--admin-url", &url, "--token", "t0ken"])
                .args(args)
                .output()
                .unwrap();
            (
                out.status.code(),
                String::from_utf8_lossy(&out.stdout).into_owned(),
            )
        })
    };
    assert_eq!(ctl(&["halt"]).await.unwrap().0, Some(0));
    eventually_some("k-1 cancelled by the halt", WAIT, || async {
        (state_of("k-1").await.as_deref() == Some("cancelled")).then_some(())
    })
    .await;
    let (code, drawn) = ctl(&["tree"]).await.unwrap();
    assert_eq!(code, Some(0));
    assert!(
        drawn
            .lines()
            .any(|l| l.contains(tree::EXECUTOR) && l.contains("[HALTED]")),
        "{drawn}"
    );
    let detail = |handle: &keel::RuntimeHandle| {
        handle
            .tree()
            .actor(tree::EXECUTOR)
            .and_then(|a| a.details.get("executor").cloned())
            .unwrap_or_default()
    };
    assert_eq!(detail(&handle)["halted"], true);
    // Halted across a restart of the executor, and no intent is taken.
    handle.restart(tree::EXECUTOR).await.unwrap();
    xadd(
        &mut conn,
        &intents,
        &place("k-2", "buy", 10.0, low, "good_til_cancelled"),
    );
    let deadline = tokio::time::Instant::now() + Duration::from_secs(2);
    while tokio::time::Instant::now() < deadline {
        assert_eq!(
            state_of("k-2").await,
            None,
            "an intent was taken while halted"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let halted = keel_actors::service::executor::set_halted(&registry, tree::EXECUTOR, false)
        .await
        .unwrap();
    assert!(!halted);
    eventually_some("k-2 taken after resume", WAIT, || async {
        (state_of("k-2").await.as_deref() == Some("open")).then_some(())
    })
    .await;
    assert_eq!(detail(&handle)["halted"], false);
    let (_, drawn) = ctl(&["tree"]).await.unwrap();
    assert!(!drawn.contains("HALTED"), "{drawn}");
    handle.shutdown().await;
}

#[tokio::test]
async fn order_entry_keeps_to_the_accounts_rate_limits_instead_of_hitting_10028() {
    let sim = sim::start(keel_deribit::sim::SimConfig {
        listen: "127.0.0.1:0".parse().unwrap(),
        instruments: vec![BTC.into()],
        trades_per_sec: 0.0,
        client_id: Some("k".into()),
        client_secret: Some(Secret::new("s")),
        min_heartbeat: Duration::from_secs(1),
        rate_limits: keel_deribit::sim::RateLimits {
            enabled: true,
            matching_rate: 5,
            matching_burst: 10,
            ..keel_deribit::sim::RateLimits::default()
        },
        ..keel_deribit::sim::SimConfig::default()
    })
    .await
    .unwrap();
    let db = TestDb::create().await;
    let prefix = TestPrefix::new();
    let config = executor_only(daemon::config(&db, &prefix, Some(&sim)), &sim);
    let mut ws = exchange(&sim).await;
    let ask = best(&mut ws).await.1;
    let handle = Runtime::from_config(&config).start().await.unwrap();
    let mut conn = prefix.connection();
    let intents = format!("{}orders:intents", prefix.prefix);
    let labels: Vec<String> = (0..30).map(|i| format!("r-{i}")).collect();
    for label in &labels {
        xadd(
            &mut conn,
            &intents,
            &place(label, "buy", 10.0, ask + 100.0, "immediate_or_cancel"),
        );
    }
    let client = db.client().await;
    eventually_some("every order placed", WAIT, || async {
        let orders = stored(&client).await;
        labels
            .iter()
            .all(|l| orders.get(l).is_some_and(|(s, _)| s == "filled"))
            .then_some(())
    })
    .await;
    assert_eq!(
        sim.stats().rate_limited,
        0,
        "the executor hit the exchange's limit"
    );
    handle.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sigkill_mid_stream_and_a_restart_lose_and_double_no_order() {
    use common::process::{closed_port, signal, spawn_keel, write_config};
    let sim = daemon::sim(100.0).await;
    let db = TestDb::create().await;
    let prefix = TestPrefix::new();
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(
        dir.path(),
        &format!(
            "[sim]\nin_daemon = false\n[receiver]\nenabled = false\n[distributor]\nenabled = false\n\
             [analyzer]\nenabled = false\n[schedule]\nenabled = false\n\
             [admin]\nlisten = \"127.0.0.1:{}\"\n[postgres]\nurl = \"{}\"\n[redis]\nkey_prefix = \"{}\"\n\
             [executor]\nenabled = true\nurl = \"{}\"\nclient_id = \"k\"\nclient_secret = \"s\"\n\
             [executor.instruments.BTC-PERPETUAL]\nmax_amount = 1000.0\nmax_position = 1000000.0\nprice_band = 0.2\n",
            closed_port(),
            db.url(common::db::PG_PORT),
            prefix.prefix,
            sim.ws_url()
        ),
    );
    let mut ws = exchange(&sim).await;
    let ask = best(&mut ws).await.1;
    let mut conn = prefix.connection();
    let intents = format!("{}orders:intents", prefix.prefix);
    let client = db.client().await;
    let labels: Vec<String> = (0..80).map(|i| format!("k9-{i:03}")).collect();

    let (mut keel, mut lines) = spawn_keel(&["run"], &config);
    eventually_some("the executor session", WAIT, || async {
        (sim.stats().connections >= 2).then_some(())
    })
    .await;
    // Answers lost around the kill: the restart must ask, not resend.
    sim.inject(&Fault::DropOrderAnswers { count: 3 }).unwrap();
    for (i, label) in labels.iter().enumerate() {
        if i == 40 {
            signal(&keel, "KILL");
            let _ = keel.0.wait();
            // Its stderr is read for as long as it runs (a closed pipe would stop it).
            (keel, lines) = spawn_keel(&["run"], &config);
        }
        xadd(
            &mut conn,
            &intents,
            &place(label, "buy", 10.0, ask + 100.0, "immediate_or_cancel"),
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let orders = eventually_some("every intent terminal", WAIT, || async {
        let orders = stored(&client).await;
        let open: Vec<_> = labels
            .iter()
            .filter(|l| !orders.get(*l).is_some_and(|(s, _)| rank_terminal(s)))
            .map(|l| (l, orders.get(l)))
            .collect();
        if !open.is_empty() {
            eprintln!("not terminal: {} {:?}", open.len(), open.first());
        }
        open.is_empty().then_some(orders)
    })
    .await;
    let mut ws = exchange(&sim).await;
    for label in &labels {
        let found: Vec<Order> = ws
            .request(
                "private/get_order_state_by_label",
                json!({"currency": "BTC", "label": label}),
            )
            .await
            .result()
            .unwrap();
        assert_eq!(
            found.len(),
            1,
            "{label}: {} orders on the exchange",
            found.len()
        );
        assert_eq!(orders[label].0, found[0].order_state.as_str(), "{label}");
    }
    let page: UserTradesPage = ws
        .request(
            "private/get_user_trades_by_instrument",
            json!({"instrument_name": BTC, "count": 1000, "sorting": "asc"}),
        )
        .await
        .result()
        .unwrap();
    let fills: i64 = client
        .query_one("SELECT count(*) FROM fills", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(fills as usize, page.trades.len(), "every fill stored once");
    signal(&keel, "TERM");
    let _ = keel.0.wait();
    drop(lines);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_and_postgres_outages_lose_and_double_no_order() {
    use common::pg_cluster::PrivatePg;
    use common::redis::PrivateRedis;
    // Intents live only in Redis: production runs it with an append-only
    // file, and so does this test (a Redis that loses its data loses the
    // intents it had not handed over, as any queue would).
    let aof = tempfile::tempdir().unwrap();
    let dir = aof.path().to_string_lossy().into_owned();
    let mut redis = PrivateRedis::start_with(&[
        "--appendonly",
        "yes",
        "--appendfsync",
        "always",
        "--dir",
        &dir,
    ]);
    let mut pg = PrivatePg::start();
    let prefix = TestPrefix::on(redis.port);
    let sim = daemon::sim(100.0).await;
    let mut config = keel::config::Config {
        postgres: keel_actors::resource::pg::PostgresConfig {
            url: pg.url(),
            ..Default::default()
        },
        redis: keel_actors::resource::redis::RedisConfig {
            url: format!("redis://127.0.0.1:{}/0", redis.port),
            key_prefix: prefix.prefix.clone(),
            ..Default::default()
        },
        executor: executor(&sim),
        ..keel::config::Config::default()
    };
    config.sim.in_daemon = false;
    let config = executor_only(config, &sim);
    let handle = Runtime::from_config(&config).start().await.unwrap();
    let mut ws = exchange(&sim).await;
    let (bid, ask) = best(&mut ws).await;
    let intents = format!("{}orders:intents", prefix.prefix);
    let mut labels = Vec::new();
    let send = |conn: &mut redis::Connection, n: usize, labels: &mut Vec<String>| {
        for _ in 0..n {
            let i = labels.len();
            let label = format!("o-{i:03}");
            let fields = if i % 2 == 0 {
                place(&label, "buy", 10.0, ask + 100.0, "immediate_or_cancel")
            } else {
                place(&label, "buy", 10.0, bid - 2000.0, "good_til_cancelled")
            };
            xadd(conn, &intents, &fields);
            labels.push(label);
        }
    };
    let mut conn = redis.client().get_connection().unwrap();
    send(&mut conn, 10, &mut labels);
    settled(&pg, &labels).await;

    // Redis goes away with intents in hand (acknowledgements and events wait).
    send(&mut conn, 10, &mut labels);
    redis.stop();
    tokio::time::sleep(Duration::from_secs(20)).await;
    redis.resume();
    let mut conn = redis.client().get_connection().unwrap();
    send(&mut conn, 10, &mut labels);
    settled(&pg, &labels).await;

    // PostgreSQL goes away with intents in hand (orders cannot be recorded).
    send(&mut conn, 10, &mut labels);
    pg.stop();
    tokio::time::sleep(Duration::from_secs(20)).await;
    pg.resume();
    send(&mut conn, 10, &mut labels);
    settled(&pg, &labels).await;

    let tree = handle.tree();
    let executor = tree.actor(tree::EXECUTOR).unwrap();
    assert_eq!(
        executor.restarts, 0,
        "the outages were ridden out: {:?}",
        executor.last_failure
    );
    let client = pg.client().await;
    let orders = stored(&client).await;
    let mut ws = exchange(&sim).await;
    for label in &labels {
        let found: Vec<Order> = ws
            .request(
                "private/get_order_state_by_label",
                json!({"currency": "BTC", "label": label}),
            )
            .await
            .result()
            .unwrap();
        assert_eq!(
            found.len(),
            1,
            "{label}: {} orders on the exchange",
            found.len()
        );
        assert_eq!(orders[label].0, found[0].order_state.as_str(), "{label}");
    }
    let page: UserTradesPage = ws
        .request(
            "private/get_user_trades_by_instrument",
            json!({"instrument_name": BTC, "count": 1000, "sorting": "asc"}),
        )
        .await
        .result()
        .unwrap();
    let fills: i64 = client
        .query_one("SELECT count(*) FROM fills", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(fills as usize, page.trades.len(), "every fill stored once");
    handle.shutdown().await;
}

#[tokio::test]
async fn amends_are_held_to_the_limits_and_recorded() {
    let sim = daemon::sim(0.0).await;
    let db = TestDb::create().await;
    let prefix = TestPrefix::new();
    let config = executor_only(daemon::config(&db, &prefix, Some(&sim)), &sim);
    let mut ws = exchange(&sim).await;
    let bid = best(&mut ws).await.0;
    let low = bid - 1000.0;
    let handle = Runtime::from_config(&config).start().await.unwrap();
    let mut conn = prefix.connection();
    let intents = format!("{}orders:intents", prefix.prefix);
    let client = db.client().await;
    xadd(
        &mut conn,
        &intents,
        &place("a-1", "buy", 10.0, low, "good_til_cancelled"),
    );
    eventually_some("a-1 open", WAIT, || async {
        let orders = stored(&client).await;
        (orders.get("a-1").map(|(s, _)| s.as_str()) == Some("open")).then_some(())
    })
    .await;
    let amend = |fields: &[(&'static str, String)]| {
        let mut all: Vec<(&'static str, String)> =
            vec![("action", "amend".to_owned()), ("label", "a-1".to_owned())];
        all.extend(fields.iter().cloned());
        all
    };
    xadd(&mut conn, &intents, &amend(&[("amount", "5000".into())]));
    xadd(
        &mut conn,
        &intents,
        &amend(&[("price", (bid * 0.5).to_string())]),
    );
    xadd(
        &mut conn,
        &intents,
        &amend(&[("amount", "20".into()), ("price", (low - 10.0).to_string())]),
    );
    let mut conn2 = prefix.connection();
    let accepted = eventually_some("the amends answered", WAIT, || {
        let found = events(&mut conn2, &prefix);
        let client = &client;
        async move {
            let refused: Vec<String> = found
                .iter()
                .filter(|e| e["event"] == "amend_rejected")
                .map(|e| e["reason"].clone())
                .collect();
            let row = client
                .query_one("SELECT amount FROM orders WHERE label = 'a-1'", &[])
                .await
                .ok()?;
            (refused.len() == 2 && row.get::<_, f64>(0) == 20.0).then_some(refused)
        }
    })
    .await;
    assert!(accepted[0].contains("max_amount"), "{accepted:?}");
    assert!(accepted[1].contains("price_band"), "{accepted:?}");
    let found: Vec<Order> = ws
        .request(
            "private/get_order_state_by_label",
            json!({"currency": "BTC", "label": "a-1"}),
        )
        .await
        .result()
        .unwrap();
    assert_eq!(
        (found[0].amount, found[0].price.value()),
        (20.0, Some(low - 10.0))
    );
    let row = client
        .query_one("SELECT amount, price FROM orders WHERE label = 'a-1'", &[])
        .await
        .unwrap();
    assert_eq!(
        (row.get::<_, f64>(0), row.get::<_, Option<f64>>(1)),
        (20.0, Some(low - 10.0))
    );
    let history: Vec<String> = client
        .query("SELECT state || ':' || COALESCE(reason, '') FROM order_history WHERE label = 'a-1' ORDER BY recorded_at", &[])
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert!(history.iter().any(|h| h.starts_with("sent")), "{history:?}");
    assert!(history.iter().any(|h| h.contains("amended")), "{history:?}");
    handle.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_exchange_that_forgot_its_orders_does_not_stop_the_executor() {
    let first = daemon::sim(0.0).await;
    let addr = first.addr();
    let db = TestDb::create().await;
    let prefix = TestPrefix::new();
    let config = executor_only(daemon::config(&db, &prefix, Some(&first)), &first);
    let mut ws = exchange(&first).await;
    let low = best(&mut ws).await.0 - 1000.0;
    drop(ws);
    let handle = Runtime::from_config(&config).start().await.unwrap();
    let mut conn = prefix.connection();
    let intents = format!("{}orders:intents", prefix.prefix);
    let client = db.client().await;
    let state = |label: &'static str| {
        let client = &client;
        async move { stored(client).await.get(label).map(|(s, _)| s.clone()) }
    };
    xadd(
        &mut conn,
        &intents,
        &place("f-1", "buy", 10.0, low, "good_til_cancelled"),
    );
    eventually_some("f-1 open", WAIT, || async {
        (state("f-1").await.as_deref() == Some("open")).then_some(())
    })
    .await;
    // The exchange restarts with nothing: a new simulator on the same address.
    first.stop().await;
    let second = sim::start(keel_deribit::sim::SimConfig {
        listen: addr,
        instruments: vec![BTC.into()],
        trades_per_sec: 0.0,
        client_id: Some("k".into()),
        client_secret: Some(Secret::new("s")),
        min_heartbeat: Duration::from_secs(1),
        ..keel_deribit::sim::SimConfig::default()
    })
    .await
    .unwrap();
    eventually_some(
        "f-1 closed as the exchange no longer knows it",
        WAIT,
        || async { (state("f-1").await.as_deref() == Some("expired")).then_some(()) },
    )
    .await;
    xadd(
        &mut conn,
        &intents,
        &place("f-2", "buy", 10.0, low, "good_til_cancelled"),
    );
    let deadline = tokio::time::Instant::now() + WAIT;
    while state("f-2").await.as_deref() != Some("open") {
        assert!(
            tokio::time::Instant::now() < deadline,
            "f-2 not open on the new exchange: {:?}, reason {:?}; executor {:?}",
            state("f-2").await,
            client
                .query_opt("SELECT reason FROM orders WHERE label = 'f-2'", &[])
                .await
                .ok()
                .flatten()
                .map(|r| r.get::<_, Option<String>>(0)),
            handle
                .tree()
                .actor(tree::EXECUTOR)
                .map(|a| (a.state, a.restarts, a.details.clone()))
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(!handle.has_ended(), "the tree still runs");
    drop(second);
    handle.shutdown().await;
}

#[tokio::test]
async fn at_max_open_orders_a_new_order_is_refused_and_cancels_still_come_in() {
    let sim = daemon::sim(0.0).await;
    let db = TestDb::create().await;
    let prefix = TestPrefix::new();
    let mut config = executor_only(daemon::config(&db, &prefix, Some(&sim)), &sim);
    config.executor.max_open_orders = 3;
    let mut ws = exchange(&sim).await;
    let low = best(&mut ws).await.0 - 1000.0;
    let mut conn = prefix.connection();
    let intents = format!("{}orders:intents", prefix.prefix);
    let client = db.client().await;
    let handle = Runtime::from_config(&config).start().await.unwrap();
    let states = |labels: &'static [&'static str]| {
        let client = &client;
        async move {
            let orders = stored(client).await;
            labels
                .iter()
                .map(|l| orders.get(*l).map_or("-".to_owned(), |(s, _)| s.clone()))
                .collect::<Vec<_>>()
        }
    };
    for label in ["m-1", "m-2", "m-3", "m-4"] {
        xadd(
            &mut conn,
            &intents,
            &place(label, "buy", 10.0, low, "good_til_cancelled"),
        );
    }
    eventually_some("three resting, the fourth refused", WAIT, || async {
        (states(&["m-1", "m-2", "m-3", "m-4"]).await == ["open", "open", "open", "rejected"])
            .then_some(())
    })
    .await;
    let reason: String = client
        .query_one("SELECT reason FROM orders WHERE label = 'm-4'", &[])
        .await
        .unwrap()
        .get(0);
    assert!(reason.contains("max_open_orders"), "{reason}");
    // The strategy makes room; the next order goes out.
    xadd(
        &mut conn,
        &intents,
        &[("action", "cancel".into()), ("label", "m-1".into())],
    );
    xadd(
        &mut conn,
        &intents,
        &place("m-5", "buy", 10.0, low, "good_til_cancelled"),
    );
    eventually_some("m-1 cancelled and m-5 open", WAIT, || async {
        (states(&["m-1", "m-5"]).await == ["cancelled", "open"]).then_some(())
    })
    .await;
    handle.shutdown().await;
}

#[tokio::test]
async fn an_order_cancelled_while_waiting_to_be_resent_never_reaches_the_exchange() {
    let sim = daemon::sim(0.0).await;
    let db = TestDb::create().await;
    let prefix = TestPrefix::new();
    let config = executor_only(daemon::config(&db, &prefix, Some(&sim)), &sim);
    let mut ws = exchange(&sim).await;
    let low = best(&mut ws).await.0 - 1000.0;
    let mut conn = prefix.connection();
    let intents = format!("{}orders:intents", prefix.prefix);
    let client = db.client().await;
    let handle = Runtime::from_config(&config).start().await.unwrap();
    let state = || async { stored(&client).await.get("w-1").map(|(s, _)| s.clone()) };
    // Refused as retryable again and again: the order waits to be resent.
    sim.inject(&Fault::RejectOrders {
        code: codes::MATCHING_ENGINE_QUEUE_FULL,
        count: 1000,
    })
    .unwrap();
    xadd(
        &mut conn,
        &intents,
        &place("w-1", "buy", 10.0, low, "good_til_cancelled"),
    );
    eventually_some("w-1 refused once and waiting", WAIT, || async {
        let row = client
            .query_opt("SELECT sends FROM orders WHERE label = 'w-1'", &[])
            .await
            .ok()??;
        (row.get::<_, i32>(0) >= 1).then_some(())
    })
    .await;
    xadd(
        &mut conn,
        &intents,
        &[("action", "cancel".into()), ("label", "w-1".into())],
    );
    eventually_some("w-1 cancelled", WAIT, || async {
        (state().await.as_deref() == Some("cancelled")).then_some(())
    })
    .await;
    let reason: String = client
        .query_one("SELECT reason FROM orders WHERE label = 'w-1'", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(reason, "cancelled before it reached the exchange");
    // The exchange would take it now; well past the retry delays, it has
    // nothing.
    sim.inject(&Fault::RejectOrders {
        code: codes::MATCHING_ENGINE_QUEUE_FULL,
        count: 0,
    })
    .unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(3);
    while tokio::time::Instant::now() < deadline {
        assert!(
            !sim.ledger().orders.contains_key("w-1"),
            "a cancelled intent reached the exchange"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    handle.shutdown().await;
}

/// A position the account took outside Keel (another client, a manual
/// trade) counts toward `max_position` as soon as the exchange announces it
/// on `user.changes`, not only at the next reconnect; it shows in the
/// executor's `positions` detail; and a fill's events come before the state
/// they complete.
#[tokio::test]
async fn a_position_taken_outside_keel_counts_toward_max_position() {
    let sim = daemon::sim(0.0).await;
    let db = TestDb::create().await;
    let prefix = TestPrefix::new();
    let mut config = executor_only(daemon::config(&db, &prefix, Some(&sim)), &sim);
    if let Some(limits) = config.executor.instruments.get_mut(BTC) {
        limits.max_position = 100.0;
    }
    let mut ws = exchange(&sim).await;
    let (bid, ask) = best(&mut ws).await;
    let low = bid - 1000.0;
    let handle = Runtime::from_config(&config).start().await.unwrap();
    let mut conn = prefix.connection();
    let intents = format!("{}orders:intents", prefix.prefix);
    let client = db.client().await;
    // Keel's own fill first: an IOC that crosses.
    xadd(
        &mut conn,
        &intents,
        &place("p-1", "buy", 20.0, ask + 50.0, "immediate_or_cancel"),
    );
    until_state(&client, "p-1", "filled").await;
    let positions = |handle: &keel::RuntimeHandle| {
        handle
            .tree()
            .actor(tree::EXECUTOR)
            .and_then(|a| a.details.get("positions").cloned())
            .and_then(|p| p[BTC].as_f64())
    };
    eventually_some("the position after p-1", WAIT, || async {
        (positions(&handle) == Some(20.0)).then_some(())
    })
    .await;
    let mut conn2 = prefix.connection();
    let seen = events(&mut conn2, &prefix);
    let p1: Vec<&str> = seen
        .iter()
        .filter(|e| e.get("label").is_some_and(|l| l == "p-1"))
        .map(|e| e["event"].as_str())
        .collect();
    let fill = p1.iter().position(|e| *e == "fill");
    let filled = p1.iter().position(|e| *e == "filled");
    assert!(
        fill.is_some() && filled.is_some() && fill < filled,
        "the fill before the state it completes: {p1:?}"
    );

    // Another client on the same account buys 70: 90 in all.
    let outside = ws
        .request(
            "private/buy",
            json!({"instrument_name": BTC, "amount": 70, "type": "market"}),
        )
        .await;
    assert!(outside.outcome.is_ok(), "{:?}", outside.outcome);
    eventually_some("the outside position seen", WAIT, || async {
        (positions(&handle) == Some(90.0)).then_some(())
    })
    .await;
    // 90 + 20 would pass the limit: refused, and nothing is sent.
    xadd(
        &mut conn,
        &intents,
        &place("p-2", "buy", 20.0, low, "good_til_cancelled"),
    );
    until_state(&client, "p-2", "rejected").await;
    let refused = events(&mut conn2, &prefix);
    let reason = refused
        .iter()
        .find(|e| e.get("label").is_some_and(|l| l == "p-2") && e["event"] == "rejected")
        .map(|e| e["reason"].clone())
        .unwrap_or_default();
    assert!(reason.contains("max_position"), "{reason}");
    // A sell that reduces the position stays within it.
    xadd(
        &mut conn,
        &intents,
        &place("p-3", "sell", 20.0, ask + 1000.0, "good_til_cancelled"),
    );
    until_state(&client, "p-3", "open").await;
    let found = on_exchange(&mut ws, "p-2").await;
    assert!(
        found.is_empty(),
        "a refused order never reaches the exchange"
    );
    handle.shutdown().await;
}

/// An order that would trade against one of Keel's own resting orders (a
/// wash trade) is refused with the limit named and never sent; one that
/// crosses only the market's orders goes out; an amend into its own order is
/// refused too; a market order is refused while its own order rests on the
/// other side.
#[tokio::test]
async fn an_order_that_would_trade_against_keels_own_resting_order_is_refused() {
    let sim = daemon::sim(0.0).await;
    let db = TestDb::create().await;
    let prefix = TestPrefix::new();
    let config = executor_only(daemon::config(&db, &prefix, Some(&sim)), &sim);
    let mut ws = exchange(&sim).await;
    let (bid, ask) = best(&mut ws).await;
    let handle = Runtime::from_config(&config).start().await.unwrap();
    let mut conn = prefix.connection();
    let mut conn2 = prefix.connection();
    let intents = format!("{}orders:intents", prefix.prefix);
    let client = db.client().await;
    // Its own sell rests above the market.
    let own_sell = ask + 200.0;
    xadd(
        &mut conn,
        &intents,
        &place("w-1", "sell", 10.0, own_sell, "good_til_cancelled"),
    );
    until_state(&client, "w-1", "open").await;
    // A buy at its price would trade with it: refused.
    xadd(
        &mut conn,
        &intents,
        &place("w-2", "buy", 10.0, own_sell + 10.0, "immediate_or_cancel"),
    );
    until_state(&client, "w-2", "rejected").await;
    // A buy that crosses the market but stays under its own sell trades.
    xadd(
        &mut conn,
        &intents,
        &place("w-3", "buy", 10.0, ask + 100.0, "immediate_or_cancel"),
    );
    until_state(&client, "w-3", "filled").await;
    // A market buy, while its own sell rests: refused.
    let mut market = place("w-4", "buy", 10.0, 0.0, "immediate_or_cancel");
    market.retain(|(k, _)| *k != "price");
    market.push(("type", "market".into()));
    xadd(&mut conn, &intents, &market);
    until_state(&client, "w-4", "rejected").await;
    // Its own buy rests below; amending it up into the sell is refused.
    xadd(
        &mut conn,
        &intents,
        &place("w-5", "buy", 10.0, bid - 200.0, "good_til_cancelled"),
    );
    until_state(&client, "w-5", "open").await;
    xadd(
        &mut conn,
        &intents,
        &[
            ("action", "amend".into()),
            ("label", "w-5".into()),
            ("price", own_sell.to_string()),
        ],
    );
    let seen = eventually_some("the amend refused", WAIT, || {
        let found = events(&mut conn2, &prefix);
        async move {
            found
                .iter()
                .any(|e| e["event"] == "amend_rejected")
                .then_some(found)
        }
    })
    .await;
    let reason = |label: &str, event: &str| {
        seen.iter()
            .find(|e| e.get("label").is_some_and(|l| l == label) && e["event"] == event)
            .and_then(|e| e.get("reason").cloned())
            .unwrap_or_default()
    };
    for (label, event) in [
        ("w-2", "rejected"),
        ("w-4", "rejected"),
        ("w-5", "amend_rejected"),
    ] {
        let why = reason(label, event);
        assert!(
            why.contains("self_trade") && why.contains("w-1"),
            "{label}: {why}"
        );
    }
    for label in ["w-2", "w-4"] {
        let found = on_exchange(&mut ws, label).await;
        assert!(found.is_empty(), "{label} never reaches the exchange");
    }
    let w5 = on_exchange(&mut ws, "w-5").await;
    assert_eq!(
        w5[0].price.value(),
        Some(bid - 200.0),
        "the amend was not sent"
    );
    handle.shutdown().await;
}
