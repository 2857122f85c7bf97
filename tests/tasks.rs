//! The run-once tasks against real servers: instrument sync and the janitor.

mod common;

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use common::daemon::config;
use common::db::TestDb;
use common::eventually;
use common::market::{at, trades};
use common::redis::TestPrefix;
use keel::config::Config;
use keel::{tree, Runtime, TaskOutcome};
use keel_actors::resource::pg::PgClient;
use keel_actors::resource::redis::{Fields, RedisClient};
use keel_actors::service::task::{RunOnce, TaskError, TaskWork};
use keel_core::child::Incarnation;
use keel_core::scheduler::{Job, Scheduler, SchedulerArgs};
use keel_deribit::sim::{self, SimConfig};

const WAIT: Duration = Duration::from_secs(20);

/// An `XRANGE` reply entry: id and field/value pairs.
type RangeEntry = (String, Vec<(String, Vec<u8>)>);

/// Runs `keel task NAME` in-process; returns how it ended.
async fn run_task(config: &Config, command: &str) -> TaskOutcome {
    let runtime = Runtime::new(config.supervisor.clone());
    let words: Vec<&str> = command.split_whitespace().collect();
    let request = tree::TaskRequest::parse(&words).unwrap();
    let specs = tree::task(config, runtime.registry(), &request).unwrap();
    let task = specs.last().unwrap().name.clone();
    let handle = specs
        .into_iter()
        .fold(runtime, Runtime::child)
        .start()
        .await
        .unwrap();
    let outcome = tokio::time::timeout(WAIT, handle.task_outcome(&task))
        .await
        .unwrap();
    handle.shutdown().await;
    outcome
}

async fn count(db: &TestDb, sql: &str) -> i64 {
    db.client().await.query_one(sql, &[]).await.unwrap().get(0)
}

#[tokio::test]
async fn instrument_sync_upserts_the_listing_and_deactivates_what_disappeared() {
    let db = TestDb::create().await;
    let prefix = TestPrefix::new();
    let sim = sim::start(SimConfig {
        listen: "127.0.0.1:0".parse().unwrap(),
        ..SimConfig::default()
    })
    .await
    .unwrap();
    let config = config(&db, &prefix, Some(&sim));
    assert_eq!(
        run_task(&config, "instruments").await,
        TaskOutcome::Succeeded
    );
    // The simulator lists 7: both perpetuals and BTC/ETH futures and options.
    let listed = sim.instruments().len() as i64;
    assert_eq!(
        count(&db, "SELECT count(*) FROM instruments WHERE is_active").await,
        listed
    );
    assert_eq!(
        count(
            &db,
            "SELECT count(*) FROM instruments WHERE kind = 'option'"
        )
        .await,
        2
    );

    // An instrument the exchange no longer lists is kept, but inactive.
    db.client()
        .await
        .batch_execute(
            "INSERT INTO instruments VALUES ('BTC-27DEC19', 'future', 'BTC', 'USD', 2.5, 10, 10,
             now() - interval '2 years', now() - interval '1 year', true, NULL, NULL, now())",
        )
        .await
        .unwrap();
    assert_eq!(
        run_task(&config, "instruments").await,
        TaskOutcome::Succeeded
    );
    assert_eq!(
        count(&db, "SELECT count(*) FROM instruments WHERE instrument_name = 'BTC-27DEC19' AND NOT is_active").await,
        1
    );
    assert_eq!(
        count(&db, "SELECT count(*) FROM instruments WHERE is_active").await,
        listed
    );
    // A third run changes nothing.
    assert_eq!(
        run_task(&config, "instruments").await,
        TaskOutcome::Succeeded
    );
    assert_eq!(
        count(&db, "SELECT count(*) FROM instruments").await,
        listed + 1
    );
    sim.stop().await;
}

