//! Keel on hosts of its own: three instances in network namespaces sharing one
//! Redis and one PostgreSQL on a fourth, the exchange reachable from all.
//! While trades flow, one instance is killed with SIGKILL, one is cut from
//! Redis and PostgreSQL for 30 s and comes back, a fourth joins, and one is
//! paused (SIGSTOP) past its leases' TTL and resumed. Then every
//! trade the exchange made is stored once, candles equal the SQL aggregate, no
//! instrument was subscribed by two instances for longer than one lease TTL,
//! and no stream entry was written under an older token than one before it.
//! Needs root (`ip netns`); says why and passes vacuously where it cannot.

mod common;

use std::collections::BTreeMap;
use std::process::Stdio;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::conservation;
use common::hosts::Hosts;
use common::process::{Keel, KEEL};
use keel_deribit::sim::{self, SimConfig, SimHandle};
use serde_json::Value;

const INSTRUMENTS: [&str; 4] = [
    "BTC-PERPETUAL",
    "ETH-PERPETUAL",
    "BTC-25JUN27-100000-C",
    "BTC-25JUN27-110000-C",
];
/// The default `[cluster] lease_ttl`.
const LEASE_TTL: Duration = Duration::from_secs(10);
const WAIT: Duration = Duration::from_secs(60);

/// Node `n`'s configuration: the defaults, with only addresses and its
/// instance id set (and the exchange outside the daemon).
fn node_config(hosts: &Hosts, sim: &SimHandle, n: usize) -> std::path::PathBuf {
    let (db, exchange) = (hosts.db_from(n), hosts.here_from(n));
    let port = sim.addr().port();
    let instruments: Vec<String> = INSTRUMENTS.iter().map(|i| format!("\"{i}\"")).collect();
    let text = format!(
        r#"
[postgres]
url = "postgres://postgres@{db}:5432/keel"
[redis]
url = "redis://{db}:6379/0"
[sim]
in_daemon = false
[receiver]
url = "ws://{exchange}:{port}/ws/api/v2"
instruments = [{instruments}]
[backfill]
http_url = "http://{exchange}:{port}"
[cluster]
enabled = true
instance = "node{n}"
"#,
        instruments = instruments.join(", ")
    );
    let path = hosts.dir.path().join(format!("node{n}.toml"));
    std::fs::write(&path, text).expect("config");
    path
}

/// `keel ARGS` in node `n`'s namespace, its log in the test's directory.
fn keel(hosts: &Hosts, sim: &SimHandle, n: usize, args: &[&str]) -> Keel {
    let config = node_config(hosts, sim, n);
    let log = std::fs::File::create(hosts.dir.path().join(format!("node{n}.log"))).expect("log");
    Hosts::command(&hosts.node(n), KEEL)
        .args(args)
        .arg("--config")
        .arg(&config)
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .map(Keel)
        .expect("keel starts")
}

/// Who holds each instrument's lease of `kind`, as Redis says.
async fn holders(conn: &mut redis::aio::MultiplexedConnection, kind: &str) -> Vec<Option<String>> {
    let mut out = Vec::new();
    for i in INSTRUMENTS {
        let v: Option<String> = redis::cmd("GET")
            .arg(format!("keel:cluster:lease:{kind}:{i}"))
            .query_async(conn)
            .await
            .unwrap_or(None);
        out.push(v.and_then(|v| v.rsplit_once(':').map(|(who, _)| who.to_owned())));
    }
    out
}

