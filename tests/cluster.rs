//! Several instances sharing one Redis and one PostgreSQL: membership and the
//! scheduled tasks, one instance per interval.

mod common;

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use common::conservation;
use common::daemon::config;
use common::db::TestDb;
use common::redis::{TestPrefix, REDIS_PORT};
use common::{admin_endpoint, eventually, eventually_some};
use keel::config::Config;
use keel::{tree, Runtime, RuntimeHandle};
use serde_json::Value;

const WAIT: Duration = Duration::from_secs(30);

/// The janitor's interval in these tests: short, so many intervals pass.
const EVERY: Duration = Duration::from_millis(500);

fn instance(db: &TestDb, prefix: &TestPrefix, id: &str) -> Config {
    let mut config = config(db, prefix, None);
    config.receiver.enabled = false;
    config.analyzer.enabled = false;
    config.cluster.enabled = true;
    config.cluster.instance = id.into();
    config.schedule.instruments_at_boot = false;
    config.schedule.janitor_every = EVERY;
    config
}

/// The cluster as `handle`'s last heartbeat saw it.
fn view(handle: &RuntimeHandle) -> Value {
    handle
        .tree()
        .actor(tree::CLUSTER)
        .and_then(|a| a.details.get("cluster").cloned())
        .unwrap_or(Value::Null)
}

fn live_members(view: &Value) -> Vec<String> {
    let mut ids: Vec<String> = view["members"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|m| m["live"] == true)
        .filter_map(|m| m["id"].as_str().map(str::to_owned))
        .collect();
    ids.sort();
    ids
}

/// The janitor's `(runs here, intervals another instance took)`.
fn janitor(handle: &RuntimeHandle) -> (u64, u64) {
    let runs = handle
        .tree()
        .actor(tree::JANITOR)
        .and_then(|a| a.details.get("runs").cloned())
        .unwrap_or(Value::Null);
    let n = |key: &str| runs[key].as_u64().unwrap_or(0);
    (n("succeeded") + n("failed"), n("elsewhere"))
}

fn slot_now() -> u64 {
    let ms = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64);
    ms / EVERY.as_millis() as u64
}

#[tokio::test]
async fn two_instances_see_each_other_and_run_each_interval_of_a_task_once() {
    let db = TestDb::create().await;
    let prefix = TestPrefix::new();
    let a = Arc::new(
        Runtime::from_config(&instance(&db, &prefix, "a"))
            .start()
            .await
            .unwrap(),
    );
    let b = Runtime::from_config(&instance(&db, &prefix, "b"))
        .start()
        .await
        .unwrap();
    eventually("each instance sees both live", WAIT, || {
        live_members(&view(&a)) == ["a", "b"] && live_members(&view(&b)) == ["a", "b"]
    })
    .await;

    // Over many intervals, each ran once: here or there, never both.
    let (a0, b0) = (janitor(&a), janitor(&b));
    let first = slot_now();
    eventually("twelve intervals pass", WAIT, || slot_now() >= first + 12).await;
    let (a1, b1) = (janitor(&a), janitor(&b));
    let last = slot_now();
    let ran = (a1.0 - a0.0) + (b1.0 - b0.0);
    let intervals = last - first + 1;
    assert!(
        ran <= intervals && ran + 2 >= intervals,
        "{ran} runs in {intervals} intervals (a {a0:?} -> {a1:?}, b {b0:?} -> {b1:?})"
    );
    assert!(
        (a1.1 - a0.1) + (b1.1 - b0.1) >= intervals - 2,
        "each interval was also due on the other instance and counted as run elsewhere \
         (a {a0:?} -> {a1:?}, b {b0:?} -> {b1:?})"
    );

    // The view over HTTP: both members, who took the janitor's interval, and
    // the distributor's two consumers.
    let server = admin_endpoint(&a, "t").await;
    let http = reqwest::Client::new();
    let url = format!("http://{}/api/cluster", server.addr());
    let text = http
        .get(&url)
        .bearer_auth("t")
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let body: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(body["instance"], "a");
    assert_eq!(live_members(&body), ["a", "b"]);
    let janitor_row = body["tasks"]
        .as_array()
        .and_then(|t| t.iter().find(|t| t["task"] == tree::JANITOR).cloned())
        .unwrap_or(Value::Null);
    assert!(
        matches!(janitor_row["instance"].as_str(), Some("a" | "b")),
        "{body}"
    );
    let holder = janitor_row["instance"].as_str().unwrap_or_default();
    let holder_leases = body["members"]
        .as_array()
        .and_then(|m| m.iter().find(|m| m["id"] == holder).cloned())
        .map(|m| m["leases"].clone())
        .unwrap_or(Value::Null);
    assert!(
        holder_leases
            .as_array()
            .is_some_and(|l| l.iter().any(|l| l == "task:janitor")),
        "{body}"
    );
    let groups = body["groups"].as_array().cloned().unwrap_or_default();
    let distributor = groups
        .iter()
        .find(|g| g["group"] == "distributor" && g["stream"] == "trades:BTC-PERPETUAL")
        .unwrap_or_else(|| panic!("no distributor group in {body}"));
    let names: Vec<&str> = distributor["consumers"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|c| c["name"].as_str())
        .collect();
    assert_eq!(
        names,
        ["a", "b"],
        "each instance's consumer goes by its instance id: {body}"
    );
    let missing = http
        .get(format!("http://{}/api/clusters", server.addr()))
        .bearer_auth("t")
        .send()
        .await
        .unwrap();
    assert_eq!(missing.status(), 404);

    // An instance that stops leaves at once; the other runs every interval.
    a.shutdown().await;
    eventually("b sees a leave", WAIT, || live_members(&view(&b)) == ["b"]).await;
    let gone = view(&b);
    assert!(
        gone["members"]
            .as_array()
            .is_some_and(|m| m.iter().all(|m| m["id"] != "a")),
        "a left, it did not merely fall silent: {gone}"
    );
    let (runs, elsewhere) = janitor(&b);
    let from = slot_now();
    eventually("six more intervals", WAIT, || slot_now() >= from + 6).await;
    let (runs_after, elsewhere_after) = janitor(&b);
    assert!(
        runs_after - runs >= 5,
        "b ran {} of the last 6 intervals",
        runs_after - runs
    );
    assert_eq!(elsewhere_after, elsewhere, "nobody else took one");
    b.shutdown().await;
}