#[tokio::test]
async fn the_janitor_keeps_what_is_young_or_still_needed_and_running_it_twice_is_harmless() {
    let db = TestDb::create().await;
    let prefix = TestPrefix::new();
    let config = config(&db, &prefix, None);
    // A tree with the resources only, to set the scene through the actors.
    let mut scene = config.clone();
    scene.receiver.enabled = false;
    scene.distributor.enabled = false;
    scene.analyzer.enabled = false;
    let handle = Runtime::from_config(&scene).start().await.unwrap();
    let pg = PgClient::new(handle.registry().clone(), tree::PG);
    let redis = RedisClient::new(handle.registry().clone(), tree::REDIS);
    eventually("pg ready", WAIT, || {
        handle
            .tree()
            .actor(tree::PG)
            .and_then(|a| a.details.get("status").cloned())
            == Some("ready".into())
    })
    .await;

    // 100 old trades (2023) and 10 from now.
    pg.insert_trades(trades("BTC-PERPETUAL", 0..100).into())
        .await
        .unwrap();
    let mut young = trades("BTC-PERPETUAL", 100..110);
    for t in &mut young {
        t.timestamp = SystemTime::now();
    }
    pg.insert_trades(young.into()).await.unwrap();
    let mut old_candle = common::market::candle("BTC-PERPETUAL", 0, 1.0);
    old_candle.bucket = at(1_500_000_000_000);
    pg.upsert_candles(vec![old_candle].into()).await.unwrap();

    // A stream both groups have read; the analyzer still has entries pending.
    let stream = "trades:BTC-PERPETUAL";
    let entries: Vec<Fields> = (0..10)
        .map(|i| vec![("t".to_owned(), vec![b'0' + i as u8])])
        .collect();
    let ids = redis.xadd_bulk(stream, Arc::from(entries)).await.unwrap();
    for group in ["distributor", "analyzer"] {
        redis.create_group(stream, group).await.unwrap();
        let read = redis
            .read_group(group, "c", &[stream.to_owned()], 100)
            .await
            .unwrap();
        assert_eq!(read[0].1.len(), 10);
    }
    redis.ack(stream, "distributor", ids.clone()).await.unwrap();
    redis
        .ack(stream, "analyzer", ids[..6].to_vec())
        .await
        .unwrap();
    handle.shutdown().await;

    assert_eq!(run_task(&config, "janitor").await, TaskOutcome::Succeeded);
    assert_eq!(
        count(&db, "SELECT count(*) FROM trades").await,
        10,
        "only the young trades remain"
    );
    assert_eq!(count(&db, "SELECT min(trade_seq) FROM trades").await, 100);
    assert_eq!(count(&db, "SELECT count(*) FROM candles").await, 0);
    let mut conn = prefix.connection();
    let key = format!("{}{stream}", prefix.prefix);
    let left: Vec<RangeEntry> = redis::cmd("XRANGE")
        .arg(&key)
        .arg("-")
        .arg("+")
        .query(&mut conn)
        .unwrap();
    let left_ids: Vec<&str> = left.iter().map(|(id, _)| id.as_str()).collect();
    assert_eq!(
        left_ids,
        ids[6..].iter().map(String::as_str).collect::<Vec<_>>(),
        "entries pending for the analyzer stay"
    );

    assert_eq!(run_task(&config, "janitor").await, TaskOutcome::Succeeded);
    assert_eq!(count(&db, "SELECT count(*) FROM trades").await, 10);
    let again: u64 = redis::cmd("XLEN").arg(&key).query(&mut conn).unwrap();
    assert_eq!(again, 4);
}

