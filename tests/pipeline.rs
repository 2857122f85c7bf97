//! The whole data path against real servers: simulator → receiver → Redis →
//! distributor → PostgreSQL, with faults injected everywhere, then gap repair.
//! Every trade the simulator made must be stored exactly once.

mod common;

use std::collections::BTreeMap;
use std::time::Duration;

use common::db::{TestDb, PG_PORT};
use common::eventually;
use common::redis::{PrivateRedis, TestPrefix};
use keel::config::{BackfillConfig, Config};
use keel::{tree, Runtime, RuntimeHandle, TaskOutcome};
use keel_actors::resource::pg::PostgresConfig;
use keel_actors::resource::redis::RedisConfig;
use keel_actors::service::consumer::ConsumerConfig;
use keel_actors::service::receiver::ReceiverConfig;
use keel_core::registry::ActorState;
use keel_core::secret::Secret;
use keel_deribit::sim::{self, Fault, SimConfig, SimHandle};

const INSTRUMENTS: [&str; 2] = ["BTC-PERPETUAL", "ETH-PERPETUAL"];
const WAIT: Duration = Duration::from_secs(30);

/// `XPENDING key group`: count, smallest id, greatest id, per-consumer counts.
type PendingSummary = (
    u64,
    Option<String>,
    Option<String>,
    Option<Vec<(String, String)>>,
);
/// An `XRANGE` reply entry: id and field/value pairs.
type RangeEntry = (String, Vec<(String, Vec<u8>)>);

fn config(db: &TestDb, redis: &PrivateRedis, prefix: &TestPrefix, sim: &SimHandle) -> Config {
    // The supervisor, backoffs, breaker and timeouts an operator runs.
    Config {
        postgres: PostgresConfig {
            url: db.url(PG_PORT),
            ..PostgresConfig::default()
        },
        redis: RedisConfig {
            url: format!("redis://127.0.0.1:{}/0", redis.port),
            key_prefix: prefix.prefix.clone(),
            ..RedisConfig::default()
        },
        receiver: ReceiverConfig {
            url: sim.ws_url(),
            instruments: INSTRUMENTS.iter().map(|s| s.to_string()).collect(),
            interval: keel_deribit::Interval::Raw,
            client_id: Some("keel".into()),
            client_secret: Some(Secret::new("secret")),
            heartbeat: Duration::from_secs(1),
            stall_timeout: Duration::from_millis(800),
            linger: Duration::from_millis(5),
            ..ReceiverConfig::default()
        },
        distributor: ConsumerConfig {
            claim_min_idle: Duration::from_millis(500),
            claim_every: Duration::from_millis(200),
            ..ConsumerConfig::default()
        },
        backfill: BackfillConfig {
            http_url: sim.http_url(),
        },
        ..Config::default()
    }
}

async fn stored(db: &TestDb, instrument: &str) -> (i64, i64, i64) {
    let row = db
        .client()
        .await
        .query_one(
            "SELECT count(*), coalesce(min(trade_seq), 0), coalesce(max(trade_seq), 0)
             FROM trades WHERE instrument_name = $1",
            &[&instrument],
        )
        .await
        .unwrap();
    (row.get(0), row.get(1), row.get(2))
}

fn detail(handle: &RuntimeHandle, actor: &str, key: &str) -> Option<serde_json::Value> {
    handle.tree().actor(actor)?.details.get(key).cloned()
}

fn restarts(handle: &RuntimeHandle, actor: &str) -> u32 {
    handle.tree().actor(actor).map_or(0, |a| a.restarts)
}

async fn progress(db: &TestDb) -> i64 {
    let mut total = 0;
    for i in INSTRUMENTS {
        total += stored(db, i).await.0;
    }
    total
}