#[tokio::test]
async fn a_silent_member_a_duplicate_id_and_an_operators_run_are_shown_for_what_they_are() {
    let db = TestDb::create().await;
    let prefix = TestPrefix::new();
    // An instance killed without leaving: its last heartbeat 30 s ago, and the
    // janitor's current interval taken by it.
    let client = redis::Client::open(format!("redis://127.0.0.1:{REDIS_PORT}/0")).unwrap();
    let mut conn = client.get_multiplexed_async_connection().await.unwrap();
    let now_ms = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64);
    let _: () = redis::cmd("ZADD")
        .arg(format!("{}cluster:members", prefix.prefix))
        .arg(now_ms - 30_000)
        .arg("ghost")
        .query_async(&mut conn)
        .await
        .unwrap();

    let mut config = instance(&db, &prefix, "b");
    // An hour's interval: the ghost took this one, so it does not run here.
    config.schedule.janitor_every = Duration::from_secs(3600);
    let hour_slot = (now_ms as u64) / 3_600_000;
    let _: () = redis::cmd("SET")
        .arg(format!("{}cluster:task:janitor", prefix.prefix))
        .arg(format!("{hour_slot}:ghost"))
        .query_async(&mut conn)
        .await
        .unwrap();
    let b = Runtime::from_config(&config).start().await.unwrap();
    let seen = eventually_some("b's first heartbeat", WAIT, || {
        let v = view(&b);
        async move { (v["heartbeat"] == "ok").then_some(v) }
    })
    .await;
    let ghost = seen["members"]
        .as_array()
        .and_then(|m| m.iter().find(|m| m["id"] == "ghost").cloned())
        .unwrap_or_else(|| panic!("no ghost in {seen}"));
    assert_eq!(ghost["live"], false, "{seen}");
    assert!(ghost["heartbeat_age_ms"].as_i64().unwrap_or(0) >= 30_000);
    assert_eq!(live_members(&seen), ["b"]);
    let janitor_row = seen["tasks"]
        .as_array()
        .and_then(|t| t.iter().find(|t| t["task"] == tree::JANITOR).cloned())
        .unwrap_or(Value::Null);
    assert_eq!(janitor_row["instance"], "ghost", "{seen}");
    assert_eq!(
        janitor_row["interval_start_ms"].as_u64(),
        Some(hour_slot * 3_600_000)
    );

    // Another process starts heartbeating under b's id: b says so.
    assert_eq!(seen["duplicate_id"], false, "{seen}");
    let _: () = redis::cmd("SET")
        .arg(format!("{}cluster:member:b", prefix.prefix))
        .arg(r#"{"host":"elsewhere","pid":1}"#)
        .query_async(&mut conn)
        .await
        .unwrap();
    eventually("b sees another process under its id", WAIT, || {
        view(&b)["duplicate_id"] == true
    })
    .await;

    // The operator's run goes ahead here whoever took the interval.
    keel_core::scheduler::run_now(b.registry(), tree::SCHEDULER, tree::JANITOR)
        .await
        .unwrap();
    eventually("the requested run", WAIT, || janitor(&b).0 == 1).await;
    b.shutdown().await;
}

