//! The chaos run: `keel run` (the real binary, the default configuration with
//! only addresses changed) against `keel sim`, its own redis-server and its own
//! PostgreSQL cluster, while faults drawn at random hit every part of it: Redis
//! restarts and `CLIENT PAUSE`, PostgreSQL restarts and `pg_terminate_backend`,
//! every simulator fault, and SIGKILL of Keel followed by a restart. Then
//! generation stops, Keel shuts down, gap repair runs, and the stored trades are
//! compared with what the exchange made.
//!
//! `cargo test --test chaos` runs it for 2 minutes; `scripts/chaos --minutes N`
//! for longer. Its last lines are the figures; it fails when anything was lost or
//! doubled, the supervisor gave up, or Keel did not shut down cleanly.

mod common;

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::pg_cluster::PrivatePg;
use common::redis::PrivateRedis;

const KEEL: &str = env!("CARGO_BIN_EXE_keel");
const INSTRUMENTS: [&str; 2] = ["BTC-PERPETUAL", "ETH-PERPETUAL"];
/// Trades per second the exchange makes while the run lasts.
const RATE: f64 = 200.0;

/// A small deterministic generator, so a run can be repeated with `--seed`.
struct Dice(u64);

impl Dice {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }

    fn millis(&mut self, from: u64, to: u64) -> Duration {
        Duration::from_millis(from + self.below(to - from))
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

/// Forwards a child's stderr to a file, so each incarnation's log is kept.
fn log_to(child: &mut Child, path: &Path) {
    let Some(stderr) = child.stderr.take() else {
        return;
    };
    let path = path.to_owned();
    std::thread::spawn(move || {
        use std::io::Write;
        let Ok(mut file) = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
        else {
            return;
        };
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            let _ = writeln!(file, "{line}");
        }
    });
}

/// Everything the run needs to reach: the servers, the exchange, Keel.
struct World {
    dir: tempfile::TempDir,
    redis: PrivateRedis,
    pg: PrivatePg,
    sim: Child,
    sim_port: u16,
    admin_port: u16,
    keel: Option<Child>,
    http: reqwest::Client,
    /// Restarts per actor, summed over Keel's incarnations.
    restarts: BTreeMap<String, u64>,
    /// The current incarnation's restarts as last seen.
    seen: BTreeMap<String, u64>,
    peak_rss_kib: u64,
    give_ups: u64,
    unexpected_exits: Vec<i32>,
}

impl World {
    fn env(&self) -> Vec<(String, String)> {
        vec![
            ("KEEL__POSTGRES__URL".into(), self.pg.url()),
            (
                "KEEL__REDIS__URL".into(),
                format!("redis://127.0.0.1:{}/0", self.redis.port),
            ),
            ("KEEL__SIM__IN_DAEMON".into(), "false".into()),
            (
                "KEEL__RECEIVER__URL".into(),
                format!("ws://127.0.0.1:{}/ws/api/v2", self.sim_port),
            ),
            (
                "KEEL__BACKFILL__HTTP_URL".into(),
                format!("http://127.0.0.1:{}", self.sim_port),
            ),
            (
                "KEEL__ADMIN__LISTEN".into(),
                format!("127.0.0.1:{}", self.admin_port),
            ),
        ]
    }

    fn config(&self) -> PathBuf {
        // The repository's default configuration, as an operator runs it.
        Path::new(env!("CARGO_MANIFEST_DIR")).join("conf/keel.toml")
    }

    fn start_keel(&mut self) {
        let mut child = Command::new(KEEL)
            .args(["run", "--config"])
            .arg(self.config())
            .envs(self.env())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start keel run");
        log_to(&mut child, &self.dir.path().join("keel.log"));
        self.keel = Some(child);
        self.seen.clear();
    }

    /// Folds the current incarnation's figures into the totals.
    fn retire_incarnation(&mut self) {
        for (name, n) in std::mem::take(&mut self.seen) {
            *self.restarts.entry(name).or_default() += n;
        }
    }

    fn keel_pid(&self) -> Option<u32> {
        self.keel.as_ref().map(Child::id)
    }

    fn sample_rss(&mut self) {
        let Some(pid) = self.keel_pid() else { return };
        let Ok(status) = std::fs::read_to_string(format!("/proc/{pid}/status")) else {
            return;
        };
        for line in status.lines() {
            if let Some(kib) = line.strip_prefix("VmHWM:") {
                let kib: u64 = kib
                    .trim()
                    .trim_end_matches("kB")
                    .trim()
                    .parse()
                    .unwrap_or(0);
                self.peak_rss_kib = self.peak_rss_kib.max(kib);
            }
        }
    }

