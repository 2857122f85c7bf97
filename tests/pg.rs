//! PgActor against a real PostgreSQL (and PgBouncer in transaction pooling mode),
//! each test in a database of its own.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::db::{TestDb, PGBOUNCER_PORT, PG_PORT};
use common::market::{at, candle, instrument, trades};
use common::proxy::{Mode, TcpProxy};
use common::{eventually, fast_policy};
use keel::{Runtime, RuntimeHandle};
use keel_actors::resource::pg::{
    FillRow, NewOrder, OrderUpdate, PgClient, PgError, Postgres, PostgresConfig, Retained,
};
use keel_actors::resource::Status;
use keel_core::delay::BackoffConfig;
use keel_core::supervisor::{ChildSpec, Strategy};

const WAIT: Duration = Duration::from_secs(20);

fn quick_backoff() -> BackoffConfig {
    BackoffConfig {
        min: Duration::from_millis(10),
        max: Duration::from_millis(100),
        multiplier: 2.0,
        jitter: 0.1,
    }
}

fn pg_config(url: String) -> PostgresConfig {
    PostgresConfig {
        url,
        retry_backoff: quick_backoff(),
        connect_backoff: quick_backoff(),
        checkout_timeout: Duration::from_secs(2),
        connect_timeout: Duration::from_secs(2),
        ..PostgresConfig::default()
    }
}

async fn start(config: PostgresConfig) -> (RuntimeHandle, PgClient) {
    let handle = Runtime::new(fast_policy(Strategy::OneForOne))
        .child(ChildSpec::resource("pg", move |ctx| {
            Postgres::spawn(config.clone(), ctx)
        }))
        .start()
        .await
        .unwrap();
    let client = PgClient::new(handle.registry().clone(), "pg");
    (handle, client)
}

fn status(handle: &RuntimeHandle) -> Option<String> {
    let tree = handle.tree();
    let pg = tree.actor("pg")?;
    pg.details.get("status")?.as_str().map(str::to_owned)
}

async fn wait_ready(handle: &RuntimeHandle) {
    eventually("pg ready", WAIT, || {
        status(handle).as_deref() == Some("ready")
    })
    .await;
}

async fn count(db: &TestDb, sql: &str) -> i64 {
    db.client().await.query_one(sql, &[]).await.unwrap().get(0)
}

/// Every operation, checked against what the database holds afterwards.
async fn exercise_whole_api(port: u16) {
    exercise_whole_api_with(port, |_| {}).await;
}

