//! End to end on one machine: `keel sim` → Keel (the real binary, its own
//! process) → Redis → PostgreSQL. Reports sustained trades/s to committed rows,
//! the p50/p99 latency from trade timestamp to committed row at 20,000 trades/s,
//! Keel's peak RSS, and, from the same run, raw pipelined XADD and raw COPY rates
//! as the ceiling. Targets: >= 50,000 trades/s; p99 < 250 ms and RSS < 100 MiB
//! at 20,000/s. Then the cost of inspection: the daemon saturated with its
//! message ring, counters and mailbox depths on, and with them off
//! (`[registry] record_messages = false`, `message_ring = 0`), in ABBA rounds,
//! with the messages handled per 1,000 rows; target: on loses < 5% of committed
//! rows/s. Run:
//! `cargo bench --bench pipeline`.

mod common;

use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use common::{connect, raw_copy, raw_xadd, trades};
use keel_actors::resource::redis::Fields;
use keel_core::secret::Secret;
use keel_deribit::sim::{self, SimConfig, SimHandle};

const INSTRUMENTS: [&str; 2] = ["BTC-PERPETUAL", "ETH-PERPETUAL"];
const WINDOW: Duration = Duration::from_secs(10);
const WARMUP: Duration = Duration::from_secs(3);
/// Asked of the simulator when measuring what inspection costs: more than the
/// daemon can commit, so the committed rate is the daemon's own ceiling.
const SATURATE: f64 = 150_000.0;
/// Rounds of the inspection comparison, each on, off, off, on (ABBA), so a
/// drift over the run (a growing table, autovacuum) weighs on both alike.
const INSPECTION_ROUNDS: usize = 2;

/// CPU seconds (user + system) a process has used so far.
fn cpu_seconds(pid: u32) -> f64 {
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

/// One measured window.
struct Phase {
    rows: f64,
    generated: f64,
    peak_rss_kib: u64,
    p50_ms: u64,
    p99_ms: u64,
    /// Keel's CPU seconds per 100,000 committed rows.
    cpu_per_100k: f64,
}

fn spawn_keel(
    config: &std::path::Path,
    analyzer: bool,
    inspect: bool,
    admin: Option<std::net::SocketAddr>,
) -> Child {
    let mut command = Command::new(env!("CARGO_BIN_EXE_keel"));
    command
        .args(["run", "--config"])
        .arg(config)
        .env("RUST_LOG", "warn")
        // KEEL_BENCH_ANALYZER=1 measures the daemon with candles being built too.
        .env("KEEL__ANALYZER__ENABLED", analyzer.to_string())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    if let Some(addr) = admin {
        command
            .env("KEEL__ADMIN__ENABLED", "true")
            .env("KEEL__ADMIN__LISTEN", format!("\"{addr}\""));
    }
    if !inspect {
        command
            .env("KEEL__REGISTRY__RECORD_MESSAGES", "false")
            .env("KEEL__REGISTRY__MESSAGE_RING", "0");
    }
    command.spawn().unwrap()
}

/// Messages handled so far by every actor of the daemon, from its admin API.
async fn messages_handled(admin: std::net::SocketAddr) -> u64 {
    let tree: serde_json::Value = match reqwest::get(format!("http://{admin}/api/tree")).await {
        Ok(response) => {
            serde_json::from_str(&response.text().await.unwrap_or_default()).unwrap_or_default()
        }
        Err(_) => return 0,
    };
    tree["actors"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|a| a["messages_handled"].as_u64())
        .sum()
}

fn free_port() -> std::net::SocketAddr {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
}

async fn wait_subscribed(sim: &SimHandle) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while sim.stats().subscriptions < INSTRUMENTS.len() {
        assert!(Instant::now() < deadline, "Keel never subscribed");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Waits until the daemon has committed what it received (every generated trade,
/// or no progress for two seconds: a subscriber the simulator dropped for being
/// too slow misses some), so one phase's backlog does not count as the next
/// phase's latency.
async fn drained(sim: &SimHandle, db: &tokio_postgres::Client) {
    let mut last = (stored(db).await, Instant::now());
    while last.0 < generated(sim) && last.1.elapsed() < Duration::from_secs(2) {
        tokio::time::sleep(Duration::from_millis(250)).await;
        let now = stored(db).await;
        if now > last.0 {
            last = (now, Instant::now());
        }
    }
}

fn stop_keel(mut keel: Child) {
    let _ = Command::new("kill")
        .args(["-TERM", &keel.id().to_string()])
        .status();
    let _ = keel.wait();
}

fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        })
        .unwrap_or(0)
}

async fn stored(db: &tokio_postgres::Client) -> i64 {
    db.query_one("SELECT count(*) FROM trades", &[])
        .await
        .map_or(0, |r| r.get(0))
}

fn generated(sim: &SimHandle) -> i64 {
    sim.stats()
        .instruments
        .values()
        .map(|i| i.last_trade_seq)
        .sum()
}

