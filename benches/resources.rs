//! Resource actors against raw drivers, measured in the same run:
//! - rows/s of PgActor's trade insert path vs a raw binary COPY of the same rows
//!   into the same table;
//! - entries/s of RedisActor's `xadd_bulk` vs raw pipelined XADD with the redis
//!   crate.
//!
//! Needs PostgreSQL and Redis on loopback (`scripts/up`). Run: `cargo bench --bench resources`.

use std::sync::Arc;
mod common;

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use common::{connect, raw_copy, raw_xadd, trades, BATCH};

use keel::Runtime;
use keel_actors::resource::pg::{PgClient, Postgres, PostgresConfig};
use keel_actors::resource::redis::{Fields, Redis, RedisClient, RedisConfig};
use keel_core::supervisor::{ChildSpec, SupervisorConfig};
use keel_market::Trade;

const ROWS: usize = 200_000;
const ENTRIES: usize = 200_000;
const ENTRY_BATCH: usize = 1_000;
/// Rounds per path, interleaved, after one untimed warm-up; the best counts (the
/// round least disturbed by the other processes on this 2-core machine).
const ROUNDS: usize = 5;
const TARGET: f64 = 0.8;

/// Keel's path: PgClient -> PgActor -> executor -> UNNEST INSERT ... ON CONFLICT.
async fn keel_insert(pg: &PgClient, batches: &[Arc<[Trade]>]) -> Duration {
    let started = Instant::now();
    for batch in batches {
        pg.insert_trades(Arc::clone(batch)).await.unwrap();
    }
    started.elapsed()
}

async fn keel_xadd(redis: &RedisClient, stream: &str, batches: &[Arc<[Fields]>]) -> Duration {
    let started = Instant::now();
    for batch in batches {
        redis.xadd_bulk(stream, Arc::clone(batch)).await.unwrap();
    }
    started.elapsed()
}

fn rate(n: usize, d: Duration) -> f64 {
    n as f64 / d.as_secs_f64()
}

fn report(what: &str, keel: f64, raw: f64, unit: &str) {
    let ratio = keel / raw;
    println!("{what}");
    println!("  keel: {keel:>12.0} {unit}");
    println!("  raw:  {raw:>12.0} {unit}");
    println!(
        "  ratio keel/raw: {ratio:.2} (target >= {TARGET}: {})",
        if ratio >= TARGET { "met" } else { "NOT met" }
    );
}

#[tokio::main(flavor = "multi_thread")]
async fn main() {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    let db = format!("keel_bench_{}_{}", std::process::id(), nanos % 1_000_000);
    let admin = connect("postgres").await;
    admin
        .batch_execute(&format!("CREATE DATABASE {db}"))
        .await
        .unwrap();
    let prefix = format!("keel-bench:{}:", std::process::id());

    let pg_config = PostgresConfig {
        url: format!("postgres://postgres@127.0.0.1:5432/{db}"),
        ..PostgresConfig::default()
    };
    let redis_config = RedisConfig {
        key_prefix: prefix.clone(),
        stream_maxlen: 10_000_000,
        ..RedisConfig::default()
    };
    let handle = Runtime::new(SupervisorConfig::default())
        .child(ChildSpec::resource("pg", move |ctx| {
            Postgres::spawn(pg_config.clone(), ctx)
        }))
        .child(ChildSpec::resource("redis", move |ctx| {
            Redis::spawn(redis_config.clone(), ctx)
        }))
        .start()
        .await
        .unwrap();
    let pg = PgClient::new(handle.registry().clone(), "pg");
    let redis_client = RedisClient::new(handle.registry().clone(), "redis");
    // Waits for the first connect, which also applies the migrations.
    while pg.ping().await.is_err() {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let mut client = connect(&db).await;

    // --- PostgreSQL ---
    let rows = trades(ROWS);
    let batches: Vec<Arc<[Trade]>> = rows.chunks(BATCH).map(Arc::from).collect();
    let (mut best_keel, mut best_raw) = (Duration::MAX, Duration::MAX);
    client.batch_execute("TRUNCATE trades").await.unwrap();
    keel_insert(&pg, &batches).await;
    for _ in 0..ROUNDS {
        client.batch_execute("TRUNCATE trades").await.unwrap();
        best_raw = best_raw.min(raw_copy(&mut client, &rows).await);
        client.batch_execute("TRUNCATE trades").await.unwrap();
        best_keel = best_keel.min(keel_insert(&pg, &batches).await);
    }
    let stored: i64 = client
        .query_one("SELECT count(*) FROM trades", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(stored as usize, ROWS);
    // Every row again: each batch's COPY fails on the first duplicate and the
    // batch goes through the staged ON CONFLICT merge (the rare path).
    let duplicates = keel_insert(&pg, &batches).await;
    println!("{ROWS} trades in batches of {BATCH}, one batch at a time on each side, best of {ROUNDS} rounds");
    report(
        "trade insert path (PgActor: COPY, staged ON CONFLICT merge on duplicates) vs raw binary COPY",
        rate(ROWS, best_keel),
        rate(ROWS, best_raw),
        "rows/s",
    );
    println!(
        "  keel, every row a duplicate (fallback merge, no target): {:.0} rows/s",
        rate(ROWS, duplicates)
    );

    // --- Redis ---
    let entries: Vec<Fields> = rows
        .iter()
        .take(ENTRIES)
        .map(|t| {
            vec![
                ("i".to_owned(), t.instrument_name.clone().into_bytes()),
                ("s".to_owned(), t.trade_seq.to_string().into_bytes()),
                ("p".to_owned(), t.price.to_string().into_bytes()),
                ("a".to_owned(), t.amount.to_string().into_bytes()),
            ]
        })
        .collect();
    let entry_batches: Vec<Arc<[Fields]>> = entries.chunks(ENTRY_BATCH).map(Arc::from).collect();
    let mut raw_conn = redis::Client::open("redis://127.0.0.1:6379/0")
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    let (mut best_keel, mut best_raw) = (Duration::MAX, Duration::MAX);
    keel_xadd(&redis_client, "warmup", &entry_batches).await;
    for round in 0..ROUNDS {
        let raw_key = format!("{prefix}raw{round}");
        best_raw = best_raw.min(raw_xadd(&mut raw_conn, &raw_key, &entry_batches).await);
        best_keel =
            best_keel.min(keel_xadd(&redis_client, &format!("keel{round}"), &entry_batches).await);
    }
    println!("{ENTRIES} stream entries (4 fields) in batches of {ENTRY_BATCH}, one batch at a time, best of {ROUNDS} rounds");
    report(
        "xadd_bulk (RedisActor, breaker, pooled) vs raw pipelined XADD",
        rate(ENTRIES, best_keel),
        rate(ENTRIES, best_raw),
        "entries/s",
    );

    handle.shutdown().await;
    drop(client);
    let keys: Vec<String> = redis::cmd("KEYS")
        .arg(format!("{prefix}*"))
        .query_async(&mut raw_conn)
        .await
        .unwrap();
    if !keys.is_empty() {
        let _: () = redis::cmd("DEL")
            .arg(keys)
            .query_async(&mut raw_conn)
            .await
            .unwrap();
    }
    admin
        .batch_execute(&format!("DROP DATABASE {db} WITH (FORCE)"))
        .await
        .unwrap();
}
