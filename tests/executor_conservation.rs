//! The conservation run for the executor, in a test binary of its
//! own: it runs the `keel` binary for about two minutes through every fault,
//! and the other executor tests, with their own time bounds, should not share
//! the machine with it.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use common::executor::*;
use common::redis::TestPrefix;
use common::{daemon, eventually_some};
use keel_deribit::sim::Fault;

/// The conservation run: 2,000 intents (places, amends and cancels)
/// from a driver while answers are dropped, the session is cut, Redis and
/// PostgreSQL are each down for 20 s and the `keel` binary is killed with
/// SIGKILL and started again. Afterwards every label has exactly one order on
/// the simulator, in the state PostgreSQL holds, and every simulator fill is
/// stored once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn thousands_of_intents_through_every_fault_at_once_are_each_one_order() {
    use common::pg_cluster::PrivatePg;
    use common::process::{closed_port, signal, spawn_keel, wait_exit, write_config};
    use common::redis::PrivateRedis;
    const PLACES: usize = 2000;
    const OUTAGE: Duration = Duration::from_secs(20);
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
    let conf = tempfile::tempdir().unwrap();
    // The default configuration but for addresses and the executor's account.
    let config = write_config(
        conf.path(),
        &format!(
            "[sim]\nin_daemon = false\n[receiver]\nenabled = false\n[distributor]\nenabled = false\n\
             [analyzer]\nenabled = false\n[schedule]\nenabled = false\n\
             [admin]\nlisten = \"127.0.0.1:{}\"\n[postgres]\nurl = \"{}\"\n\
             [redis]\nurl = \"redis://127.0.0.1:{}/0\"\nkey_prefix = \"{}\"\n\
             [executor]\nenabled = true\nurl = \"{}\"\nclient_id = \"k\"\nclient_secret = \"s\"\n\
             [executor.instruments.BTC-PERPETUAL]\nmax_amount = 1000.0\nmax_position = 1000000.0\nprice_band = 0.2\n",
            closed_port(),
            pg.url(),
            redis.port,
            prefix.prefix,
            sim.ws_url()
        ),
    );
    let (bid, ask) = {
        let mut ws = exchange(&sim).await;
        best(&mut ws).await
    };
    let intents = format!("{}orders:intents", prefix.prefix);
    let (mut keel, lines) = spawn_keel(&["run"], &config);
    let deadline = std::time::Instant::now() + WAIT;
    let mut said = Vec::new();
    while !said
        .iter()
        .any(|l: &String| l.contains("Executor trading."))
    {
        said.extend(lines.try_iter());
        if let Ok(Some(status)) = keel.0.try_wait() {
            panic!("keel ended ({status}) before trading: {said:#?}");
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no executor session: {said:#?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Keel's log goes with the test's output (shown when it fails).
    let echo = |lines: std::sync::mpsc::Receiver<String>, run: &'static str| {
        std::thread::spawn(move || {
            for line in lines {
                eprintln!("keel {run}: {line}");
            }
        })
    };
    echo(lines, "1");

    let mut driver = Driver {
        intents,
        bid,
        ask,
        labels: Vec::new(),
        resting: Default::default(),
    };
    let mut conn = redis.client().get_connection().unwrap();
    sim.inject(&Fault::DropOrderAnswers { count: 5 }).unwrap();
    driver.send(&mut conn, 300).await;
    sim.inject(&Fault::Disconnect).unwrap();
    driver.send(&mut conn, 300).await;
    // Redis down with intents in hand: the strategy cannot write either.
    redis.stop();
    tokio::time::sleep(OUTAGE).await;
    redis.resume();
    let mut conn = redis.client().get_connection().unwrap();
    driver.send(&mut conn, 300).await;
    // PostgreSQL down: intents arrive and wait; nothing is sent unrecorded.
    pg.stop();
    driver.send(&mut conn, 400).await;
    pg.resume();
    driver.send(&mut conn, 200).await;
    // Killed mid-stream with answers lost around it, then started again.
    sim.inject(&Fault::DropOrderAnswers { count: 5 }).unwrap();
    driver.send(&mut conn, 100).await;
    signal(&keel, "KILL");
    drop(keel);
    let (mut keel, lines) = spawn_keel(&["run"], &config);
    echo(lines, "2");
    let rest = PLACES - driver.labels.len();
    driver.send(&mut conn, rest).await;
    let labels = driver.labels;
    // What rests is cancelled once every order has its exchange's answer.
    settled(&pg, &labels).await;
    xadd(
        &mut conn,
        &driver.intents,
        &[("action", "cancel_all".into())],
    );

    let client = pg.client().await;
    let orders = eventually_some(
        "every intent terminal",
        Duration::from_secs(180),
        || async {
            let orders = stored(&client).await;
            let open = labels
                .iter()
                .filter(|l| !orders.get(*l).is_some_and(|(s, _)| rank_terminal(s)))
                .count();
            (open == 0).then_some(orders)
        },
    )
    .await;
    // The driver keeps under Keel's own limits: nothing was refused.
    let refused: BTreeMap<String, String> = client
        .query(
            "SELECT label, coalesce(reason, '') FROM orders WHERE reject_code = 0",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    assert!(refused.is_empty(), "refused by Keel: {refused:?}");
    let reasons: BTreeMap<String, String> = client
        .query("SELECT label, coalesce(reason, '') FROM orders", &[])
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    let ledger = sim.ledger();
    for label in &labels {
        let found = ledger.orders.get(label).map_or(&[][..], Vec::as_slice);
        if reasons[label] == "cancelled before it reached the exchange" {
            // Cancelled by the strategy while it waited to be sent.
            assert!(found.is_empty(), "{label}: {found:?}");
            continue;
        }
        assert_eq!(
            found.len(),
            1,
            "{label}: {} orders on the exchange; here {:?}, {}",
            found.len(),
            orders[label],
            reasons[label]
        );
        assert_eq!(orders[label].0, found[0].order_state.as_str(), "{label}");
        let theirs = found[0].filled_amount.unwrap_or(0.0);
        assert!(
            (orders[label].1 - theirs).abs() < 1e-9,
            "{label}: filled {} here, {theirs} there",
            orders[label].1,
        );
    }
    assert!(
        ledger.orders.keys().all(|l| reasons.contains_key(l)),
        "no order Keel did not ask for"
    );
    let fills: BTreeSet<String> = client
        .query("SELECT trade_id FROM fills", &[])
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    let theirs: BTreeSet<String> = ledger.fills.iter().map(|t| t.trade_id.clone()).collect();
    assert_eq!(ledger.fills.len(), theirs.len());
    assert!(theirs.len() > PLACES / 3, "the crossing orders traded");
    assert_eq!(fills, theirs, "every fill stored once");
    signal(&keel, "TERM");
    assert!(wait_exit(&mut keel.0, WAIT).success());
}

/// Writes intents as a strategy would, 20 places a second (under the
/// account's 30/s matching budget): one place in three rests far from the
/// market, the others cross at once, buying and selling in turn. It keeps at
/// most 30 resting (under the default `max_open_orders`, 50) by cancelling the
/// oldest, and every twentieth intent amends the newest.
struct Driver {
    intents: String,
    bid: f64,
    ask: f64,
    labels: Vec<String>,
    resting: std::collections::VecDeque<String>,
}

impl Driver {
    async fn send(&mut self, conn: &mut redis::Connection, n: usize) {
        let (bid, ask) = (self.bid, self.ask);
        for _ in 0..n {
            let i = self.labels.len();
            let label = format!("c-{i:04}");
            let fields = match i % 3 {
                0 => {
                    self.resting.push_back(label.clone());
                    place(&label, "buy", 10.0, bid - 2000.0, "good_til_cancelled")
                }
                1 => place(&label, "buy", 10.0, ask + 100.0, "immediate_or_cancel"),
                _ => place(&label, "sell", 10.0, bid - 100.0, "immediate_or_cancel"),
            };
            xadd(conn, &self.intents, &fields);
            self.labels.push(label);
            if self.resting.len() > 30 {
                if let Some(oldest) = self.resting.pop_front() {
                    xadd(
                        conn,
                        &self.intents,
                        &[("action", "cancel".into()), ("label", oldest)],
                    );
                }
            }
            if i % 20 == 19 {
                if let Some(newest) = self.resting.back() {
                    let change = [
                        ("action", "amend".into()),
                        ("label", newest.clone()),
                        ("price", (bid - 2500.0).to_string()),
                    ];
                    xadd(conn, &self.intents, &change);
                }
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}