    /// Reads the tree's restart counts; notices an exit Keel made by itself.
    async fn observe(&mut self) {
        self.sample_rss();
        if let Some(child) = self.keel.as_mut() {
            if let Ok(Some(status)) = child.try_wait() {
                let code = status.code().unwrap_or(-1);
                if code == 70 {
                    self.give_ups += 1;
                } else {
                    self.unexpected_exits.push(code);
                }
                self.retire_incarnation();
                self.start_keel();
                return;
            }
        }
        let url = format!("http://127.0.0.1:{}/api/tree", self.admin_port);
        let Ok(answer) = self
            .http
            .get(url)
            .timeout(Duration::from_secs(2))
            .send()
            .await
        else {
            return;
        };
        let Some(tree) = json_of(answer).await else {
            return;
        };
        for actor in tree["actors"].as_array().into_iter().flatten() {
            if let (Some(name), Some(n)) = (actor["name"].as_str(), actor["restarts"].as_u64()) {
                let seen = self.seen.entry(name.to_owned()).or_default();
                *seen = (*seen).max(n);
            }
        }
    }

    async fn sim_post(&self, path: &str, body: serde_json::Value) {
        let url = format!("http://127.0.0.1:{}{path}", self.sim_port);
        let _ = self
            .http
            .post(url)
            .header("content-type", "application/json")
            .body(body.to_string())
            .timeout(Duration::from_secs(5))
            .send()
            .await;
    }

    async fn sim_stats(&self) -> serde_json::Value {
        let url = format!("http://127.0.0.1:{}/sim/stats", self.sim_port);
        let answer = self.http.get(url).send().await.expect("sim stats");
        json_of(answer).await.expect("sim stats JSON")
    }

    async fn streaming(&self) -> bool {
        let url = format!("http://127.0.0.1:{}/api/tree", self.admin_port);
        let Ok(answer) = self
            .http
            .get(url)
            .timeout(Duration::from_secs(2))
            .send()
            .await
        else {
            return false;
        };
        let Some(tree) = json_of(answer).await else {
            return false;
        };
        tree["actors"]
            .as_array()
            .into_iter()
            .flatten()
            .any(|a| a["name"] == "receiver" && a["details"]["connection"] == "streaming")
    }

    fn redis_command(&self, args: &[&str]) {
        let Ok(client) = redis::Client::open(format!("redis://127.0.0.1:{}/0", self.redis.port))
        else {
            return;
        };
        if let Ok(mut conn) = client.get_connection_with_timeout(Duration::from_secs(2)) {
            let mut cmd = redis::cmd(args[0]);
            for arg in &args[1..] {
                cmd.arg(*arg);
            }
            let _: redis::RedisResult<redis::Value> = cmd.query(&mut conn);
        }
    }
}

async fn json_of(answer: reqwest::Response) -> Option<serde_json::Value> {
    serde_json::from_str(&answer.text().await.ok()?).ok()
}

/// Every kind of fault the run draws from.
const FAULTS: [&str; 14] = [
    "redis_restart",
    "redis_pause",
    "postgres_restart",
    "pg_terminate_backend",
    "keel_sigkill",
    "sim_disconnect",
    "sim_stall",
    "sim_ignore_test_request",
    "sim_malformed",
    "sim_book_gap",
    "sim_duplicate_trades",
    "sim_rate_limit",
    "sim_slow_consumer",
    "sim_silence_heartbeats",
];