#[tokio::test]
async fn the_daemon_schedules_its_tasks_and_shows_them_under_the_scheduler() {
    let db = TestDb::create().await;
    let prefix = TestPrefix::new();
    let sim = sim::start(SimConfig {
        listen: "127.0.0.1:0".parse().unwrap(),
        ..SimConfig::default()
    })
    .await
    .unwrap();
    let mut config = config(&db, &prefix, Some(&sim));
    config.receiver.enabled = false;
    config.distributor.enabled = false;
    config.analyzer.enabled = false;
    config.schedule.janitor_every = Duration::from_millis(100);
    let handle = Runtime::from_config(&config).start().await.unwrap();

    // Instruments are synced at boot.
    let listed = sim.instruments().len() as i64;
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let synced = db
            .client()
            .await
            .query_one("SELECT count(*) FROM instruments", &[])
            .await
            .map(|r| r.get::<_, i64>(0))
            .unwrap_or(0);
        if synced == listed {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "instruments never synced"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // The janitor runs again and again, each run recorded in its entry.
    eventually("three janitor runs", WAIT, || {
        handle
            .tree()
            .actor(tree::JANITOR)
            .is_some_and(|a| a.messages_handled >= 3)
    })
    .await;
    let tree_now = handle.tree();
    for task in [tree::INSTRUMENTS, tree::JANITOR, tree::GAP_REPAIR] {
        let actor = tree_now.actor(task).expect("registered");
        assert_eq!(actor.parent.as_deref(), Some(tree::SCHEDULER), "{task}");
        assert!(
            actor.last_failure.is_none(),
            "{task}: {:?}",
            actor.last_failure
        );
    }
    let report = handle.shutdown().await;
    assert!(report.killed().next().is_none());
    sim.stop().await;
}

#[tokio::test]
async fn gap_repair_backs_off_when_the_exchange_says_too_many_requests() {
    let db = TestDb::create().await;
    let prefix = TestPrefix::new();
    let mut sim_config = SimConfig {
        listen: "127.0.0.1:0".parse().unwrap(),
        instruments: vec!["BTC-PERPETUAL".into()],
        trades_per_sec: 3_000.0,
        ..SimConfig::default()
    };
    // Two requests' worth of credits, refilled at two requests per second.
    sim_config.rate_limits.enabled = true;
    sim_config.rate_limits.max_credits = 1_000;
    sim_config.rate_limits.refill_per_sec = 1_000;
    let sim = sim::start(sim_config).await.unwrap();
    let deadline = tokio::time::Instant::now() + WAIT;
    while sim.stats().instruments["BTC-PERPETUAL"].last_trade_seq < 3_000 {
        assert!(tokio::time::Instant::now() < deadline);
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    sim.set_rate(0.0);
    let last = sim.stats().instruments["BTC-PERPETUAL"].last_trade_seq;
    let config = config(&db, &prefix, Some(&sim));

    // Trade 1 stored, everything after it missing: several pages to fetch.
    let mut scene = config.clone();
    scene.receiver.enabled = false;
    scene.distributor.enabled = false;
    scene.analyzer.enabled = false;
    scene.schedule.enabled = false;
    let handle = Runtime::from_config(&scene).start().await.unwrap();
    let pg = PgClient::new(handle.registry().clone(), tree::PG);
    let mut first = trades("BTC-PERPETUAL", 1..2);
    first[0].trade_id = "1000000001".into();
    pg.insert_trades(first.into()).await.unwrap();
    handle.shutdown().await;

    assert_eq!(
        run_task(&config, "backfill --gaps").await,
        TaskOutcome::Succeeded
    );
    let (stored, max) = {
        let row = db
            .client()
            .await
            .query_one("SELECT count(*), max(trade_seq) FROM trades", &[])
            .await
            .unwrap();
        (row.get::<_, i64>(0), row.get::<_, i64>(1))
    };
    assert_eq!(
        (stored, max),
        (last, last),
        "every page fetched despite 10028s"
    );
    assert!(
        sim.stats().rate_limited > 0,
        "the exchange did refuse some requests"
    );
    let (status, body) = {
        let r = reqwest::get(format!("{}/api/v2/public/test", sim.http_url()))
            .await
            .unwrap();
        (r.status().as_u16(), r.text().await.unwrap())
    };
    assert!(
        status == 200 || (status == 429 && body.contains("10028")),
        "{status} {body}"
    );
    sim.stop().await;
}

#[tokio::test]
async fn candle_backfill_stores_the_exchanges_closed_bars_only() {
    let db = TestDb::create().await;
    let prefix = TestPrefix::new();
    let sim = sim::start(SimConfig {
        listen: "127.0.0.1:0".parse().unwrap(),
        instruments: vec!["BTC-PERPETUAL".into()],
        trades_per_sec: 200.0,
        ..SimConfig::default()
    })
    .await
    .unwrap();
    let config = config(&db, &prefix, Some(&sim));
    let started = SystemTime::now();
    // Bars close on the minute: wait (polling) until the first one has.
    let first_bucket_end = {
        let ms = started
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_millis() as u64;
        ms - ms % 60_000 + 60_000
    };
    let deadline = tokio::time::Instant::now() + Duration::from_secs(75);
    while (SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64)
        < first_bucket_end + 200
    {
        assert!(tokio::time::Instant::now() < deadline);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let from = first_bucket_end - 120_000;
    let to = first_bucket_end + 30_000;
    let command =
        format!("backfill --instrument BTC-PERPETUAL --from {from} --to {to} --resolution 1m");
    assert_eq!(run_task(&config, &command).await, TaskOutcome::Succeeded);

    let rows = db
        .client()
        .await
        .query(
            "SELECT (extract(epoch FROM bucket) * 1000)::int8, open, high, low, close, volume, trades, last_trade_seq
             FROM candles WHERE instrument_name = 'BTC-PERPETUAL' AND resolution_minutes = 1 ORDER BY bucket",
            &[],
        )
        .await
        .unwrap();
    assert!(!rows.is_empty(), "the closed bar was stored");
    let url = format!(
        "{}/api/v2/public/get_tradingview_chart_data?instrument_name=BTC-PERPETUAL&start_timestamp={from}&end_timestamp={to}&resolution=1",
        sim.http_url()
    );
    let body: serde_json::Value =
        serde_json::from_str(&reqwest::get(url).await.unwrap().text().await.unwrap()).unwrap();
    let chart: keel_deribit::model::TradingViewChart =
        serde_json::from_value(body["result"].clone()).unwrap();
    for row in &rows {
        let tick = row.get::<_, i64>(0) as u64;
        // The bar starting at first_bucket_end was still open when the task ran.
        assert!(tick < first_bucket_end, "only closed bars: {tick}");
        let i = chart.ticks.iter().position(|t| *t == tick).unwrap();
        let ours: (f64, f64, f64, f64, f64) =
            (row.get(1), row.get(2), row.get(3), row.get(4), row.get(5));
        assert_eq!(
            ours,
            (
                chart.open[i],
                chart.high[i],
                chart.low[i],
                chart.close[i],
                chart.volume[i]
            )
        );
        assert_eq!(row.get::<_, i64>(6), 0, "exchange-sourced: no trade count");
        assert_eq!(
            row.get::<_, i64>(7),
            i64::MAX,
            "the analyzer never folds into it"
        );
    }
    assert_eq!(
        rows.last().map(|r| r.get::<_, i64>(0) as u64),
        Some(first_bucket_end - 60_000),
        "the newest closed bar is the last one stored"
    );
    sim.stop().await;
}

#[tokio::test]
async fn a_task_run_through_the_admin_api_is_started_by_the_scheduler() {
    let db = TestDb::create().await;
    let prefix = TestPrefix::new();
    let mut config = config(&db, &prefix, None);
    config.receiver.enabled = false;
    config.distributor.enabled = false;
    config.analyzer.enabled = false;
    config.schedule.instruments_at_boot = false;
    let handle = Arc::new(Runtime::from_config(&config).start().await.unwrap());
    let admin = keel::admin::AdminServer::start(
        &keel::admin::AdminConfig {
            enabled: true,
            listen: "127.0.0.1:0".parse().unwrap(),
            token: None,
        },
        Arc::clone(&handle),
    )
    .await
    .unwrap();
    let post = |path: &str| {
        let url = format!("http://{}{path}", admin.addr());
        async move {
            reqwest::Client::new()
                .post(url)
                .send()
                .await
                .unwrap()
                .status()
                .as_u16()
        }
    };
    assert_eq!(
        handle.tree().actor(tree::JANITOR).unwrap().messages_handled,
        0
    );
    assert_eq!(post("/api/tasks/janitor/run").await, 202);
    eventually("the janitor ran", WAIT, || {
        handle
            .tree()
            .actor(tree::JANITOR)
            .is_some_and(|a| a.messages_handled == 1)
    })
    .await;
    assert_eq!(post("/api/tasks/nope/run").await, 404);
    handle.shutdown().await;
    assert_eq!(
        post("/api/tasks/janitor/run").await,
        409,
        "no scheduler once shut down"
    );
}

/// Work that fails every time, counting its runs.
#[derive(Clone, Debug)]
struct Flaky(Arc<std::sync::atomic::AtomicU32>);

impl TaskWork for Flaky {
    async fn run(self, _own: Incarnation) -> Result<String, TaskError> {
        self.0.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        Err("flaky fails on purpose".into())
    }
}

/// Work that never finishes by itself.
#[derive(Clone, Debug)]
struct Hangs;

impl TaskWork for Hangs {
    async fn run(self, own: Incarnation) -> Result<String, TaskError> {
        own.stop.cancelled().await;
        Ok("stopped".into())
    }
}

fn scheduler_with(job: Job) -> (Runtime, SchedulerArgs) {
    let runtime = Runtime::new(keel_core::supervisor::SupervisorConfig::default());
    let args = SchedulerArgs {
        jobs: vec![job],
        registry: runtime.registry().clone(),
        task_shutdown_timeout: Duration::from_secs(5),
        gate: None,
    };
    (runtime, args)
}

fn runs(handle: &keel::RuntimeHandle, task: &str) -> (u64, u64) {
    handle
        .tree()
        .actor(task)
        .and_then(|a| a.details.get("runs").cloned())
        .map_or((0, 0), |r| {
            (
                r["succeeded"].as_u64().unwrap_or(0),
                r["failed"].as_u64().unwrap_or(0),
            )
        })
}

#[tokio::test]
async fn a_task_that_keeps_failing_runs_once_per_interval_not_more_and_more_often() {
    let count = Arc::new(std::sync::atomic::AtomicU32::new(0));
    let work = Flaky(Arc::clone(&count));
    let job = Job {
        name: "flaky".into(),
        every: Duration::from_secs(1),
        at_boot: true,
        factory: Arc::new(move |ctx| RunOnce::spawn(work.clone(), ctx)),
    };
    let (runtime, args) = scheduler_with(job);
    let handle = runtime
        .child(keel_core::supervisor::ChildSpec::worker(
            "scheduler",
            move |ctx| Scheduler::spawn(args.clone(), ctx),
        ))
        .start()
        .await
        .unwrap();
    // At boot, then one run a second (the retry of a failure takes the place of
    // the next interval's run, it does not add a timer).
    tokio::time::sleep(Duration::from_millis(5_500)).await;
    let ran = count.load(std::sync::atomic::Ordering::SeqCst);
    assert!(
        (5..=7).contains(&ran),
        "{ran} runs in 5.5 s at 1 s intervals"
    );
    let (succeeded, failed) = runs(&handle, "flaky");
    assert_eq!((succeeded, failed as u32), (0, ran));
    assert!(
        !handle.has_ended(),
        "failed runs are the scheduler's to retry"
    );
    handle.shutdown().await;
}

#[tokio::test]
async fn a_killed_run_counts_as_failed() {
    let job = Job {
        name: "hangs".into(),
        every: Duration::from_secs(3600),
        at_boot: true,
        factory: Arc::new(|ctx| RunOnce::spawn(Hangs, ctx)),
    };
    let (runtime, args) = scheduler_with(job);
    let handle = runtime
        .child(keel_core::supervisor::ChildSpec::worker(
            "scheduler",
            move |ctx| Scheduler::spawn(args.clone(), ctx),
        ))
        .start()
        .await
        .unwrap();
    eventually("the run started", WAIT, || {
        handle.registry().cell("hangs").is_some()
    })
    .await;
    handle.registry().cell("hangs").unwrap().kill();
    eventually("the killed run recorded", WAIT, || {
        runs(&handle, "hangs") == (0, 1)
    })
    .await;
    let failure = handle.tree().actor("hangs").unwrap().last_failure.clone();
    assert!(
        failure.is_some_and(|f| f.reason == "killed"),
        "the failure says it was killed"
    );
    handle.shutdown().await;
}