/// Waits until stored trades grow by `more`.
async fn flows(db: &TestDb, more: i64) {
    let start = progress(db).await;
    let deadline = tokio::time::Instant::now() + WAIT;
    while progress(db).await < start + more {
        assert!(
            tokio::time::Instant::now() < deadline,
            "trades stopped flowing"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_trade_is_stored_exactly_once_through_faults_restarts_and_outages() {
    let db = TestDb::create().await;
    let mut redis = PrivateRedis::start();
    let prefix = TestPrefix::on(redis.port);
    // Generation starts once the pipeline is listening, so the first trade is stored too.
    let sim = sim::start(SimConfig {
        listen: "127.0.0.1:0".parse().unwrap(),
        instruments: INSTRUMENTS.iter().map(|s| s.to_string()).collect(),
        trades_per_sec: 0.0,
        client_id: Some("keel".into()),
        client_secret: Some(Secret::new("secret")),
        min_heartbeat: Duration::from_secs(1),
        ..SimConfig::default()
    })
    .await
    .unwrap();
    let config = config(&db, &redis, &prefix, &sim);
    let handle = Runtime::from_config(&config).start().await.unwrap();
    // PgActor's first connect applies the schema; nothing is queried before.
    eventually("pg ready", WAIT, || {
        detail(&handle, tree::PG, "status").is_some_and(|s| s == "ready")
    })
    .await;
    eventually("receiver streaming", WAIT, || {
        detail(&handle, tree::RECEIVER, "connection").is_some_and(|c| c == "streaming")
    })
    .await;
    sim.set_rate(400.0);
    flows(&db, 200).await;

    // The exchange drops every connection.
    let before = restarts(&handle, tree::RECEIVER);
    sim.inject(&Fault::Disconnect).unwrap();
    eventually("receiver reconnected after disconnect", WAIT, || {
        restarts(&handle, tree::RECEIVER) > before
    })
    .await;
    flows(&db, 100).await;

    // The exchange goes silent while answering pings: the stall is detected.
    let before = restarts(&handle, tree::RECEIVER);
    sim.inject(&Fault::Stall { ms: 2_000 }).unwrap();
    eventually("receiver restarted after a stall", WAIT, || {
        restarts(&handle, tree::RECEIVER) > before
    })
    .await;
    flows(&db, 100).await;

    // Resubscription-style duplicates and garbage frames.
    sim.inject(&Fault::DuplicateTrades { count: 25 }).unwrap();
    sim.inject(&Fault::Malformed { count: 6 }).unwrap();
    flows(&db, 100).await;

    // Redis dies (losing everything it held: no persistence) and comes back.
    redis.stop();
    eventually("trades held while Redis is down", WAIT, || {
        detail(&handle, tree::RECEIVER, "receiver")
            .and_then(|r| r["buffered"].as_u64())
            .is_some_and(|n| n > 0)
    })
    .await;
    redis.resume();
    flows(&db, 100).await;

    // PostgreSQL terminates the pool's connections.
    let killed: i64 = db
        .client()
        .await
        .query_one(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity
             WHERE datname = $1 AND application_name = 'keel'",
            &[&db.name],
        )
        .await
        .unwrap()
        .get(0);
    assert!(killed > 0);
    flows(&db, 100).await;

    // The distributor is killed mid-flight and restarted by its supervisor.
    let before = restarts(&handle, tree::DISTRIBUTOR);
    handle
        .registry()
        .cell(tree::DISTRIBUTOR)
        .expect("distributor running")
        .kill();
    eventually("distributor restarted", WAIT, || {
        restarts(&handle, tree::DISTRIBUTOR) > before
            && handle
                .tree()
                .actor(tree::DISTRIBUTOR)
                .is_some_and(|a| a.state == ActorState::Running)
    })
    .await;
    flows(&db, 100).await;

    // Generation stops; the pipeline drains.
    sim.set_rate(0.0);
    let mut last = -1;
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let now = progress(&db).await;
        if now == last {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the pipeline never settled"
        );
        last = now;
        tokio::time::sleep(Duration::from_millis(700)).await;
    }
    let report = handle.shutdown().await;
    assert!(report.killed().next().is_none(), "{report:?}");

    // The faults did damage that only repair can undo: recorded gaps, and
    // instruments whose stored trades fall short of what the exchange made.
    let recorded: i64 = db
        .client()
        .await
        .query_one("SELECT count(*) FROM trade_gaps", &[])
        .await
        .unwrap()
        .get(0);
    assert!(
        recorded > 0,
        "the stall and the reconnects left recorded gaps"
    );
    let stats = sim.stats();
    let mut short = 0;
    for instrument in INSTRUMENTS {
        if stored(&db, instrument).await.0 < stats.instruments[instrument].last_trade_seq {
            short += 1;
        }
    }
    assert!(short > 0, "before repair, trades are missing");

    // Gap repair: recorded gaps, holes and the tail, from the exchange's history.
    assert_eq!(
        common::conservation::repair(&config, WAIT).await,
        TaskOutcome::Succeeded
    );

    let stats = sim.stats();
    for instrument in INSTRUMENTS {
        let last = stats.instruments[instrument].last_trade_seq;
        assert!(
            last > 500,
            "{instrument}: the run generated enough trades ({last})"
        );
        let (count, min, max) = stored(&db, instrument).await;
        assert_eq!(
            (min, max, count),
            (1, last, last),
            "{instrument}: exactly trades 1..={last}, each once"
        );
    }
    let gaps_left: i64 = db
        .client()
        .await
        .query_one("SELECT count(*) FROM trade_gaps", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(gaps_left, 0, "every gap repaired and cleared");

    // Candles: despite redeliveries, duplicates and repairs, each equals the
    // candle SQL computes from the stored trades, for every resolution...
    let client = db.client().await;
    let mismatched: i64 = client
        .query_one(
            "WITH sql AS (
                 SELECT instrument_name, r.m,
                        to_timestamp(floor(extract(epoch FROM ts) / (r.m * 60)) * (r.m * 60)) AS bucket,
                        (array_agg(price ORDER BY trade_seq))[1] AS open, max(price) AS high,
                        min(price) AS low, (array_agg(price ORDER BY trade_seq DESC))[1] AS close,
                        sum(amount) AS volume, count(*) AS trades
                 FROM trades CROSS JOIN (VALUES (1), (5), (60)) AS r(m)
                 GROUP BY instrument_name, r.m, bucket)
             SELECT count(*) FROM sql FULL JOIN candles c
               ON c.instrument_name = sql.instrument_name AND c.resolution_minutes = sql.m
              AND c.bucket = sql.bucket
             WHERE c.bucket IS NULL OR sql.bucket IS NULL
                OR (c.open, c.high, c.low, c.close, c.trades) <> (sql.open, sql.high, sql.low, sql.close, sql.trades)
                OR abs(c.volume - sql.volume) > 1e-6",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(
        mismatched, 0,
        "candles equal the SQL aggregate of the stored trades"
    );
    // ...and each 1-minute candle equals the exchange's own chart data.
    for instrument in INSTRUMENTS {
        let url = format!(
            "{}/api/v2/public/get_tradingview_chart_data?instrument_name={instrument}&start_timestamp=0&end_timestamp=99999999999999&resolution=1",
            sim.http_url()
        );
        let body: serde_json::Value =
            serde_json::from_str(&reqwest::get(url).await.unwrap().text().await.unwrap()).unwrap();
        let chart: keel_deribit::model::TradingViewChart =
            serde_json::from_value(body["result"].clone()).unwrap();
        let rows = client
            .query(
                "SELECT (extract(epoch FROM bucket) * 1000)::int8, open, high, low, close, volume
                 FROM candles WHERE instrument_name = $1 AND resolution_minutes = 1 ORDER BY bucket",
                &[&instrument],
            )
            .await
            .unwrap();
        let mut compared = 0;
        for row in rows {
            let tick = row.get::<_, i64>(0) as u64;
            let i = chart
                .ticks
                .iter()
                .position(|t| *t == tick)
                .expect("the exchange has the bucket");
            let ours: (f64, f64, f64, f64) = (row.get(1), row.get(2), row.get(3), row.get(4));
            assert_eq!(
                ours,
                (chart.open[i], chart.high[i], chart.low[i], chart.close[i]),
                "{instrument} @ {tick}"
            );
            assert!((row.get::<_, f64>(5) - chart.volume[i]).abs() < 1e-6);
            compared += 1;
        }
        assert!(compared > 0);
    }
    sim.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_graceful_shutdown_under_load_loses_nothing_and_leaves_nothing_pending() {
    let db = TestDb::create().await;
    let redis = PrivateRedis::start();
    let prefix = TestPrefix::on(redis.port);
    let sim = sim::start(SimConfig {
        listen: "127.0.0.1:0".parse().unwrap(),
        instruments: INSTRUMENTS.iter().map(|s| s.to_string()).collect(),
        trades_per_sec: 0.0,
        client_id: Some("keel".into()),
        client_secret: Some(Secret::new("secret")),
        min_heartbeat: Duration::from_secs(1),
        ..SimConfig::default()
    })
    .await
    .unwrap();
    let mut config = config(&db, &redis, &prefix, &sim);
    config.schedule.enabled = false;
    let handle = Runtime::from_config(&config).start().await.unwrap();
    eventually("pg ready", WAIT, || {
        detail(&handle, tree::PG, "status").is_some_and(|s| s == "ready")
    })
    .await;
    eventually("receiver streaming", WAIT, || {
        detail(&handle, tree::RECEIVER, "connection").is_some_and(|c| c == "streaming")
    })
    .await;
    sim.set_rate(5_000.0);
    flows(&db, 3_000).await;

    // Shut down mid-stream: the receiver stops reading and flushes, then the
    // consumers finish the batch in hand, then the resources close.
    let report = handle.shutdown().await;
    sim.set_rate(0.0);
    assert!(report.killed().next().is_none(), "{report:?}");
    let names: Vec<&str> = report.stopped.iter().map(|c| c.name.as_str()).collect();
    assert_eq!(
        &names[..3],
        [tree::RECEIVER, tree::ANALYZER, tree::DISTRIBUTOR]
    );

    let mut conn = prefix.connection();
    let mut last_published = BTreeMap::new();
    for instrument in INSTRUMENTS {
        let key = format!(
            "{}{}",
            prefix.prefix,
            keel_actors::service::streams::trade_stream(instrument)
        );
        let pending: PendingSummary = redis::cmd("XPENDING")
            .arg(&key)
            .arg("distributor")
            .query(&mut conn)
            .unwrap();
        assert_eq!(
            pending.0, 0,
            "{instrument}: nothing delivered and left unacknowledged"
        );
        let newest: Vec<RangeEntry> = redis::cmd("XREVRANGE")
            .arg(&key)
            .arg("+")
            .arg("-")
            .arg("COUNT")
            .arg(1)
            .query(&mut conn)
            .unwrap();
        // The newest entry may pack several trades: its last is the newest.
        let entry = keel_actors::resource::redis::StreamEntry {
            id: newest[0].0.clone(),
            fields: newest[0].1.clone(),
        };
        let trades = keel_actors::service::streams::decode(&entry).unwrap();
        let last = trades.last().unwrap().as_ref().unwrap().trade_seq;
        last_published.insert(instrument, last);
    }

    // A new tree stores what the stream still holds; nothing needs repair.
    config.receiver.enabled = false;
    let handle = Runtime::from_config(&config).start().await.unwrap();
    for instrument in INSTRUMENTS {
        let last = last_published[instrument];
        let deadline = tokio::time::Instant::now() + WAIT;
        while stored(&db, instrument).await.2 < last {
            assert!(
                tokio::time::Instant::now() < deadline,
                "{instrument}: the stream's trades were not stored"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert_eq!(
            stored(&db, instrument).await,
            (last, 1, last),
            "{instrument}: 1..={last}, each once"
        );
    }
    handle.shutdown().await;
    sim.stop().await;
}
