//! Several Keel instances sharing one Redis and one PostgreSQL, on one
//! machine. Run: `cargo bench --bench cluster`.
//!
//! It prints, from one run:
//! - **committed rows/s with 1, 2 and 3 distributor instances** (each its own
//!   `keel run` process on the default `conf/keel.toml`, only addresses, the
//!   database, the key prefix, the consumer name and the stages set from
//!   outside), draining the same backlog of 1,200,000 trades packed as the
//!   receiver packs them, beside the raw binary COPY ceiling of the same run,
//!   as ratios; with each process's share of the machine's CPU meanwhile,
//!   which says where the ceiling is.
//! - **the takeover time after a SIGKILL**: two instances in cluster mode
//!   receiving four instruments; the holder of one is killed, and the bench
//!   measures how long until another instance holds the instrument's lease and
//!   its trades flow into the stream again (the lease TTL plus at most one
//!   round), and how long gap repair then takes to fill the hole.

mod common;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::{connect, cpu_seconds, free_port, last_trade_seq, metric, now_ms, raw_copy, trades};
use keel_actors::resource::redis::Fields;
use keel_deribit::sim::{self, SimConfig, SimHandle};

const INSTRUMENTS: [&str; 4] = [
    "BTC-PERPETUAL",
    "ETH-PERPETUAL",
    "BTC-25JUN27-100000-C",
    "BTC-25JUN27-110000-C",
];
/// Trades of the backlog each distributor count drains.
const BACKLOG: usize = 1_200_000;
/// `[receiver] trades_per_entry` in `conf/keel.toml`.
const PER_ENTRY: usize = 16;
/// The default `[cluster] lease_ttl`.
const LEASE_TTL: Duration = Duration::from_secs(10);

/// One Keel process on `conf/keel.toml`.
struct Daemon {
    child: Child,
    admin: SocketAddr,
}

/// A bench that panics must not leave its daemons running.
impl Drop for Daemon {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

impl Daemon {
    fn start(db: &str, prefix: &str, env: &[(&str, String)]) -> Self {
        let admin = free_port();
        let mut command = Command::new(env!("CARGO_BIN_EXE_keel"));
        command
            .args(["run", "--config"])
            .arg(concat!(env!("CARGO_MANIFEST_DIR"), "/conf/keel.toml"))
            .env("RUST_LOG", "warn")
            .env(
                "KEEL__POSTGRES__URL",
                format!("postgres://postgres@127.0.0.1:5432/{db}"),
            )
            .env("KEEL__REDIS__URL", "redis://127.0.0.1:6379/0")
            .env("KEEL__REDIS__KEY_PREFIX", prefix)
            .env("KEEL__SIM__IN_DAEMON", "false")
            .env("KEEL__ADMIN__LISTEN", admin.to_string())
            .env("KEEL__SCHEDULE__ENABLED", "false")
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        // KEEL_BENCH_LOGS=DIR keeps each daemon's log there.
        if let Ok(dir) = std::env::var("KEEL_BENCH_LOGS") {
            let name = env
                .iter()
                .find(|(k, _)| *k == "KEEL__CLUSTER__INSTANCE")
                .map_or("keel".to_owned(), |(_, v)| v.clone());
            if let Ok(file) = std::fs::File::create(format!("{dir}/{prefix}{name}.log")) {
                command.stderr(file).env("RUST_LOG", "info");
            }
        }
        for (key, value) in env {
            command.env(key, value);
        }
        Self {
            child: command.spawn().expect("keel starts"),
            admin,
        }
    }

    fn stop(mut self) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let _ = self.child.wait();
    }

    fn metric(&self, name: &'static str) -> impl std::future::Future<Output = f64> {
        metric(self.admin, name)
    }
}

/// CPU seconds of every process named `name` (`postgres`, `redis-server`).
fn cpu_of(name: &str) -> f64 {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return 0.0;
    };
    dir.filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            std::fs::read_to_string(format!("/proc/{pid}/comm")).is_ok_and(|c| c.trim() == name)
        })
        .map(cpu_seconds)
        .sum()
}