async fn exercise_whole_api_with(port: u16, tls: impl FnOnce(&mut PostgresConfig)) {
    let db = TestDb::create().await;
    let mut config = pg_config(db.url(port));
    config.delete_batch = 7;
    tls(&mut config);
    let (handle, pg) = start(config).await;
    wait_ready(&handle).await;

    // Instruments: a name given twice keeps its last version.
    let instruments: Arc<[_]> = vec![
        instrument("BTC-PERPETUAL", true),
        instrument("ETH-PERPETUAL", true),
        instrument("BTC-PERPETUAL", false),
    ]
    .into();
    let before = instruments.to_vec();
    assert_eq!(
        pg.upsert_instruments(Arc::clone(&instruments))
            .await
            .unwrap(),
        2
    );
    assert_eq!(&*instruments, &before[..], "input left unchanged");
    assert_eq!(
        count(&db, "SELECT count(*) FROM instruments WHERE NOT is_active").await,
        1
    );

    // Trades: idempotent on (instrument_name, trade_seq).
    let first: Arc<[_]> = trades("BTC-PERPETUAL", 0..50).into();
    let kept = first.to_vec();
    assert_eq!(pg.insert_trades(Arc::clone(&first)).await.unwrap(), 50);
    assert_eq!(&*first, &kept[..], "input left unchanged");
    let overlapping: Arc<[_]> = trades("BTC-PERPETUAL", 40..60).into();
    assert_eq!(
        pg.insert_trades(overlapping).await.unwrap(),
        10,
        "only new ones count"
    );
    assert_eq!(count(&db, "SELECT count(*) FROM trades").await, 60);
    let row = db
        .client()
        .await
        .query_one(
            "SELECT trade_id, price, direction, iv, liquidation, ts = to_timestamp(1700000000.05)
             FROM trades WHERE trade_seq = 5",
            &[],
        )
        .await
        .unwrap();
    assert_eq!(row.get::<_, String>(0), "BTC-PERPETUAL-5");
    assert_eq!(row.get::<_, f64>(1), 50_002.5);
    assert_eq!(row.get::<_, String>(2), "sell");
    assert_eq!(row.get::<_, Option<f64>>(3), None);
    assert_eq!(row.get::<_, Option<String>>(4).as_deref(), Some("M"));
    assert!(row.get::<_, bool>(5), "timestamp stored to the millisecond");

    // Candles: upsert replaces.
    pg.upsert_candles(
        vec![
            candle("BTC-PERPETUAL", 0, 1.0),
            candle("BTC-PERPETUAL", 1, 2.0),
        ]
        .into(),
    )
    .await
    .unwrap();
    pg.upsert_candles(vec![candle("BTC-PERPETUAL", 1, 3.0)].into())
        .await
        .unwrap();
    assert_eq!(count(&db, "SELECT count(*) FROM candles").await, 2);
    assert_eq!(
        count(&db, "SELECT count(*) FROM candles WHERE close = 3.0").await,
        1
    );

    // Deleting by age, in batches of 7: trades 0..=29 are older than seq 30's time.
    let cutoff = at(1_700_000_000_000 + 30 * 10);
    assert_eq!(
        pg.delete_older_than(Retained::Trades, cutoff)
            .await
            .unwrap(),
        30
    );
    assert_eq!(count(&db, "SELECT min(trade_seq) FROM trades").await, 30);
    assert_eq!(
        pg.delete_older_than(Retained::Trades, cutoff)
            .await
            .unwrap(),
        0
    );
    let year_2500 = at(16_725_225_600_000);
    assert_eq!(
        pg.delete_older_than(Retained::Candles, year_2500)
            .await
            .unwrap(),
        2
    );

    // The executor's orders: a batch in one commit (each new or not), one
    // alone, state changes in order (only forward), sends counted.
    let order = |label: &str, state: &str| NewOrder {
        label: label.into(),
        instrument: "BTC-PERPETUAL".into(),
        side: "buy".into(),
        order_type: "limit".into(),
        amount: 10.0,
        price: Some(50_000.0),
        time_in_force: "good_til_cancelled".into(),
        post_only: false,
        reduce_only: false,
        state: state.into(),
        rank: if state == "rejected" { 7 } else { 0 },
        reason: (state == "rejected").then(|| "limit max_amount".into()),
        valid_until_ms: 1_700_000_010_000,
        deadline_ms: (label == "o-2" || label == "o-4").then_some(1_700_000_020_000),
        intent_id: format!("0-{label}"),
    };
    assert_eq!(
        pg.record_orders(vec![
            (order("o-1", "pending"), true),
            (order("o-2", "pending"), false),
            (order("o-3", "rejected"), false),
        ])
        .await
        .unwrap(),
        [None, None, None]
    );
    assert_eq!(
        pg.record_orders(vec![(order("o-1", "pending"), true)])
            .await
            .unwrap(),
        [Some("sent".to_owned())],
        "a label recorded before answers its state"
    );
    assert_eq!(
        pg.record_orders(vec![
            (order("o-4", "pending"), true),
            (order("o-2", "pending"), true),
        ])
        .await
        .unwrap(),
        [None, Some("pending".to_owned())]
    );
    let update = |label: &str, state: &str, rank: i16| OrderUpdate {
        label: label.into(),
        state: state.into(),
        rank,
        order_id: Some(format!("id-{label}")),
        filled_amount: 0.0,
        average_price: None,
        last_update_ms: 1_700_000_000_000 + i64::from(rank),
        reject_code: None,
        reason: None,
    };
    pg.update_orders(vec![
        update("o-1", "open", 3),
        update("o-1", "cancelled", 6),
        update("o-1", "open", 3),
    ])
    .await
    .unwrap();
    pg.mark_sent("o-2", 1_700_000_020_000, 1).await.unwrap();
    let history: Vec<String> = db
        .client()
        .await
        .query(
            "SELECT label || ':' || state FROM order_history ORDER BY recorded_at, label",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    let of = |label: &str| {
        history
            .iter()
            .filter(|h| h.starts_with(&format!("{label}:")))
            .map(|h| h[label.len() + 1..].to_owned())
            .collect::<Vec<_>>()
    };
    assert_eq!(of("o-1"), ["pending", "sent", "open", "cancelled"]);
    assert_eq!(of("o-2"), ["pending", "sent"]);
    assert_eq!(of("o-3"), ["rejected"]);
    assert_eq!(of("o-4"), ["pending", "sent"]);
    let live: Vec<String> = pg
        .live_orders()
        .await
        .unwrap()
        .into_iter()
        .map(|o| {
            format!(
                "{}:{}:{}:{:?}",
                o.order.label, o.state, o.sends, o.order.deadline_ms
            )
        })
        .collect();
    assert_eq!(live.len(), 2, "{live:?}");
    assert!(
        live.contains(&"o-2:sent:1:Some(1700000020000)".to_owned()),
        "{live:?}"
    );
    assert!(
        live.contains(&"o-4:sent:1:Some(1700000020000)".to_owned()),
        "{live:?}"
    );

    // Fills: once each by trade id; one whose id is stored for another order
    // is reported, not stored.
    let fill = |trade_id: &str, order_id: &str| FillRow {
        trade_id: trade_id.into(),
        label: None,
        order_id: order_id.into(),
        instrument: "BTC-PERPETUAL".into(),
        side: "buy".into(),
        amount: 10.0,
        price: 50_000.0,
        fee: 0.0,
        fee_currency: "BTC".into(),
        liquidity: "T".into(),
        trade_seq: 1,
        exchange_ms: 1_700_000_000_000,
    };
    let stored = pg
        .insert_fills(vec![fill("t-1", "id-a"), fill("t-2", "id-a")])
        .await
        .unwrap();
    assert_eq!(stored.new, ["t-1", "t-2"]);
    let stored = pg
        .insert_fills(vec![
            fill("t-1", "id-a"),
            fill("t-2", "id-b"),
            fill("t-3", "id-b"),
        ])
        .await
        .unwrap();
    assert_eq!(stored.new, ["t-3"]);
    assert_eq!(stored.conflicting, [("t-2".to_owned(), "id-a".to_owned())]);

    assert!(pg.ping().await.is_ok());
    let health = pg.health().await.unwrap();
    assert_eq!(health.status, Status::Ready);
    assert!(health.pool.connections >= 1 && health.pool.max_size == 4);
    handle.shutdown().await;
}

#[tokio::test]
async fn the_whole_api_works_against_postgres() {
    exercise_whole_api(PG_PORT).await;
}

#[tokio::test]
async fn the_whole_api_works_through_pgbouncer_transaction_pooling() {
    exercise_whole_api(PGBOUNCER_PORT).await;
}

/// PgBouncer terminating TLS, as production runs it: Keel verifies its
/// certificate fully and every operation works in transaction pooling.
#[tokio::test]
async fn the_whole_api_works_through_pgbouncer_over_verified_tls() {
    let certs = common::certs::Certs::make(&["127.0.0.1"], "postgres");
    let bouncer = common::pgbouncer::TlsPgBouncer::start(&certs);
    exercise_whole_api_with(bouncer.port, |config| {
        config.sslmode = Some(keel_actors::resource::pg::SslMode::VerifyFull);
        config.ca_file = Some(certs.path("ca.pem"));
    })
    .await;
    // Plain TCP is turned away: the test ran over TLS.
    let plain = tokio_postgres::connect(
        &format!(
            "host=127.0.0.1 port={} user=postgres dbname=keel sslmode=disable",
            bouncer.port
        ),
        tokio_postgres::NoTls,
    )
    .await;
    assert!(plain.is_err(), "PgBouncer took a plain connection");
}

#[tokio::test]
async fn it_starts_while_the_database_is_down_and_becomes_ready_when_it_is_up() {
    let db = TestDb::create().await;
    let proxy = TcpProxy::start(PG_PORT, Mode::Down).await;
    let (handle, pg) = start(pg_config(db.url(proxy.port))).await;

    // The tree is up; PgActor is running but reports connecting, with the real cause.
    assert_eq!(status(&handle).as_deref(), Some("connecting"));
    eventually("the cause of the failure is recorded", WAIT, || {
        handle
            .tree()
            .actor("pg")
            .and_then(|a| a.last_failure.clone())
            .is_some()
    })
    .await;
    let cause = handle
        .tree()
        .actor("pg")
        .unwrap()
        .last_failure
        .clone()
        .unwrap()
        .reason;
    assert!(
        !cause.contains("timed out"),
        "the real cause, not bb8's timeout: {cause}"
    );
    assert_eq!(
        handle.tree().actor("pg").unwrap().restarts,
        0,
        "not crash-looping"
    );

    proxy.set(Mode::Up);
    wait_ready(&handle).await;
    // Connecting ran the migrations.
    assert_eq!(
        count(&db, "SELECT count(*) FROM keel_schema_migrations").await,
        keel_actors::resource::pg::MIGRATIONS.len() as i64
    );
    assert_eq!(pg.insert_trades(trades("X", 0..3).into()).await.unwrap(), 3);
    handle.shutdown().await;
}

#[tokio::test]
async fn terminating_the_pools_connections_mid_load_fails_no_caller() {
    let db = TestDb::create().await;
    let mut config = pg_config(db.url(PG_PORT));
    // A budget (about 0.8 s) longer than the ~0.2 s of terminations below.
    config.max_attempts = 10;
    let (handle, pg) = start(config).await;
    wait_ready(&handle).await;

    let writers: Vec<_> = (0..8)
        .map(|w| {
            let pg = pg.clone();
            tokio::spawn(async move {
                for batch in 0..25 {
                    let start = (w * 25 + batch) * 100;
                    pg.insert_trades(trades("LOAD", start..start + 100).into())
                        .await?;
                }
                Ok::<_, PgError>(())
            })
        })
        .collect();
    let killer = {
        let admin = db.client().await;
        let name = db.name.clone();
        tokio::spawn(async move {
            let mut killed = 0_i64;
            for _ in 0..10 {
                let row = admin
                    .query_one(
                        "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity
                         WHERE datname = $1 AND application_name = 'keel'",
                        &[&name],
                    )
                    .await
                    .unwrap();
                killed += row.get::<_, i64>(0);
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            killed
        })
    };
    for writer in writers {
        writer
            .await
            .unwrap()
            .expect("no caller sees the terminations");
    }
    let killed = killer.await.unwrap();
    assert!(
        killed > 0,
        "the test terminated at least one pooled connection"
    );
    assert_eq!(
        count(&db, "SELECT count(*) FROM trades").await,
        8 * 25 * 100
    );
    let retries = pg.health().await.unwrap().details["retries"]
        .as_u64()
        .unwrap();
    assert!(retries > 0, "terminations were absorbed by retries");
    handle.shutdown().await;
}

#[tokio::test]
async fn a_permanent_error_returns_at_once_with_its_sqlstate_and_is_not_retried() {
    let db = TestDb::create().await;
    let (handle, pg) = start(pg_config(db.url(PG_PORT))).await;
    wait_ready(&handle).await;
    let attempts = |h: &keel_actors::resource::Health| h.details["attempts"].as_u64().unwrap();
    let before = attempts(&pg.health().await.unwrap());

    // A NUL byte is not valid in PostgreSQL text: SQLSTATE 22021, a data error.
    let mut bad = trades("BAD", 0..1);
    bad[0].instrument_name = "BAD\0NAME".into();
    let err = pg.insert_trades(bad.into()).await.unwrap_err();

    assert_eq!(err.sqlstate(), Some("22021"), "{err}");
    assert!(matches!(
        err,
        PgError::Rejected {
            op: "insert_trades",
            ..
        }
    ));
    assert_eq!(
        attempts(&pg.health().await.unwrap()) - before,
        1,
        "exactly one attempt"
    );
    handle.shutdown().await;
}

#[tokio::test]
async fn calls_while_the_database_stays_down_fail_after_the_retry_budget() {
    let db = TestDb::create().await;
    let proxy = TcpProxy::start(PG_PORT, Mode::Down).await;
    let mut config = pg_config(db.url(proxy.port));
    config.max_attempts = 3;
    config.checkout_timeout = Duration::from_millis(300);
    let (handle, pg) = start(config).await;

    let err = pg
        .insert_trades(trades("X", 0..1).into())
        .await
        .unwrap_err();
    assert!(
        matches!(err, PgError::Unavailable { attempts: 3, .. }),
        "{err}"
    );
    assert_eq!(pg.health().await.unwrap().status, Status::Connecting);
    handle.shutdown().await;
}

#[tokio::test]
async fn a_stopped_pg_actor_answers_not_running() {
    let db = TestDb::create().await;
    let (handle, pg) = start(pg_config(db.url(PG_PORT))).await;
    handle.shutdown().await;
    let err = pg.ping().await.unwrap_err();
    assert!(matches!(err, PgError::NotRunning(_)), "{err}");
}

#[tokio::test]
async fn the_statement_timeout_reaches_the_server_and_is_not_retried() {
    let db = TestDb::create().await;
    let mut config = pg_config(db.url(PGBOUNCER_PORT));
    config.statement_timeout = Duration::from_millis(1);
    let (handle, pg) = start(config).await;
    wait_ready(&handle).await;
    let err = pg
        .insert_trades(trades("SLOW", 0..50_000).into())
        .await
        .unwrap_err();
    // 57014 query_canceled: set per transaction, so it holds behind PgBouncer too.
    assert_eq!(err.sqlstate(), Some("57014"), "{err}");
    assert_eq!(count(&db, "SELECT count(*) FROM trades").await, 0);
    handle.shutdown().await;
}

#[tokio::test]
async fn a_batch_holding_one_trade_twice_stores_it_once_even_when_nothing_is_stored_yet() {
    let db = TestDb::create().await;
    let (handle, pg) = start(pg_config(db.url(PG_PORT))).await;
    wait_ready(&handle).await;
    // The chaos run found this: a re-sent trade in one read batch, none stored.
    let mut batch = trades("BTC-PERPETUAL", 1..6);
    batch.push(batch[2].clone());
    let new = pg.insert_trades(batch.into()).await.unwrap();
    assert_eq!(new, 5);
    assert_eq!(count(&db, "SELECT count(*) FROM trades").await, 5);
    handle.shutdown().await;
}

/// Cluster mode: once an analyzer that took the instrument over raised its
/// fence, a fold under an older token writes nothing, and says so.
#[tokio::test]
async fn a_fold_under_a_token_older_than_the_fence_folds_nothing() {
    let db = TestDb::create().await;
    let (handle, pg) = start(pg_config(db.url(PG_PORT))).await;
    wait_ready(&handle).await;
    let all = trades("BTC-PERPETUAL", 0..100);
    pg.insert_trades(all.clone().into()).await.unwrap();
    let resolutions: Arc<[i32]> = Arc::from([1, 5, 60]);
    let under = |token: i64, batch: &[keel_market::Trade]| {
        pg.fold_candles_fenced(
            batch.to_vec().into(),
            Arc::clone(&resolutions),
            Arc::from([("BTC-PERPETUAL".to_owned(), token)]),
        )
    };
    assert!(under(1, &all[..50]).await.unwrap().is_some_and(|n| n > 0));
    pg.raise_fold_fence("BTC-PERPETUAL", 2).await.unwrap();
    assert_eq!(under(1, &all[50..]).await.unwrap(), None, "fenced out");
    let folded: i64 = db
        .client()
        .await
        .query_one(
            "SELECT coalesce(sum(trades), 0)::bigint FROM candles WHERE resolution_minutes = 60",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(folded, 50, "nothing of the fenced fold was written");
    // A fence never goes back down.
    pg.raise_fold_fence("BTC-PERPETUAL", 1).await.unwrap();
    assert_eq!(under(1, &all[50..]).await.unwrap(), None);
    assert!(under(2, &all[50..]).await.unwrap().is_some());
    let client = db.client().await;
    assert_eq!(common::conservation::candles_mismatched(&client).await, 0);
    handle.shutdown().await;
}

/// The analyzer's fold against the SQL aggregate of the same trades: batches
/// that overlap (a redelivery after a crash), a batch delivered twice, a batch
/// out of order and holding duplicates, across minute and hour buckets. Each
/// trade counts once and every candle equals what SQL computes.
#[tokio::test]
async fn folded_candles_equal_the_sql_aggregate_however_the_trades_were_delivered() {
    let db = TestDb::create().await;
    let (handle, pg) = start(pg_config(db.url(PG_PORT))).await;
    wait_ready(&handle).await;
    let all = trades("BTC-PERPETUAL", 0..20_000);
    for chunk in all.chunks(5_000) {
        pg.insert_trades(chunk.to_vec().into()).await.unwrap();
    }
    let resolutions: Arc<[i32]> = Arc::from([1, 5, 60]);
    let fold =
        |batch: Vec<keel_market::Trade>| pg.fold_candles(batch.into(), Arc::clone(&resolutions));
    assert!(fold(all[0..7_000].to_vec()).await.unwrap() > 0);
    // Redelivered: the overlap with the first batch is not counted again.
    fold(all[5_000..12_000].to_vec()).await.unwrap();
    assert_eq!(
        fold(all[0..7_000].to_vec()).await.unwrap(),
        0,
        "a batch folded before changes nothing"
    );
    let mut last: Vec<_> = all[12_000..].iter().rev().cloned().collect();
    last.extend(all[12_000..12_100].iter().cloned());
    fold(last).await.unwrap();
    let client = db.client().await;
    assert_eq!(common::conservation::candles_mismatched(&client).await, 0);
    // 200 s of trades: at least four 1-minute, one 5-minute and one 1-hour candle.
    assert!(count(&db, "SELECT count(*) FROM candles").await >= 6);
    handle.shutdown().await;
}
