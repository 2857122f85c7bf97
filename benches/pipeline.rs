//! End to end on one machine, on the default `conf/keel.toml` (only addresses,
//! the database and the key prefix overridden): `keel sim` → Keel (the real
//! binary, its own process) → Redis → PostgreSQL. Run:
//! `cargo bench --bench pipeline`.
//!
//! It prints, from one run:
//! - **the ramp**, analyzer off and on: the asked rate rises in steps; each step
//!   is 3 s of warm-up and a 10 s window. A step is sustained when the committed
//!   rate follows what the simulator generated (>= 97%), every consumer group's
//!   lag is bounded (it grew by less than half a second of trades in the window
//!   and ends below one second of them) and the simulator closed no connection
//!   for being slow. The ceiling is the highest sustained step's committed rate.
//! - **overload**: ten times the usual 20,000/s asked (200,000/s), the committed
//!   rate as a ratio to the ceiling (target >= 0.9: no collapse), with what was
//!   shed and how (receiver drops recorded as gaps, backlog holds, slow closes).
//! - **raw ceilings** of the same run: binary COPY and pipelined XADD, with the
//!   ceilings as ratios to them (target: analyzer off >= 0.6 of COPY; the
//!   analyzer costs < 15% of that).
//! - at 20,000/s with the analyzer on: p50/p99 trade → committed row and Keel's
//!   peak RSS (target < 64 MiB), on the default `100ms` channels (where the
//!   exchange holds each trade for up to 100 ms before sending it) and on `raw`
//!   channels with credentials (Keel's own latency; target p99 < 50 ms); peak
//!   RSS under overload.
//! - **CPU per stage** at 40,000/s: Keel's CPU seconds per 100,000 trades with
//!   the receiver alone, then with the distributor, then with the analyzer; each
//!   stage's cost is the difference (target: everything on <= 0.75, half of the
//!   1.47-1.51 measured before issue 16).
//! - **the cost of inspection**, saturated, recording on and off in ABBA rounds
//!   (target: on loses < 5% of committed rows/s).
//!
//! `KEEL_BENCH_STAGES=1 cargo bench --bench pipeline` measures the CPU per
//! stage alone (about a minute), to compare one change quickly; the figures
//! to report come from a whole run.

mod common;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{
    connect, cpu_seconds, free_port, last_trade_seq, metric, now_ms, raw_copy, raw_xadd, rss_kib,
    trades,
};
use keel_actors::resource::redis::Fields;
use keel_deribit::sim::{self, SimConfig, SimHandle};

const INSTRUMENTS: [&str; 2] = ["BTC-PERPETUAL", "ETH-PERPETUAL"];
const GROUPS: [&str; 2] = ["distributor", "analyzer"];
const WINDOW: Duration = Duration::from_secs(10);
const WARMUP: Duration = Duration::from_secs(3);
/// The asked rates of the ramp, trades/s across both instruments.
const RAMP: [f64; 15] = [
    20_000.0, 40_000.0, 50_000.0, 60_000.0, 70_000.0, 80_000.0, 90_000.0, 100_000.0, 110_000.0,
    120_000.0, 130_000.0, 140_000.0, 150_000.0, 170_000.0, 200_000.0,
];
/// Ten times the usual rate (the ramp's first step): a volatility spike.
const SPIKE: f64 = 200_000.0;
/// `[receiver] trades_per_entry` in `conf/keel.toml`.
const PER_ENTRY: usize = 16;
/// The rate the per-stage CPU is measured at: below the ceiling in every stage.
const STAGE_RATE: f64 = 40_000.0;
/// Rounds of the inspection comparison, each on, off, off, on (ABBA), so a
/// drift over the run (autovacuum, the page cache) weighs on both alike.
const INSPECTION_ROUNDS: usize = 2;

/// Which workers run besides the receiver.
#[derive(Clone, Copy)]
struct Stages {
    distributor: bool,
    analyzer: bool,
    /// `raw` channels with the exchange credentials instead of the default
    /// `100ms` ones.
    raw: bool,
}