/// The backlog: `BACKLOG` trades over the instruments, packed `PER_ENTRY` to an
/// entry as the receiver writes them, under `prefix`.
async fn fill(redis: &mut redis::aio::MultiplexedConnection, prefix: &str) {
    let per_instrument = BACKLOG / INSTRUMENTS.len();
    for instrument in INSTRUMENTS {
        let key = format!("{prefix}trades:{instrument}");
        let texts: Vec<String> = (1..=per_instrument)
            .map(|seq| {
                format!(
                    r#"{{"trade_seq":{seq},"trade_id":"{instrument}-{seq}","timestamp":{},"tick_direction":0,"price":{},"mark_price":50000.5,"instrument_name":"{instrument}","index_price":49999.5,"direction":"{}","amount":10.0}}"#,
                    1_765_000_000_000u64 + seq as u64,
                    50_000.0 + (seq % 100) as f64,
                    if seq % 2 == 0 { "buy" } else { "sell" },
                )
            })
            .collect();
        let entries: Vec<Fields> = texts
            .chunks(PER_ENTRY)
            .map(keel_actors::service::streams::encode_texts)
            .collect();
        for batch in entries.chunks(2_000) {
            let mut pipe = redis::pipe();
            for fields in batch {
                let cmd = pipe.cmd("XADD").arg(&key).arg("*");
                for (name, value) in fields {
                    cmd.arg(name).arg(value.as_slice());
                }
            }
            let _: Vec<String> = pipe.query_async(redis).await.expect("XADD");
        }
    }
}

/// Per process kind, the share of one core used between two readings.
struct Cpu {
    keel: f64,
    postgres: f64,
    redis: f64,
}

fn cpu_now(pids: &[u32]) -> Cpu {
    Cpu {
        keel: pids.iter().map(|&p| cpu_seconds(p)).sum(),
        postgres: cpu_of("postgres"),
        redis: cpu_of("redis-server"),
    }
}