const INSTRUMENTS: [&str; 4] = [
    "BTC-PERPETUAL",
    "ETH-PERPETUAL",
    "BTC-25JUN27-100000-C",
    "BTC-25JUN27-110000-C",
];

/// Instruments whose lease `actor` (the receiver or the analyzer) holds.
fn holding(handle: &RuntimeHandle, actor: &str) -> Vec<String> {
    let leases = handle
        .tree()
        .actor(actor)
        .and_then(|a| a.details.get("leases").cloned())
        .unwrap_or(Value::Null);
    leases["held"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|h| h["releasing"] == false)
        .filter_map(|h| h["instrument"].as_str().map(str::to_owned))
        .collect()
}

/// Instruments whose receiver lease `handle` holds.
fn held(handle: &RuntimeHandle) -> Vec<String> {
    holding(handle, tree::RECEIVER)
}

/// Waits until every instrument's stream holds 60 more trades than now.
async fn trades_flow(prefix: &TestPrefix, what: &str) {
    let mut before = Vec::new();
    for i in INSTRUMENTS {
        before.push(stream_seqs(prefix, i).await.len());
    }
    eventually_some(what, WAIT, || {
        let before = before.clone();
        async move {
            for (i, n) in INSTRUMENTS.iter().zip(before) {
                if stream_seqs(prefix, i).await.len() <= n + 60 {
                    return None;
                }
            }
            Some(())
        }
    })
    .await;
}

/// Instruments whose analyzer lease `handle` holds.
fn analyzed(handle: &RuntimeHandle) -> Vec<String> {
    holding(handle, tree::ANALYZER)
}

/// Every `trade_seq` in `instrument`'s stream, in stream order.
async fn stream_seqs(prefix: &TestPrefix, instrument: &str) -> Vec<i64> {
    stream(prefix, instrument).await.0
}

/// `instrument`'s stream: every `trade_seq`, and every entry's fencing token,
/// in stream order.
async fn stream(prefix: &TestPrefix, instrument: &str) -> (Vec<i64>, Vec<u64>) {
    let client = redis::Client::open(format!("redis://127.0.0.1:{REDIS_PORT}/0")).unwrap();
    let mut conn = client.get_multiplexed_async_connection().await.unwrap();
    type Entry = (String, Vec<(String, String)>);
    let entries: Vec<Entry> = redis::cmd("XRANGE")
        .arg(format!("{}trades:{instrument}", prefix.prefix))
        .arg("-")
        .arg("+")
        .query_async(&mut conn)
        .await
        .unwrap();
    let mut seqs = Vec::new();
    let mut tokens = Vec::new();
    for (_, fields) in entries {
        for (name, value) in fields {
            if name == "k" {
                tokens.push(value.parse().unwrap());
                continue;
            }
            let parsed: Value = serde_json::from_str(&value).unwrap();
            let trades = match name.as_str() {
                "b" => parsed.as_array().cloned().unwrap_or_default(),
                "t" => vec![parsed],
                _ => continue,
            };
            seqs.extend(trades.iter().filter_map(|t| t["trade_seq"].as_i64()));
        }
    }
    (seqs, tokens)
}

fn receiving(
    db: &TestDb,
    prefix: &TestPrefix,
    sim: &keel_deribit::sim::SimHandle,
    id: &str,
) -> Config {
    let mut config = config(db, prefix, Some(sim));
    config.receiver.instruments = INSTRUMENTS.map(str::to_owned).to_vec();
    // Two hosts: two consumers in each group.
    config.distributor.consumer = id.into();
    config.analyzer.consumer = id.into();
    config.cluster.enabled = true;
    config.cluster.instance = id.into();
    config.schedule.instruments_at_boot = false;
    config
}