/// Runs `rate` for WARMUP + WINDOW and measures the window.
async fn phase(sim: &SimHandle, db: &tokio_postgres::Client, keel: &Child, rate: f64) -> Phase {
    sim.set_rate(rate);
    tokio::time::sleep(WARMUP).await;
    let (rows0, gen0, t0) = (stored(db).await, generated(sim), Instant::now());
    let cpu0 = cpu_seconds(keel.id());
    let start_ms = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64);
    let mut peak = 0;
    while t0.elapsed() < WINDOW {
        peak = peak.max(rss_kib(keel.id()));
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let secs = t0.elapsed().as_secs_f64();
    let cpu = cpu_seconds(keel.id()) - cpu0;
    let (rows1, gen1) = (stored(db).await, generated(sim));
    let end_ms = start_ms + (secs * 1000.0) as i64;
    let row = db
        .query_one(
            "SELECT coalesce(percentile_cont(0.5) WITHIN GROUP (ORDER BY lat), 0)::int8,
                    coalesce(percentile_cont(0.99) WITHIN GROUP (ORDER BY lat), 0)::int8
             FROM (SELECT extract(epoch FROM stored_at - ts) * 1000 AS lat FROM trades
                   WHERE ts >= to_timestamp($1::int8 / 1000.0) AND ts < to_timestamp($2::int8 / 1000.0)) s",
            &[&start_ms, &end_ms],
        )
        .await
        .unwrap();
    let committed = (rows1 - rows0) as f64;
    Phase {
        rows: committed / secs,
        generated: (gen1 - gen0) as f64 / secs,
        peak_rss_kib: peak,
        p50_ms: row.get::<_, i64>(0) as u64,
        p99_ms: row.get::<_, i64>(1) as u64,
        cpu_per_100k: cpu / committed.max(1.0) * 100_000.0,
    }
}

