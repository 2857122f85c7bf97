//! Several instances sharing one Redis and one PostgreSQL: membership and the
//! scheduled tasks, one instance per interval.

mod common;

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

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
    assert_eq!(
        distributor["consumers"].as_array().map(Vec::len),
        Some(1),
        "both instances are one process here, so one consumer name: {body}"
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
async fn an_instance_that_stopped_heartbeating_is_shown_silent_and_an_operators_run_goes_ahead() {
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

    // The operator's run goes ahead here whoever took the interval.
    keel_core::scheduler::run_now(b.registry(), tree::SCHEDULER, tree::JANITOR)
        .await
        .unwrap();
    eventually("the requested run", WAIT, || janitor(&b).0 == 1).await;
    b.shutdown().await;
}