/// One Keel process on the default configuration.
struct Daemon {
    child: Child,
    prefix: String,
    admin: SocketAddr,
}

impl Daemon {
    fn pid(&self) -> u32 {
        self.child.id()
    }

    fn streams(&self) -> impl Iterator<Item = String> + '_ {
        INSTRUMENTS
            .iter()
            .map(|i| format!("{}trades:{i}", self.prefix))
    }

    fn stop(mut self) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let _ = self.child.wait();
    }
}

/// What the bench holds for the whole run.
struct Bench {
    sim: SimHandle,
    db: tokio_postgres::Client,
    redis: redis::aio::MultiplexedConnection,
    db_name: String,
    tag: String,
    runs: usize,
}

impl Bench {
    /// Starts Keel on `conf/keel.toml`; only addresses, the database, the key
    /// prefix and the stages measured are set from outside.
    async fn keel(&mut self, stages: Stages, inspect: bool) -> Daemon {
        self.runs += 1;
        let prefix = format!("keel-bench-e2e:{}:{}:", self.tag, self.runs);
        let admin = free_port();
        let mut command = Command::new(env!("CARGO_BIN_EXE_keel"));
        command
            .args(["run", "--config"])
            .arg(concat!(env!("CARGO_MANIFEST_DIR"), "/conf/keel.toml"))
            .env("RUST_LOG", "warn")
            .env(
                "KEEL__POSTGRES__URL",
                format!("postgres://postgres@127.0.0.1:5432/{}", self.db_name),
            )
            .env("KEEL__REDIS__URL", "redis://127.0.0.1:6379/0")
            .env("KEEL__REDIS__KEY_PREFIX", &prefix)
            .env("KEEL__SIM__IN_DAEMON", "false")
            .env("KEEL__RECEIVER__URL", self.sim.ws_url())
            .env("KEEL__BACKFILL__HTTP_URL", self.sim.http_url())
            .env("KEEL__ADMIN__LISTEN", admin.to_string())
            .env("KEEL__DISTRIBUTOR__ENABLED", stages.distributor.to_string())
            .env("KEEL__ANALYZER__ENABLED", stages.analyzer.to_string())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        if stages.raw {
            command
                .env("KEEL__RECEIVER__INTERVAL", "raw")
                .env("KEEL__RECEIVER__CLIENT_ID", "bench")
                .env("KEEL__RECEIVER__CLIENT_SECRET", "bench");
        }
        if !inspect {
            command
                .env("KEEL__REGISTRY__RECORD_MESSAGES", "false")
                .env("KEEL__REGISTRY__MESSAGE_RING", "0");
        }
        let daemon = Daemon {
            child: command.spawn().expect("the keel binary starts"),
            prefix,
            admin,
        };
        let deadline = Instant::now() + Duration::from_secs(60);
        while self.sim.stats().subscriptions < INSTRUMENTS.len() {
            assert!(Instant::now() < deadline, "Keel never subscribed");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        daemon
    }

    /// Stops the daemon and empties the tables, so every run starts on tables
    /// of the same size.
    async fn stop(&mut self, daemon: Daemon) {
        self.sim.set_rate(0.0);
        daemon.stop();
        let deadline = Instant::now() + Duration::from_secs(30);
        while self.sim.stats().subscriptions > 0 && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        self.db
            .batch_execute("TRUNCATE trades, candles, trade_gaps")
            .await
            .expect("truncate");
    }

    async fn stored(&self) -> i64 {
        self.db
            .query_one("SELECT count(*) FROM trades", &[])
            .await
            .map_or(0, |r| r.get(0))
    }

    fn generated(&self) -> i64 {
        self.sim
            .stats()
            .instruments
            .values()
            .map(|i| i.last_trade_seq)
            .sum()
    }

    /// The largest backlog (undelivered plus pending) of any consumer group,
    /// summed over the streams.
    async fn backlog(&mut self, daemon: &Daemon) -> i64 {
        let mut by_group: HashMap<String, i64> = HashMap::new();
        for stream in daemon.streams() {
            let groups: Vec<HashMap<String, redis::Value>> = redis::cmd("XINFO")
                .arg("GROUPS")
                .arg(&stream)
                .query_async(&mut self.redis)
                .await
                .unwrap_or_default();
            for group in groups {
                let number = |key: &str| match group.get(key) {
                    Some(redis::Value::Int(n)) => *n,
                    _ => 0,
                };
                let name = match group.get("name") {
                    Some(v) => redis::from_redis_value_ref::<String>(v).unwrap_or_default(),
                    None => String::new(),
                };
                *by_group.entry(name).or_default() += number("lag") + number("pending");
            }
        }
        GROUPS
            .iter()
            .map(|g| by_group.get(*g).copied().unwrap_or(0))
            .max()
            .unwrap_or(0)
    }

    /// Entries and trades the receiver has added to the streams so far (an
    /// entry holds up to `[receiver] trades_per_entry` trades).
    async fn published(&mut self, daemon: &Daemon) -> (i64, i64) {
        let (mut entries, mut trades) = (0, 0);
        for stream in daemon.streams() {
            let info: HashMap<String, redis::Value> = redis::cmd("XINFO")
                .arg("STREAM")
                .arg(&stream)
                .query_async(&mut self.redis)
                .await
                .unwrap_or_default();
            if let Some(redis::Value::Int(n)) = info.get("entries-added") {
                entries += n;
            }
            trades += last_trade_seq(&mut self.redis, &stream).await;
        }
        (entries, trades)
    }

    /// Asks `rate` for WARMUP, then measures a WINDOW.
    async fn step(&mut self, daemon: &Daemon, rate: f64) -> Step {
        self.sim.set_rate(rate);
        tokio::time::sleep(WARMUP).await;
        let t0 = Instant::now();
        let (rows0, gen0, pub0) = (
            self.stored().await,
            self.generated(),
            self.published(daemon).await,
        );
        let backlog0 = self.backlog(daemon).await;
        let slow0 = self.sim.stats().closed_slow;
        let dropped0 = metric(daemon.admin, "keel_receiver_dropped_entries_total").await;
        let holds0 = metric(daemon.admin, "keel_receiver_backlog_holds_total").await;
        let cpu0 = cpu_seconds(daemon.pid());
        let start_ms = now_ms();
        let mut peak = 0;
        while t0.elapsed() < WINDOW {
            peak = peak.max(rss_kib(daemon.pid()));
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        let cpu = cpu_seconds(daemon.pid()) - cpu0;
        let secs = t0.elapsed().as_secs_f64();
        let (rows1, gen1, pub1) = (
            self.stored().await,
            self.generated(),
            self.published(daemon).await,
        );
        let backlog1 = self.backlog(daemon).await;
        // Groups count entries; the window's trades per entry turn them
        // into trades.
        let per_entry = (pub1.1 - pub0.1).max(1) as f64 / (pub1.0 - pub0.0).max(1) as f64;
        let in_trades = |entries: i64| (entries as f64 * per_entry).round() as i64;
        let end_ms = now_ms();
        let row = self
            .db
            .query_one(
                "SELECT coalesce(percentile_cont(0.5) WITHIN GROUP (ORDER BY lat), 0)::int8,
                        coalesce(percentile_cont(0.99) WITHIN GROUP (ORDER BY lat), 0)::int8
                 FROM (SELECT extract(epoch FROM stored_at - ts) * 1000 AS lat FROM trades
                       WHERE ts >= to_timestamp($1::int8 / 1000.0)
                         AND ts < to_timestamp($2::int8 / 1000.0)) s",
                &[&start_ms, &end_ms],
            )
            .await
            .expect("latency query");
        let generated = (gen1 - gen0) as f64 / secs;
        Step {
            asked: rate,
            generated,
            rows: (rows1 - rows0) as f64 / secs,
            published: (pub1.1 - pub0.1) as f64 / secs,
            backlog: (in_trades(backlog0), in_trades(backlog1)),
            cpu_per_100k: cpu / ((gen1 - gen0).max(1) as f64) * 100_000.0,
            peak_rss_kib: peak,
            p50_ms: row.get(0),
            p99_ms: row.get(1),
            slow_closed: self.sim.stats().closed_slow - slow0,
            dropped: metric(daemon.admin, "keel_receiver_dropped_entries_total").await - dropped0,
            holds: metric(daemon.admin, "keel_receiver_backlog_holds_total").await - holds0,
        }
    }

    /// Raises the asked rate until the committed rate stops following, then
    /// asks the spike. Returns the steps and the spike.
    async fn ramp(&mut self, analyzer: bool) -> Ramp {
        let stages = Stages {
            distributor: true,
            analyzer,
            raw: false,
        };
        let daemon = self.keel(stages, true).await;
        let mut steps = Vec::new();
        println!(
            "  ramp, analyzer {}:",
            if analyzer { "on (the default)" } else { "off" }
        );
        for rate in RAMP {
            let step = self.step(&daemon, rate).await;
            println!("    {}", step.line());
            let sustained = step.sustained();
            steps.push(step);
            if !sustained {
                break;
            }
        }
        // Let the backlog of a failed step go before the spike, so the spike
        // is measured from the same state as a spike on a daemon that kept up.
        self.sim.set_rate(0.0);
        let deadline = Instant::now() + Duration::from_secs(120);
        while self.backlog(&daemon).await > 0 && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
        let spike = self.step(&daemon, SPIKE).await;
        let gaps: i64 = self
            .db
            .query_one("SELECT count(*) FROM trade_gaps", &[])
            .await
            .map_or(0, |r| r.get(0));
        println!("    spike {}; {gaps} gaps recorded", spike.line());
        self.stop(daemon).await;
        Ramp { steps, spike }
    }
}

/// One measured window.
struct Step {
    asked: f64,
    generated: f64,
    rows: f64,
    /// Trades the receiver added to the streams, per second.
    published: f64,
    /// The largest group backlog at the window's start and end, in trades.
    backlog: (i64, i64),
    /// Keel's CPU seconds per 100,000 trades generated.
    cpu_per_100k: f64,
    peak_rss_kib: u64,
    p50_ms: i64,
    p99_ms: i64,
    slow_closed: u64,
    dropped: f64,
    holds: f64,
}

impl Step {
    /// The committed rate followed the generated one, the lag stayed bounded
    /// and the exchange dropped nobody.
    fn sustained(&self) -> bool {
        let second = self.generated;
        self.rows >= 0.97 * self.generated
            && self.generated >= 0.95 * self.asked
            && ((self.backlog.1 - self.backlog.0) as f64) < 0.5 * second
            && (self.backlog.1 as f64) < second
            && self.slow_closed == 0
            && self.dropped == 0.0
    }

    fn line(&self) -> String {
        format!(
            "asked {:>7.0}/s: generated {:>7.0}/s, committed {:>7.0} rows/s, backlog {} -> {}, \
             p50 {} ms, p99 {} ms, {:.2} CPU s per 100k, peak RSS {:.1} MiB, dropped {:.0}, \
             holds {:.0}, slow closes {}{}",
            self.asked,
            self.generated,
            self.rows,
            self.backlog.0,
            self.backlog.1,
            self.p50_ms,
            self.p99_ms,
            self.cpu_per_100k,
            self.peak_rss_kib as f64 / 1024.0,
            self.dropped,
            self.holds,
            self.slow_closed,
            if self.sustained() {
                ""
            } else {
                "  (not sustained)"
            }
        )
    }
}

struct Ramp {
    steps: Vec<Step>,
    spike: Step,
}

impl Ramp {
    /// The highest sustained step's committed rate.
    fn ceiling(&self) -> f64 {
        self.steps
            .iter()
            .filter(|s| s.sustained())
            .map(|s| s.rows)
            .fold(0.0, f64::max)
    }
}

/// Messages handled so far by every actor of the daemon, from its admin API.
async fn messages_handled(admin: SocketAddr) -> u64 {
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

#[tokio::main(flavor = "multi_thread")]
async fn main() {
    let tag = format!("{}_{}", std::process::id(), now_ms() % 100_000);
    let db_name = format!("keel_bench_e2e_{tag}");
    let admin = connect("postgres").await;
    admin
        .batch_execute(&format!("CREATE DATABASE {db_name}"))
        .await
        .expect("create the bench database");
    let sim = sim::start(SimConfig {
        listen: "127.0.0.1:0".parse().expect("an address"),
        instruments: INSTRUMENTS.iter().map(|s| s.to_string()).collect(),
        trades_per_sec: 0.0,
        client_id: Some("bench".into()),
        client_secret: Some(keel_core::secret::Secret::new("bench")),
        history_limit: 2_000_000,
        ..SimConfig::default()
    })
    .await
    .expect("the simulator starts");
    let redis = redis::Client::open("redis://127.0.0.1:6379/0")
        .expect("a redis url")
        .get_multiplexed_async_connection()
        .await
        .expect("Redis on 127.0.0.1:6379 (run scripts/up)");
    let mut bench = Bench {
        sim,
        db: connect("postgres").await,
        redis,
        db_name: db_name.clone(),
        tag: tag.clone(),
        runs: 0,
    };
    // The first daemon migrates the database; the bench reads its tables.
    let first = bench
        .keel(
            Stages {
                distributor: true,
                analyzer: true,
                raw: false,
            },
            true,
        )
        .await;
    bench.db = connect(&db_name).await;
    // It may subscribe before its migrations are done (the last one's table).
    let deadline = Instant::now() + Duration::from_secs(60);
    while !bench
        .db
        .query_one("SELECT to_regclass('fold_fences') IS NOT NULL", &[])
        .await
        .is_ok_and(|row| row.get::<_, bool>(0))
    {
        assert!(
            Instant::now() < deadline,
            "Keel never migrated the database"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    bench.stop(first).await;
    if std::env::var_os("KEEL_BENCH_STAGES").is_some() {
        println!("CPU per stage only (KEEL_BENCH_STAGES), on conf/keel.toml, {} instruments, 100ms channels", INSTRUMENTS.len());
        let stage_cpu = bench.stage_cpu().await;
        print_stages(&stage_cpu);
        bench.finish(admin).await;
        return;
    }

    println!(
        "end to end on conf/keel.toml: keel sim -> keel run (own process) -> Redis -> PostgreSQL, \
         {} instruments, 100ms channels",
        INSTRUMENTS.len()
    );
    let off = bench.ramp(false).await;
    let on = bench.ramp(true).await;

    let stage_cpu = bench.stage_cpu().await;

    // Keel's own latency: raw channels, where the exchange sends each trade as
    // it happens instead of holding it for up to 100 ms.
    let daemon = bench
        .keel(
            Stages {
                distributor: true,
                analyzer: true,
                raw: true,
            },
            true,
        )
        .await;
    let raw_low = bench.step(&daemon, RAMP[0]).await;
    bench.stop(daemon).await;

    // What inspection costs: ABBA rounds, each a fresh daemon asked the spike.
    let mut with = Vec::new();
    let mut without = Vec::new();
    let mut messages_per_1000_rows = 0.0;
    for _ in 0..INSPECTION_ROUNDS {
        for inspect in [true, false, false, true] {
            let daemon = bench
                .keel(
                    Stages {
                        distributor: true,
                        analyzer: true,
                        raw: false,
                    },
                    inspect,
                )
                .await;
            let (messages0, rows0) = (messages_handled(daemon.admin).await, bench.stored().await);
            let measured = bench.step(&daemon, SPIKE).await;
            if inspect {
                let (messages1, rows1) =
                    (messages_handled(daemon.admin).await, bench.stored().await);
                messages_per_1000_rows =
                    (messages1 - messages0) as f64 / (rows1 - rows0).max(1) as f64 * 1000.0;
            }
            bench.stop(daemon).await;
            if inspect { &mut with } else { &mut without }.push(measured);
        }
    }

    // Raw ceilings from the same run: COPY into the same table, pipelined XADD.
    let rows_for_copy = trades(200_000);
    let copy = 200_000.0 / raw_copy(&mut bench.db, &rows_for_copy).await.as_secs_f64();
    bench
        .db
        .batch_execute("TRUNCATE trades")
        .await
        .expect("truncate");
    // Entries shaped as the receiver writes them: PER_ENTRY trade texts of
    // the exchange's size packed in field `b`.
    let entries: Vec<Fields> = rows_for_copy
        .chunks(PER_ENTRY)
        .map(|chunk| {
            let texts: Vec<String> = chunk
                .iter()
                .map(|t| {
                    format!(
                        r#"{{"trade_seq":{},"trade_id":"{}","timestamp":1700000000000,"tick_direction":0,"price":{},"mark_price":50000.5,"instrument_name":"{}","index_price":49999.5,"direction":"buy","amount":10.0}}"#,
                        t.trade_seq, t.trade_id, t.price, t.instrument_name
                    )
                })
                .collect();
            vec![("b".to_owned(), format!("[{}]", texts.join(",")).into_bytes())]
        })
        .collect();
    let batches: Vec<Arc<[Fields]>> = entries.chunks(1000 / PER_ENTRY).map(Arc::from).collect();
    let raw_key = format!("keel-bench-e2e:{tag}:raw");
    let xadd = 200_000.0
        / raw_xadd(&mut bench.redis, &raw_key, &batches)
            .await
            .as_secs_f64();

    let verdict = |met: bool| if met { "met" } else { "NOT met" };
    let (ceiling_off, ceiling_on) = (off.ceiling(), on.ceiling());
    println!("  raw ceilings, same run: binary COPY {copy:>8.0} rows/s, pipelined XADD {xadd:>8.0} trades/s ({PER_ENTRY} per entry, as the receiver packs them)");
    println!(
        "  ceiling, analyzer off: {ceiling_off:>7.0} rows/s = {:.2} of COPY (target >= 0.6: {}), {:.2} of XADD",
        ceiling_off / copy,
        verdict(ceiling_off >= 0.6 * copy),
        ceiling_off / xadd
    );
    let analyzer_cost = 1.0 - ceiling_on / ceiling_off.max(1.0);
    println!(
        "  ceiling, analyzer on:  {ceiling_on:>7.0} rows/s = {:.2} of COPY, {:.2} of XADD; the analyzer costs {:.0}% (target < 15%: {})",
        ceiling_on / copy,
        ceiling_on / xadd,
        analyzer_cost * 100.0,
        verdict(analyzer_cost < 0.15)
    );
    for (name, ramp, ceiling) in [("off", &off, ceiling_off), ("on", &on, ceiling_on)] {
        let ratio = ramp.spike.rows / ceiling.max(1.0);
        println!(
            "  spike of {SPIKE:.0}/s, analyzer {name}: committed {:.0} rows/s = {ratio:.2} of the ceiling \
             (target >= 0.9, no collapse: {}); shed: {:.0} dropped from the buffer as gaps, \
             {:.0} backlog holds, {} slow closes; peak RSS {:.1} MiB",
            ramp.spike.rows,
            verdict(ratio >= 0.9),
            ramp.spike.dropped,
            ramp.spike.holds,
            ramp.spike.slow_closed,
            ramp.spike.peak_rss_kib as f64 / 1024.0
        );
    }
    if let Some(low) = on.steps.first() {
        println!(
            "  at {:.0}/s, analyzer on, 100ms channels (the exchange holds a trade up to 100 ms): trade -> row p50 {} ms, p99 {} ms (target < 50: {}); peak RSS {:.1} MiB (target < 64: {})",
            low.asked,
            low.p50_ms,
            low.p99_ms,
            verdict(low.p99_ms < 50),
            low.peak_rss_kib as f64 / 1024.0,
            verdict(low.peak_rss_kib < 64 * 1024)
        );
    }
    println!(
        "  at {:.0}/s, analyzer on, raw channels: trade -> row p50 {} ms, p99 {} ms (target < 50: {}); peak RSS {:.1} MiB (target < 64: {})",
        raw_low.asked,
        raw_low.p50_ms,
        raw_low.p99_ms,
        verdict(raw_low.p99_ms < 50),
        raw_low.peak_rss_kib as f64 / 1024.0,
        verdict(raw_low.peak_rss_kib < 64 * 1024)
    );
    print_stages(&stage_cpu);
    let mean = |phases: &[Step], of: fn(&Step) -> f64| {
        phases.iter().map(of).sum::<f64>() / phases.len().max(1) as f64
    };
    let rounds = |phases: &[Step]| {
        phases
            .iter()
            .map(|p| format!("{:.0}", p.rows))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let (rows_on, rows_off) = (mean(&with, |p| p.rows), mean(&without, |p| p.rows));
    let (cpu_on, cpu_off) = (
        mean(&with, |p| p.cpu_per_100k),
        mean(&without, |p| p.cpu_per_100k),
    );
    println!(
        "  inspection (asked {SPIKE:.0}/s, {} windows each in ABBA order, means):",
        2 * INSPECTION_ROUNDS
    );
    println!("    ring + counters + mailbox depths on:  {rows_on:>8.0} rows/s ({}), {cpu_on:.2} CPU s per 100k", rounds(&with));
    println!("    off (record_messages = false, ring 0): {rows_off:>8.0} rows/s ({}), {cpu_off:.2} CPU s per 100k", rounds(&without));
    println!("    messages handled per 1,000 committed rows: {messages_per_1000_rows:.1}");
    println!(
        "    on/off {:.3}: loss {:.1}% (target < 5%: {}); CPU per row on/off {:.3}",
        rows_on / rows_off,
        (1.0 - rows_on / rows_off) * 100.0,
        verdict(rows_on / rows_off > 0.95),
        cpu_on / cpu_off
    );

    bench.finish(admin).await;
}

impl Bench {
    /// CPU per stage, each a fresh daemon at the same rate: the receiver
    /// alone, then with the distributor, then with the analyzer too.
    async fn stage_cpu(&mut self) -> Vec<(&'static str, Step)> {
        let mut stage_cpu = Vec::new();
        for (name, stages) in [
            (
                "receiver alone",
                Stages {
                    distributor: false,
                    analyzer: false,
                    raw: false,
                },
            ),
            (
                "and distributor",
                Stages {
                    distributor: true,
                    analyzer: false,
                    raw: false,
                },
            ),
            (
                "and analyzer",
                Stages {
                    distributor: true,
                    analyzer: true,
                    raw: false,
                },
            ),
        ] {
            let daemon = self.keel(stages, true).await;
            let step = self.step(&daemon, STAGE_RATE).await;
            self.stop(daemon).await;
            stage_cpu.push((name, step));
        }
        stage_cpu
    }

    /// Stops the simulator, deletes the run's keys and drops its database.
    async fn finish(mut self, admin: tokio_postgres::Client) {
        self.sim.stop().await;
        let keys: Vec<String> = redis::cmd("KEYS")
            .arg(format!("keel-bench-e2e:{}:*", self.tag))
            .query_async(&mut self.redis)
            .await
            .unwrap_or_default();
        if !keys.is_empty() {
            let _: redis::RedisResult<()> = redis::cmd("DEL")
                .arg(keys)
                .query_async(&mut self.redis)
                .await;
        }
        // The bench's own connection to the database goes first.
        let Bench { db, db_name, .. } = self;
        drop(db);
        let _ = admin
            .batch_execute(&format!("DROP DATABASE {db_name} WITH (FORCE)"))
            .await;
    }
}

fn print_stages(stage_cpu: &[(&str, Step)]) {
    let verdict = |met: bool| if met { "met" } else { "NOT met" };
    println!("  CPU per stage at {STAGE_RATE:.0}/s (CPU s per 100k trades, a fresh daemon each):");
    let mut before = 0.0;
    for (name, step) in stage_cpu {
        println!(
            "    {name:<16} {:.2} in all, this stage {:.2} (committed {:.0} rows/s, published {:.0}/s of {:.0}/s generated)",
            step.cpu_per_100k,
            step.cpu_per_100k - before,
            step.rows,
            step.published,
            step.generated
        );
        before = step.cpu_per_100k;
    }
    println!(
        "    everything on: {before:.2} (target <= 0.75, half of 1.47-1.51: {})",
        verdict(before <= 0.75)
    );
}