#[tokio::main(flavor = "multi_thread")]
async fn main() {
    let analyzer = std::env::var("KEEL_BENCH_ANALYZER").is_ok_and(|v| v == "1");
    let tag = format!(
        "{}_{}",
        std::process::id(),
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() % 100_000)
    );
    let db_name = format!("keel_bench_e2e_{tag}");
    let admin = connect("postgres").await;
    admin
        .batch_execute(&format!("CREATE DATABASE {db_name}"))
        .await
        .unwrap();
    let prefix = format!("keel-bench-e2e:{tag}:");

    let sim = sim::start(SimConfig {
        listen: "127.0.0.1:0".parse().unwrap(),
        instruments: INSTRUMENTS.iter().map(|s| s.to_string()).collect(),
        trades_per_sec: 0.0,
        client_id: Some("bench".into()),
        client_secret: Some(Secret::new("bench")),
        history_limit: 2_000_000,
        ..SimConfig::default()
    })
    .await
    .unwrap();

    let dir = std::env::temp_dir().join(format!("keel-bench-{tag}"));
    std::fs::create_dir_all(&dir).unwrap();
    let config = dir.join("keel.toml");
    std::fs::write(
        &config,
        format!(
            r#"
[postgres]
url = "postgres://postgres@127.0.0.1:5432/{db_name}"
[redis]
key_prefix = "{prefix}"
stream_maxlen = 10000000
[receiver]
url = "{ws}"
instruments = ["BTC-PERPETUAL", "ETH-PERPETUAL"]
interval = "raw"
client_id = "bench"
client_secret = "bench"
batch_size = 2000
linger = "5ms"
[distributor]
batch = 5000
[analyzer]
enabled = false
[schedule]
enabled = false
[admin]
enabled = false
"#,
            ws = sim.ws_url()
        ),
    )
    .unwrap();
    let admin_addr = free_port();
    let keel = spawn_keel(&config, analyzer, true, Some(admin_addr));
    let mut db = connect(&db_name).await;
    wait_subscribed(&sim).await;

    let (messages0, rows0) = (messages_handled(admin_addr).await, stored(&db).await);
    let high = phase(&sim, &db, &keel, 80_000.0).await;
    let (messages1, rows1) = (messages_handled(admin_addr).await, stored(&db).await);
    let messages_per_1000_rows =
        (messages1 - messages0) as f64 / (rows1 - rows0).max(1) as f64 * 1000.0;
    sim.set_rate(0.0);
    drained(&sim, &db).await;
    let low = phase(&sim, &db, &keel, 20_000.0).await;
    sim.set_rate(0.0);
    stop_keel(keel);

    // What inspection costs: ABBA rounds, each a fresh daemon saturated by the
    // simulator.
    let mut with = Vec::new();
    let mut without = Vec::new();
    for _ in 0..INSPECTION_ROUNDS {
        for inspect in [true, false, false, true] {
            tokio::time::sleep(Duration::from_secs(2)).await;
            let keel = spawn_keel(&config, analyzer, inspect, None);
            wait_subscribed(&sim).await;
            let measured = phase(&sim, &db, &keel, SATURATE).await;
            sim.set_rate(0.0);
            drained(&sim, &db).await;
            stop_keel(keel);
            if inspect { &mut with } else { &mut without }.push(measured);
        }
    }

    // Raw ceilings from the same run: COPY into the same table shape, pipelined XADD.
    let rows_for_copy = trades(200_000);
    db.batch_execute("TRUNCATE trades").await.unwrap();
    let copy = 200_000.0 / raw_copy(&mut db, &rows_for_copy).await.as_secs_f64();
    let entries: Vec<Fields> = rows_for_copy
        .iter()
        .map(|t| {
            vec![(
                "t".to_owned(),
                serde_json::to_vec(&(t.trade_seq, &t.instrument_name, t.price)).unwrap(),
            )]
        })
        .collect();
    let batches: Vec<Arc<[Fields]>> = entries.chunks(1000).map(Arc::from).collect();
    let mut conn = redis::Client::open("redis://127.0.0.1:6379/0")
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    let xadd = 200_000.0
        / raw_xadd(&mut conn, &format!("{prefix}raw"), &batches)
            .await
            .as_secs_f64();

    println!(
        "end to end: keel sim -> keel run (own process) -> Redis -> PostgreSQL, {} instruments, analyzer {}",
        INSTRUMENTS.len(),
        if analyzer { "on (1m, 5m, 1h candles)" } else { "off (KEEL_BENCH_ANALYZER=1 turns it on)" }
    );
    let (max_rows, max_gen, max_rss) = (high.rows, high.generated, high.peak_rss_kib);
    let (rows, gen, rss, p50, p99) = (
        low.rows,
        low.generated,
        low.peak_rss_kib,
        low.p50_ms,
        low.p99_ms,
    );
    println!("  asked 80,000/s: generated {max_gen:>8.0}/s, committed {max_rows:>8.0} rows/s (target >= 50,000: {}), peak RSS {:.1} MiB",
        if max_rows >= 50_000.0 { "met" } else { "NOT met" }, max_rss as f64 / 1024.0);
    println!("  asked 20,000/s: generated {gen:>8.0}/s, committed {rows:>8.0} rows/s, latency trade->row p50 {p50} ms, p99 {p99} ms (target < 250: {}), peak RSS {:.1} MiB (target < 100: {})",
        if p99 < 250 { "met" } else { "NOT met" }, rss as f64 / 1024.0, if rss < 100 * 1024 { "met" } else { "NOT met" });
    println!("  raw ceilings, same run: binary COPY {copy:>8.0} rows/s, pipelined XADD {xadd:>8.0} entries/s");
    println!(
        "  ratios: committed/COPY {:.2}, committed/XADD {:.2}",
        max_rows / copy,
        max_rows / xadd
    );
    let mean = |phases: &[Phase], of: fn(&Phase) -> f64| {
        phases.iter().map(of).sum::<f64>() / phases.len().max(1) as f64
    };
    let rounds = |phases: &[Phase]| {
        phases
            .iter()
            .map(|p| format!("{:.0}", p.rows))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let (on, off) = (mean(&with, |p| p.rows), mean(&without, |p| p.rows));
    let (cpu_on, cpu_off) = (
        mean(&with, |p| p.cpu_per_100k),
        mean(&without, |p| p.cpu_per_100k),
    );
    println!(
        "  inspection (asked {SATURATE:.0}/s, {} windows each in ABBA order, means):",
        2 * INSPECTION_ROUNDS
    );
    println!("    ring + counters + mailbox depths on:  {on:>8.0} rows/s ({}), {cpu_on:.2} CPU s per 100k rows", rounds(&with));
    println!("    off (record_messages = false, ring 0): {off:>8.0} rows/s ({}), {cpu_off:.2} CPU s per 100k rows", rounds(&without));
    println!(
        "    messages handled per 1,000 committed rows (80,000/s asked): {messages_per_1000_rows:.1}; \
         at the ~150 ns recording costs per message (cargo bench --bench inspection) that is \
         {:.3}% of the {:.0} µs of CPU the daemon spends per 1,000 rows",
        messages_per_1000_rows * 0.150 / (high.cpu_per_100k * 10_000.0) * 100.0,
        high.cpu_per_100k * 10_000.0
    );
    println!(
        "    on/off {:.3}: loss {:.1}% (target < 5%: {}); CPU per row on/off {:.3}",
        on / off,
        (1.0 - on / off) * 100.0,
        if on / off > 0.95 { "met" } else { "NOT met" },
        cpu_on / cpu_off
    );

    sim.stop().await;
    drop(db);
    let keys: Vec<String> = redis::cmd("KEYS")
        .arg(format!("{prefix}*"))
        .query_async(&mut conn)
        .await
        .unwrap_or_default();
    if !keys.is_empty() {
        let _: redis::RedisResult<()> = redis::cmd("DEL").arg(keys).query_async(&mut conn).await;
    }
    let _ = admin
        .batch_execute(&format!("DROP DATABASE {db_name} WITH (FORCE)"))
        .await;
    let _ = std::fs::remove_dir_all(dir);
}