async fn poll<T, F: std::future::Future<Output = Option<T>>>(
    what: &str,
    mut probe: impl FnMut() -> F,
) -> T {
    let deadline = Instant::now() + WAIT;
    loop {
        if let Some(v) = probe().await {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for: {what}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_hosts_share_the_work_and_losing_one_loses_nothing() {
    let mut hosts = match Hosts::create() {
        Ok(hosts) => hosts,
        Err(why) => {
            eprintln!("SKIPPED: network namespaces cannot be made here: {why}");
            return;
        }
    };
    for n in 1..=3 {
        hosts.add_node(n).expect("a node namespace");
    }
    hosts.start_redis();
    hosts.start_postgres();
    let db_host = hosts.db_from_here();
    let pg_url = format!("host={db_host} port=5432 user=postgres dbname=postgres");
    let admin = poll("PostgreSQL on the database host", || {
        let url = pg_url.clone();
        async move {
            let (client, conn) = tokio_postgres::connect(&url, tokio_postgres::NoTls)
                .await
                .ok()?;
            tokio::spawn(conn);
            Some(client)
        }
    })
    .await;
    admin.batch_execute("CREATE DATABASE keel").await.unwrap();
    let redis_client = redis::Client::open(format!("redis://{db_host}:6379/0")).unwrap();
    let mut conn = poll("Redis on the database host", || {
        let c = redis_client.clone();
        async move { c.get_multiplexed_async_connection().await.ok() }
    })
    .await;
    let sim = sim::start(SimConfig {
        listen: "0.0.0.0:0".parse().unwrap(),
        instruments: INSTRUMENTS.map(str::to_owned).to_vec(),
        trades_per_sec: 0.0,
        ..SimConfig::default()
    })
    .await
    .unwrap();

    let mut nodes: BTreeMap<usize, Keel> = BTreeMap::new();
    for n in 1..=3 {
        nodes.insert(n, keel(&hosts, &sim, n, &["run"]));
    }
    poll("every instrument received and folded, once each", || {
        let stats = sim.stats();
        let mut c = conn.clone();
        async move {
            let ok = holders(&mut c, "receiver")
                .await
                .iter()
                .all(Option::is_some)
                && holders(&mut c, "analyzer")
                    .await
                    .iter()
                    .all(Option::is_some)
                && stats.subscribers.len() == 4
                && stats.subscribers.values().all(|&n| n == 1);
            ok.then_some(())
        }
    })
    .await;
    sim.set_rate(400.0);

    // Watch the exchange: how long any trade channel had two subscribers.
    let watching = Arc::new(AtomicBool::new(true));
    let watcher = {
        let url = format!("http://127.0.0.1:{}/sim/stats", sim.addr().port());
        let watching = Arc::clone(&watching);
        tokio::spawn(async move {
            let http = reqwest::Client::new();
            let mut since: BTreeMap<String, Instant> = BTreeMap::new();
            let mut longest = Duration::ZERO;
            while watching.load(Ordering::Relaxed) {
                let stats: Value = match http.get(&url).send().await {
                    Ok(r) => serde_json::from_str(&r.text().await.unwrap_or_default())
                        .unwrap_or(Value::Null),
                    Err(_) => Value::Null,
                };
                let now = Instant::now();
                let doubled: Vec<String> = stats["subscribers"]
                    .as_object()
                    .into_iter()
                    .flatten()
                    .filter(|(_, n)| n.as_u64().unwrap_or(0) > 1)
                    .map(|(c, _)| c.clone())
                    .collect();
                since.retain(|c, _| doubled.contains(c));
                for channel in doubled {
                    let from = *since.entry(channel).or_insert(now);
                    longest = longest.max(now - from);
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            longest
        })
    };
    tokio::time::sleep(Duration::from_secs(5)).await;

    // SIGKILL node 1: its leases expire and the others take them over.
    if let Some(mut one) = nodes.remove(&1) {
        one.0.kill().unwrap();
        one.0.wait().unwrap();
    }
    poll("node1's instruments taken over", || {
        let mut c = conn.clone();
        async move {
            let r = holders(&mut c, "receiver").await;
            let a = holders(&mut c, "analyzer").await;
            let ok = r
                .iter()
                .chain(&a)
                .all(|h| h.as_deref().is_some_and(|h| h != "node1"));
            ok.then_some(())
        }
    })
    .await;

    // Cut node 2 from Redis and PostgreSQL for 30 s; it still hears the exchange.
    hosts.database_link(2, false);
    tokio::time::sleep(Duration::from_secs(30)).await;
    hosts.database_link(2, true);

    // A fourth host joins and takes its share.
    hosts.add_node(4).expect("a fourth node");
    nodes.insert(4, keel(&hosts, &sim, 4, &["run"]));
    poll("node4 takes a share", || {
        let mut c = conn.clone();
        async move {
            let r = holders(&mut c, "receiver").await;
            r.iter()
                .any(|h| h.as_deref() == Some("node4"))
                .then_some(())
        }
    })
    .await;
    tokio::time::sleep(Duration::from_secs(5)).await;

    // Pause node 3 (SIGSTOP) past its leases' TTL: the others take its
    // instruments over; resumed, it writes nothing under the tokens it had.
    if let Some(three) = nodes.get(&3) {
        common::process::signal(three, "STOP");
        tokio::time::sleep(LEASE_TTL + Duration::from_secs(5)).await;
        common::process::signal(three, "CONT");
    }
    tokio::time::sleep(Duration::from_secs(5)).await;

    // Stop trading, let the pipeline settle, stop every instance.
    sim.set_rate(0.0);
    let keel_db = {
        let url = format!("host={db_host} port=5432 user=postgres dbname=keel");
        let (client, c) = tokio_postgres::connect(&url, tokio_postgres::NoTls)
            .await
            .unwrap();
        tokio::spawn(c);
        client
    };
    let mut last = -1;
    let mut quiet = 0;
    let deadline = Instant::now() + WAIT;
    while quiet < 4 {
        let now = conservation::total(&keel_db, &INSTRUMENTS).await;
        quiet = if now == last { quiet + 1 } else { 0 };
        last = now;
        assert!(Instant::now() < deadline, "the pipeline never settled");
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    watching.store(false, Ordering::Relaxed);
    let longest = watcher.await.unwrap();
    for (_, mut node) in nodes {
        common::process::signal(&node, "TERM");
        let status = common::process::wait_exit(&mut node, Duration::from_secs(30));
        assert!(
            status.success(),
            "a node did not shut down cleanly: {status}"
        );
    }

    // Repair the takeovers' holes, as the scheduler would.
    let mut repair = keel(&hosts, &sim, 3, &["task", "backfill", "--gaps"]);
    let status = common::process::wait_exit(&mut repair, WAIT);
    assert!(status.success(), "gap repair: {status}");

    let total = conservation::assert_exactly_once(&keel_db, &sim, &INSTRUMENTS).await;
    assert!(total > 10_000, "enough trades ({total})");
    assert_eq!(
        conservation::candles_mismatched(&keel_db).await,
        0,
        "candles equal the SQL aggregate of the stored trades"
    );
    assert!(
        longest <= LEASE_TTL,
        "an instrument had two subscribers for {longest:?}"
    );
    // No entry under a stale token: along each stream the tokens never go back.
    let mut taken_over = 0;
    for instrument in INSTRUMENTS {
        type Entry = (String, Vec<(String, String)>);
        let entries: Vec<Entry> = redis::cmd("XRANGE")
            .arg(format!("keel:trades:{instrument}"))
            .arg("-")
            .arg("+")
            .query_async(&mut conn)
            .await
            .unwrap();
        let tokens: Vec<u64> = entries
            .iter()
            .filter_map(|(_, f)| f.iter().find(|(k, _)| k == "k"))
            .map(|(_, v)| v.parse().unwrap())
            .collect();
        assert_eq!(
            tokens.len(),
            entries.len(),
            "{instrument}: every entry fenced"
        );
        assert!(
            tokens.windows(2).all(|w| w[0] <= w[1]),
            "{instrument}: an entry under an older token: {tokens:?}"
        );
        if tokens.last() > tokens.first() {
            taken_over += 1;
        }
    }
    assert!(taken_over >= 1, "some instrument changed hands");
    let log = |n: usize| {
        std::fs::read_to_string(hosts.dir.path().join(format!("node{n}.log"))).unwrap_or_default()
    };
    eprintln!(
        "node2 after the cut: {} lost leases logged; node3 after the pause: {} fenced writes; \
         longest double subscription {longest:?}",
        log(2).matches("no longer").count(),
        log(3).matches("writes were refused").count(),
    );
    sim.stop().await;
}
