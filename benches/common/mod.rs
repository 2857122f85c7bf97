//! Raw baselines shared by the benches: what the drivers alone achieve, measured
//! in the same run as Keel's figures.
#![allow(dead_code)]

use std::net::SocketAddr;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use keel_actors::resource::pg::op::copy_trades;
use keel_actors::resource::redis::Fields;
use keel_market::{Direction, Trade};
use std::sync::Arc;
use tokio_postgres::{Client, NoTls};

pub const BATCH: usize = 5_000;

pub fn trades(n: usize) -> Vec<Trade> {
    (0..n)
        .map(|i| Trade {
            instrument_name: format!("BENCH-{}", i % 8),
            trade_seq: i as i64,
            trade_id: format!("t{i}"),
            timestamp: UNIX_EPOCH + Duration::from_millis(1_700_000_000_000 + i as u64),
            price: 50_000.0 + (i % 100) as f64,
            amount: 10.0,
            direction: if i % 2 == 0 {
                Direction::Buy
            } else {
                Direction::Sell
            },
            tick_direction: (i % 4) as i16,
            mark_price: Some(50_000.5),
            index_price: 49_999.5,
            iv: None,
            liquidation: None,
            block_trade_id: None,
            combo_id: None,
            combo_trade_id: None,
        })
        .collect()
}

pub async fn connect(db: &str) -> Client {
    let (client, conn) = tokio_postgres::connect(
        &format!("host=127.0.0.1 port=5432 user=postgres dbname={db}"),
        NoTls,
    )
    .await
    .expect("PostgreSQL on 127.0.0.1:5432 (run scripts/up)");
    tokio::spawn(conn);
    client
}

/// Raw driver baseline: binary COPY of the same rows and columns, batch by
/// batch, each in its own transaction, with none of PgActor's locking,
/// duplicate check, pool, retries or actor messages.
pub async fn raw_copy(client: &mut Client, rows: &[Trade]) -> Duration {
    let started = Instant::now();
    for batch in rows.chunks(BATCH) {
        let tx = client.transaction().await.unwrap();
        copy_trades(&tx, batch).await.unwrap();
        tx.commit().await.unwrap();
    }
    started.elapsed()
}

/// Raw driver baseline: pipelined XADD, batch by batch.
pub async fn raw_xadd(
    conn: &mut redis::aio::MultiplexedConnection,
    key: &str,
    batches: &[Arc<[Fields]>],
) -> Duration {
    let started = Instant::now();
    for batch in batches {
        let mut pipe = redis::pipe();
        for fields in batch.iter() {
            let cmd = pipe
                .cmd("XADD")
                .arg(key)
                .arg("MAXLEN")
                .arg("~")
                .arg(10_000_000)
                .arg("*");
            for (name, value) in fields {
                cmd.arg(name).arg(value.as_slice());
            }
        }
        let _: Vec<String> = pipe.query_async(conn).await.unwrap();
    }
    started.elapsed()
}

/// CPU seconds (user + system) a process has used so far.
pub fn cpu_seconds(pid: u32) -> f64 {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return 0.0;
    };
    // Fields after the parenthesised command name; utime and stime are 14 and 15.
    let after = stat.rsplit_once(')').map_or("", |(_, rest)| rest);
    let fields: Vec<&str> = after.split_whitespace().collect();
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|f| f.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    (ticks(11) + ticks(12)) / 100.0
}

/// A process's resident set, KiB.
pub fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        })
        .unwrap_or(0)
}

/// The `trade_seq` of the newest trade in `stream` (0 when it is empty), read
/// from its last entry whatever its shape: one trade in field `t`, or several
/// packed in field `b`. The simulator numbers each instrument's trades 1, 2,
/// 3..., so the difference of two readings is the trades added between them,
/// however many entries held them.
pub async fn last_trade_seq(redis: &mut redis::aio::MultiplexedConnection, stream: &str) -> i64 {
    let last: Vec<(String, std::collections::HashMap<String, String>)> = redis::cmd("XREVRANGE")
        .arg(stream)
        .arg("+")
        .arg("-")
        .arg("COUNT")
        .arg(1)
        .query_async(redis)
        .await
        .unwrap_or_default();
    let Some((_, fields)) = last.into_iter().next() else {
        return 0;
    };
    let trade = match (fields.get("t"), fields.get("b")) {
        (Some(t), _) => serde_json::from_str::<serde_json::Value>(t).ok(),
        (None, Some(b)) => serde_json::from_str::<Vec<serde_json::Value>>(b)
            .ok()
            .and_then(|mut trades| trades.pop()),
        (None, None) => None,
    };
    trade
        .and_then(|t| t.get("trade_seq").and_then(serde_json::Value::as_i64))
        .unwrap_or(0)
}

/// The sum of a counter over its label sets, from a daemon's `/metrics`.
pub async fn metric(admin: SocketAddr, name: &str) -> f64 {
    let Ok(response) = reqwest::get(format!("http://{admin}/metrics")).await else {
        return 0.0;
    };
    let text = response.text().await.unwrap_or_default();
    text.lines()
        .filter(|l| {
            l.strip_prefix(name)
                .is_some_and(|rest| rest.starts_with('{') || rest.starts_with(' '))
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// A loopback address nothing listens on (for the moment).
pub fn free_port() -> SocketAddr {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
}

/// Now, in ms since the epoch.
pub fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}