async fn inject(world: &mut World, dice: &mut Dice, fault: &str) {
    match fault {
        "redis_restart" => {
            world.redis.stop();
            tokio::time::sleep(dice.millis(1_000, 15_000)).await;
            world.redis.resume();
        }
        "redis_pause" => {
            let ms = dice.millis(1_000, 10_000).as_millis().to_string();
            world.redis_command(&["CLIENT", "PAUSE", &ms, "ALL"]);
        }
        "postgres_restart" => {
            world.pg.stop();
            tokio::time::sleep(dice.millis(1_000, 15_000)).await;
            world.pg.resume();
        }
        "pg_terminate_backend" => {
            let client = world.pg.client().await;
            let _ = client
                .batch_execute(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity
                     WHERE application_name = 'keel'",
                )
                .await;
        }
        "keel_sigkill" => {
            world.sample_rss();
            if let Some(mut child) = world.keel.take() {
                let _ = child.kill();
                let _ = child.wait();
            }
            world.retire_incarnation();
            // A service manager's restart delay.
            tokio::time::sleep(dice.millis(500, 5_000)).await;
            world.start_keel();
        }
        sim => {
            let body = match sim {
                "sim_disconnect" => serde_json::json!({"fault": "disconnect"}),
                "sim_stall" => {
                    serde_json::json!({"fault": "stall", "ms": dice.millis(2_000, 15_000).as_millis() as u64})
                }
                "sim_ignore_test_request" => serde_json::json!({"fault": "ignore_test_request"}),
                "sim_malformed" => {
                    serde_json::json!({"fault": "malformed", "count": 1 + dice.below(50)})
                }
                "sim_book_gap" => serde_json::json!({"fault": "book_gap"}),
                "sim_duplicate_trades" => {
                    serde_json::json!({"fault": "duplicate_trades", "count": 1 + dice.below(100)})
                }
                "sim_rate_limit" => serde_json::json!({"fault": "rate_limit"}),
                "sim_slow_consumer" => {
                    serde_json::json!({"fault": "slow_consumer", "ms": dice.millis(500, 6_000).as_millis() as u64})
                }
                _ => {
                    serde_json::json!({"fault": "silence_heartbeats", "ms": dice.millis(5_000, 30_000).as_millis() as u64})
                }
            };
            world.sim_post("/sim/faults", body).await;
        }
    }
}

/// What a run found.
struct Outcome {
    lines: Vec<String>,
    ok: bool,
}