#[tokio::test]
async fn each_instrument_is_received_and_folded_by_one_instance_and_one_that_leaves_hands_it_over()
{
    let db = TestDb::create().await;
    let prefix = TestPrefix::new();
    let sim = keel_deribit::sim::start(keel_deribit::sim::SimConfig {
        listen: "127.0.0.1:0".parse().unwrap(),
        instruments: INSTRUMENTS.map(str::to_owned).to_vec(),
        // Trading starts once the first instance listens: what an exchange
        // traded before Keel ever subscribed is not Keel's to store.
        trades_per_sec: 0.0,
        client_id: Some("k".into()),
        client_secret: Some(keel_core::secret::Secret::new("s")),
        min_heartbeat: Duration::from_secs(1),
        ..keel_deribit::sim::SimConfig::default()
    })
    .await
    .unwrap();
    let a = Runtime::from_config(&receiving(&db, &prefix, &sim, "a"))
        .start()
        .await
        .unwrap();
    eventually("a alone receives and folds every instrument", WAIT, || {
        held(&a).len() == 4 && analyzed(&a).len() == 4 && sim.stats().subscriptions == 4
    })
    .await;
    sim.set_rate(200.0);
    let b = Runtime::from_config(&receiving(&db, &prefix, &sim, "b"))
        .start()
        .await
        .unwrap();
    // b joins: the instruments b is the choice for move to it, the rest stay.
    eventually("the instruments split between a and b", WAIT, || {
        let (on_a, on_b) = (held(&a), held(&b));
        !on_a.is_empty()
            && !on_b.is_empty()
            && on_a.len() + on_b.len() == 4
            && on_a.iter().all(|i| !on_b.contains(i))
    })
    .await;
    eventually("one subscription per instrument across both", WAIT, || {
        let stats = sim.stats();
        stats.subscriptions == 4 && stats.subscribers.values().all(|&n| n == 1)
    })
    .await;
    eventually("the folding splits too", WAIT, || {
        let (on_a, on_b) = (analyzed(&a), analyzed(&b));
        !on_b.is_empty() && on_a.len() + on_b.len() == 4 && on_a.iter().all(|i| !on_b.contains(i))
    })
    .await;
    let at_split = (held(&a), held(&b));
    trades_flow(&prefix, "trades flow on every stream").await;
    assert_eq!((held(&a), held(&b)), at_split, "no flapping");

    // a leaves: it releases its leases, and b takes them at its next round.
    a.shutdown().await;
    eventually("b receives every instrument", WAIT, || {
        held(&b).len() == 4 && sim.stats().subscriptions == 4
    })
    .await;
    trades_flow(&prefix, "trades flow on every stream from b").await;

    // Never written twice: each trade is in its stream once, in order, and
    // every entry under a lease, its token never going back.
    for instrument in INSTRUMENTS {
        let (seqs, tokens) = stream(&prefix, instrument).await;
        assert!(
            seqs.windows(2).all(|w| w[0] < w[1]),
            "{instrument}: a trade_seq repeated or went back: {seqs:?}"
        );
        assert!(
            !tokens.is_empty() && tokens.windows(2).all(|w| w[0] <= w[1]),
            "{instrument}: {tokens:?}"
        );
    }

    // The analyzer's leases went the same way: b folds every instrument now.
    eventually("b folds every instrument", WAIT, || analyzed(&b).len() == 4).await;

    // The handovers' holes were recorded; once repaired, every trade the
    // exchange made is stored once, and every candle equals the SQL aggregate
    // of the stored trades: no instrument was folded by two analyzers out of
    // order.
    sim.set_rate(0.0);
    let client = db.client().await;
    let mut last = -1;
    let mut quiet = 0;
    let deadline = tokio::time::Instant::now() + WAIT;
    while quiet < 3 {
        let now = conservation::total(&client, &INSTRUMENTS).await;
        quiet = if now == last { quiet + 1 } else { 0 };
        last = now;
        assert!(tokio::time::Instant::now() < deadline, "never settled");
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    // Before any repair: every candle holds exactly the trades stored.
    assert_eq!(
        conservation::candles_mismatched(&client).await,
        0,
        "candles folded by the two analyzers equal the SQL aggregate of the stored trades"
    );
    let report = b.shutdown().await;
    assert!(report.drained(), "{report:?}");
    let config_b = receiving(&db, &prefix, &sim, "b");
    assert_eq!(
        conservation::repair(&config_b, WAIT).await,
        keel::TaskOutcome::Succeeded
    );
    let total = conservation::assert_exactly_once(&client, &sim, &INSTRUMENTS).await;
    assert!(total > 400, "enough trades ({total})");
    assert_eq!(
        conservation::candles_mismatched(&client).await,
        0,
        "candles equal the SQL aggregate of the stored trades"
    );
    sim.stop().await;
}