#[tokio::main(flavor = "multi_thread")]
async fn main() {
    let tag = format!("{}_{}", std::process::id(), now_ms() % 100_000);
    let db = format!("keel_bench_cluster_{tag}");
    let admin = connect("postgres").await;
    admin
        .batch_execute(&format!("CREATE DATABASE {db}"))
        .await
        .expect("create the bench database");
    let status = Command::new(env!("CARGO_BIN_EXE_keel"))
        .args(["migrate", "--config"])
        .arg(concat!(env!("CARGO_MANIFEST_DIR"), "/conf/keel.toml"))
        .env(
            "KEEL__POSTGRES__URL",
            format!("postgres://postgres@127.0.0.1:5432/{db}"),
        )
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .expect("keel migrate");
    assert!(status.success(), "keel migrate");
    let mut pg = connect(&db).await;
    let mut redis = redis::Client::open("redis://127.0.0.1:6379/0")
        .expect("a redis url")
        .get_multiplexed_async_connection()
        .await
        .expect("Redis on 127.0.0.1:6379 (run scripts/up)");

    println!(
        "distributors sharing one consumer group: each a keel run on conf/keel.toml, \
         draining {BACKLOG} trades ({PER_ENTRY} per entry, {} streams)",
        INSTRUMENTS.len()
    );
    let instruments = format!("[{}]", INSTRUMENTS.map(|i| format!("\"{i}\"")).join(","));
    let mut rates = Vec::new();
    for n in 1..=3usize {
        pg.batch_execute("TRUNCATE trades").await.expect("truncate");
        let prefix = format!("keel-bench-cluster:{tag}:{n}:");
        fill(&mut redis, &prefix).await;
        let daemons: Vec<Daemon> = (0..n)
            .map(|k| {
                Daemon::start(
                    &db,
                    &prefix,
                    &[
                        ("KEEL__RECEIVER__ENABLED", "false".into()),
                        ("KEEL__RECEIVER__INSTRUMENTS", instruments.clone()),
                        ("KEEL__ANALYZER__ENABLED", "false".into()),
                        ("KEEL__CLUSTER__ENABLED", "true".into()),
                        ("KEEL__CLUSTER__INSTANCE", format!("d{k}")),
                        ("KEEL__DISTRIBUTOR__CONSUMER", format!("d{k}")),
                    ],
                )
            })
            .collect();
        let pids: Vec<u32> = daemons.iter().map(|d| d.child.id()).collect();
        // Measured between 10% and 90% of the backlog: no start, no tail.
        let deadline = Instant::now() + Duration::from_secs(300);
        let (low, high) = (BACKLOG as f64 * 0.1, BACKLOG as f64 * 0.9);
        let mut start: Option<(Instant, f64, Cpu)> = None;
        let mut end: Option<(Instant, f64, Cpu)> = None;
        while end.is_none() {
            assert!(
                Instant::now() < deadline,
                "{n} distributors never drained the backlog"
            );
            let readings = daemons
                .iter()
                .map(|d| d.metric("keel_consumer_rows_written_total"));
            let rows: f64 = futures::future::join_all(readings).await.iter().sum();
            if start.is_none() && rows >= low {
                start = Some((Instant::now(), rows, cpu_now(&pids)));
            }
            if rows >= high {
                end = Some((Instant::now(), rows, cpu_now(&pids)));
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        for d in daemons {
            d.stop();
        }
        let (Some((t0, r0, c0)), Some((t1, r1, c1))) = (start, end) else {
            unreachable!("both readings were taken");
        };
        let secs = (t1 - t0).as_secs_f64();
        let rate = (r1 - r0) / secs;
        println!(
            "  {n} distributor(s): {rate:>9.0} rows/s; CPU (cores): keel {:.2}, postgres {:.2}, redis {:.2}",
            (c1.keel - c0.keel) / secs,
            (c1.postgres - c0.postgres) / secs,
            (c1.redis - c0.redis) / secs,
        );
        rates.push(rate);
        let _: Result<(), _> = redis::cmd("EVAL")
            .arg("for _, k in ipairs(redis.call('KEYS', ARGV[1])) do redis.call('DEL', k) end")
            .arg(0)
            .arg(format!("{prefix}*"))
            .query_async(&mut redis)
            .await;
    }
    let rows_for_copy = trades(200_000);
    pg.batch_execute("TRUNCATE trades").await.expect("truncate");
    let copy = 200_000.0 / raw_copy(&mut pg, &rows_for_copy).await.as_secs_f64();
    pg.batch_execute("TRUNCATE trades").await.expect("truncate");
    println!("  raw binary COPY, one connection, batches of 5,000: {copy:.0} rows/s");
    for (n, rate) in rates.iter().enumerate() {
        println!(
            "  {} distributor(s) / raw COPY: {:.2}; / one distributor: {:.2}",
            n + 1,
            rate / copy,
            rate / rates[0]
        );
    }

    takeover(&db, &tag, &mut redis).await;
    drop(admin);
}

/// Two instances receive four instruments; the holder of one is killed.
async fn takeover(db: &str, tag: &str, redis: &mut redis::aio::MultiplexedConnection) {
    let sim: SimHandle = sim::start(SimConfig {
        listen: "127.0.0.1:0".parse().expect("an address"),
        instruments: INSTRUMENTS.iter().map(|s| s.to_string()).collect(),
        trades_per_sec: 2_000.0,
        ..SimConfig::default()
    })
    .await
    .expect("the simulator starts");
    let prefix = format!("keel-bench-cluster:{tag}:takeover:");
    let instruments = format!("[{}]", INSTRUMENTS.map(|i| format!("\"{i}\"")).join(","));
    let instance = |k: usize| {
        Daemon::start(
            db,
            &prefix,
            &[
                ("KEEL__RECEIVER__URL", sim.ws_url()),
                ("KEEL__RECEIVER__INSTRUMENTS", instruments.clone()),
                ("KEEL__BACKFILL__HTTP_URL", sim.http_url()),
                ("KEEL__CLUSTER__ENABLED", "true".into()),
                ("KEEL__CLUSTER__INSTANCE", format!("t{k}")),
                ("KEEL__DISTRIBUTOR__CONSUMER", format!("t{k}")),
                ("KEEL__ANALYZER__CONSUMER", format!("t{k}")),
            ],
        )
    };
    let mut daemons: HashMap<String, Daemon> = HashMap::new();
    daemons.insert("t0".into(), instance(0));
    daemons.insert("t1".into(), instance(1));
    let holder = |redis: &mut redis::aio::MultiplexedConnection, instrument: &str| {
        let key = format!("{prefix}cluster:lease:receiver:{instrument}");
        let mut redis = redis.clone();
        async move {
            let v: Option<String> = redis::cmd("GET")
                .arg(key)
                .query_async(&mut redis)
                .await
                .unwrap_or(None);
            v.and_then(|v| v.rsplit_once(':').map(|(who, _)| who.to_owned()))
        }
    };
    // Settled: both hold some, every instrument held, trades flowing.
    let deadline = Instant::now() + Duration::from_secs(60);
    let victim = loop {
        assert!(Instant::now() < deadline, "the instances never settled");
        let mut held = Vec::new();
        for i in INSTRUMENTS {
            held.push(holder(redis, i).await);
        }
        let both = held.iter().any(|h| h.as_deref() == Some("t0"))
            && held.iter().any(|h| h.as_deref() == Some("t1"));
        if both && held.iter().all(Option::is_some) {
            let at = held
                .iter()
                .position(|h| h.as_deref() == Some("t0"))
                .unwrap_or(0);
            break INSTRUMENTS[at];
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    tokio::time::sleep(Duration::from_secs(3)).await;
    let stream = format!("{prefix}trades:{victim}");
    if let Some(mut dead) = daemons.remove("t0") {
        let _ = dead.child.kill();
        let _ = dead.child.wait();
    }
    let killed = Instant::now();
    let before = last_trade_seq(redis, &stream).await;
    let mut leased = None;
    let flowing = loop {
        assert!(
            killed.elapsed() < Duration::from_secs(60),
            "never taken over"
        );
        if leased.is_none() && holder(redis, victim).await.as_deref() == Some("t1") {
            leased = Some(killed.elapsed());
        }
        if leased.is_some() && last_trade_seq(redis, &stream).await > before + 10 {
            break killed.elapsed();
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let leased = leased.unwrap_or_default();
    println!(
        "takeover after SIGKILL ({victim}; lease_ttl {LEASE_TTL:?}, renew_every 3s): \
         lease taken after {:.1} s, trades flowing again after {:.1} s",
        leased.as_secs_f64(),
        flowing.as_secs_f64()
    );
    // Let the distributor store what arrived, then repair the hole.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let repair_started = Instant::now();
    let status = Command::new(env!("CARGO_BIN_EXE_keel"))
        .args(["task", "backfill", "--gaps", "--config"])
        .arg(concat!(env!("CARGO_MANIFEST_DIR"), "/conf/keel.toml"))
        .env(
            "KEEL__POSTGRES__URL",
            format!("postgres://postgres@127.0.0.1:5432/{db}"),
        )
        .env("KEEL__REDIS__URL", "redis://127.0.0.1:6379/0")
        .env("KEEL__REDIS__KEY_PREFIX", &prefix)
        .env("KEEL__BACKFILL__HTTP_URL", sim.http_url())
        .env("KEEL__RECEIVER__INSTRUMENTS", &instruments)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .expect("keel task backfill --gaps");
    println!(
        "  gap repair of the hole afterwards: {:.1} s ({})",
        repair_started.elapsed().as_secs_f64(),
        if status.success() {
            "succeeded"
        } else {
            "FAILED"
        }
    );
    for (_, d) in daemons {
        d.stop();
    }
    sim.stop().await;
}