async fn run(minutes: f64, seed: u64) -> Outcome {
    let dir = tempfile::Builder::new()
        .prefix("keel-chaos-")
        .tempdir()
        .expect("temp dir");
    let sim_port = free_port();
    let mut sim = Command::new(KEEL)
        .args(["sim", "--listen", &format!("127.0.0.1:{sim_port}")])
        .args([
            "--instruments",
            &INSTRUMENTS.join(","),
            "--trades-per-sec",
            "0",
        ])
        .arg("--config")
        .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("conf/keel.toml"))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start keel sim");
    log_to(&mut sim, &dir.path().join("sim.log"));
    let mut world = World {
        redis: PrivateRedis::start(),
        pg: PrivatePg::start(),
        sim,
        sim_port,
        admin_port: free_port(),
        keel: None,
        http: reqwest::Client::new(),
        restarts: BTreeMap::new(),
        seen: BTreeMap::new(),
        peak_rss_kib: 0,
        give_ups: 0,
        unexpected_exits: Vec::new(),
        dir,
    };
    world.start_keel();
    let deadline = Instant::now() + Duration::from_secs(60);
    while !world.streaming().await {
        assert!(Instant::now() < deadline, "keel never streamed");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    world
        .sim_post("/sim/rate", serde_json::json!({"trades_per_sec": RATE}))
        .await;

    let mut dice = Dice(seed.max(1));
    let mut faults: BTreeMap<&str, u64> = BTreeMap::new();
    let mut deck: Vec<&str> = Vec::new();
    let until = Instant::now() + Duration::from_secs_f64(minutes * 60.0);
    while Instant::now() < until {
        let quiet = dice.millis(2_000, 8_000);
        let step = Instant::now() + quiet;
        while Instant::now() < step {
            world.observe().await;
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
        // Drawn from a shuffled deck, so even a short run meets every kind.
        if deck.is_empty() {
            deck = FAULTS.to_vec();
            for i in (1..deck.len()).rev() {
                deck.swap(i, dice.below(i as u64 + 1) as usize);
            }
        }
        let Some(fault) = deck.pop() else { break };
        *faults.entry(fault).or_default() += 1;
        inject(&mut world, &mut dice, fault).await;
    }

    // Generation stops; Keel gets time to catch up (a fault's last effects,
    // claims of a killed incarnation's pending entries), then shuts down.
    world
        .sim_post("/sim/rate", serde_json::json!({"trades_per_sec": 0.0}))
        .await;
    let client = world.pg.client().await;
    let mut last = -1i64;
    let mut quiet = 0;
    let settle_until = Instant::now() + Duration::from_secs(120);
    while quiet < 5 && Instant::now() < settle_until {
        world.observe().await;
        let now: i64 = client
            .query_one("SELECT count(*) FROM trades", &[])
            .await
            .map_or(-1, |r| r.get(0));
        quiet = if now == last { quiet + 1 } else { 0 };
        last = now;
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
    world.observe().await;
    world.sample_rss();
    let final_code = match world.keel.take() {
        Some(mut child) => {
            let _ = Command::new("kill")
                .args(["-TERM", &child.id().to_string()])
                .status();
            let started = Instant::now();
            loop {
                if let Ok(Some(status)) = child.try_wait() {
                    break status.code().unwrap_or(-1);
                }
                if started.elapsed() > Duration::from_secs(30) {
                    let _ = child.kill();
                    break -1;
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
        None => -1,
    };
    world.retire_incarnation();

    // Gap repair, as `keel task` runs it.
    let repair = Command::new(KEEL)
        .args(["task", "--config"])
        .arg(world.config())
        .args(["backfill", "--gaps"])
        .envs(world.env())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .map_or(-1, |s| s.code().unwrap_or(-1));

    let stats = world.sim_stats().await;
    let (mut generated, mut stored, mut missing, mut duplicated) = (0i64, 0i64, 0i64, 0i64);
    for instrument in INSTRUMENTS {
        let last = stats["instruments"][instrument]["last_trade_seq"]
            .as_i64()
            .unwrap_or(0);
        let row = client
            .query_one(
                "SELECT count(*), count(DISTINCT trade_seq), count(DISTINCT trade_id),
                        count(*) FILTER (WHERE trade_seq BETWEEN 1 AND $2)
                 FROM trades WHERE instrument_name = $1",
                &[&instrument, &last],
            )
            .await
            .expect("count stored trades");
        let (rows, seqs, ids, in_range): (i64, i64, i64, i64) =
            (row.get(0), row.get(1), row.get(2), row.get(3));
        generated += last;
        stored += rows;
        missing += last - in_range.min(last);
        duplicated += (rows - seqs) + (rows - ids) + (rows - in_range);
    }
    let _ = world.sim.kill();
    let _ = world.sim.wait();

    let total_restarts: u64 = world.restarts.values().sum();
    let by_actor: Vec<String> = world
        .restarts
        .iter()
        .filter(|(_, n)| **n > 0)
        .map(|(name, n)| format!("{name} {n}"))
        .collect();
    let kinds: Vec<String> = faults.iter().map(|(k, n)| format!("{k}={n}")).collect();
    let ok = world.give_ups == 0
        && world.unexpected_exits.is_empty()
        && missing == 0
        && duplicated == 0
        && final_code == 0
        && repair == 0
        && generated > 0;
    let lines = vec![
        format!("chaos: seed {seed}, {minutes} minutes, log in {}", world.dir.path().display()),
        format!("chaos: faults by kind: {}", kinds.join(" ")),
        format!("chaos: restarts: {total_restarts} ({})", by_actor.join(", ")),
        format!("chaos: give-ups: {}", world.give_ups),
        format!("chaos: unexpected exits: {:?}", world.unexpected_exits),
        format!("chaos: trades generated: {generated}, stored: {stored}, missing: {missing}, duplicated: {duplicated}"),
        format!("chaos: peak RSS: {:.1} MiB", world.peak_rss_kib as f64 / 1024.0),
        format!("chaos: exit code: {final_code} (keel run at SIGTERM), {repair} (gap repair)"),
        format!("chaos: {}", if ok { "nothing lost, nothing doubled" } else { "FAILED" }),
    ];
    if !ok {
        // Keep the logs of a failed run for whoever looks into it.
        let kept = world.dir.keep();
        eprintln!("chaos: logs kept in {}", kept.display());
    }
    Outcome { lines, ok }
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let value = |flag: &str| {
        args.iter()
            .position(|a| a == flag)
            .and_then(|i| args.get(i + 1))
            .cloned()
    };
    let minutes: Option<f64> = value("--minutes").and_then(|m| m.parse().ok());
    let seed: u64 = value("--seed")
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(1, |d| d.as_nanos() as u64)
        });
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("a runtime");
    let outcome = runtime.block_on(run(minutes.unwrap_or(2.0), seed));
    for line in &outcome.lines {
        println!("{line}");
    }
    if minutes.is_none() {
        // Run by `cargo test`: one test.
        let (passed, failed) = if outcome.ok { (1, 0) } else { (0, 1) };
        println!(
            "test a_two_minute_chaos_run_loses_and_doubles_nothing ... {}",
            if outcome.ok { "ok" } else { "FAILED" }
        );
        println!("{passed} passed, {failed} failed");
    }
    if !outcome.ok {
        std::process::exit(1);
    }
}
