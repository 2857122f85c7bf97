//! The receiver alone, `keel sim` → Redis, against the floor any design can
//! reach: a minimal hand-written loop with the same crates (tokio-tungstenite,
//! serde_json, redis) that subscribes to the same channels and adds each trade's
//! text to the same streams in the same entry shape (up to `trades_per_entry`
//! trades of a frame packed in one entry) with one pipeline per frame, and
//! nothing else: no supervision, no buffer, no validation, no gap tracking, no
//! metrics. Trades are counted by `trade_seq`, not entries. Both
//! run as their own processes on the default `conf/keel.toml` channels
//! (`100ms`) and are measured in the same run, in ABBA order:
//! - at 50,000 trades/s, which both keep up with: CPU per trade;
//! - at 200,000 trades/s, more than either takes: trades/s added to the streams.
//!
//! Target: Keel's trades/s at least 0.8 of the loop's, and the loop's CPU per
//! trade at least 0.8 of Keel's. Run: `cargo bench --bench receiver`.

mod common;

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use common::{cpu_seconds, last_trade_seq, rss_kib};
use futures::{SinkExt, StreamExt};
use keel_deribit::sim::{self, SimConfig, SimHandle};
use serde::Deserialize;
use serde_json::value::RawValue;

const INSTRUMENTS: [&str; 2] = ["BTC-PERPETUAL", "ETH-PERPETUAL"];
const WINDOW: Duration = Duration::from_secs(10);
const WARMUP: Duration = Duration::from_secs(3);
const RATES: [f64; 2] = [50_000.0, 200_000.0];
const ROUNDS: usize = 2;
/// `[receiver] trades_per_entry` in `conf/keel.toml`.
const PER_ENTRY: usize = 16;
/// Set in the child process that runs the minimal loop.
const RAW_LOOP: &str = "KEEL_BENCH_RAW_LOOP";

#[derive(Deserialize)]
struct Frame<'a> {
    #[serde(borrow)]
    params: Option<Params<'a>>,
}

#[derive(Deserialize)]
struct Params<'a> {
    channel: &'a str,
    #[serde(borrow)]
    data: Vec<&'a RawValue>,
}

/// The floor: read a frame, split its trades, XADD them `PER_ENTRY` at a time
/// as Keel's receiver does (one trade as `t`, several as a JSON array in `b`).
async fn raw_loop(ws: &str, prefix: &str) {
    let (mut socket, _) = tokio_tungstenite::connect_async(ws)
        .await
        .expect("the simulator accepts");
    let channels: Vec<String> = INSTRUMENTS
        .iter()
        .map(|i| format!("trades.{i}.100ms"))
        .collect();
    let subscribe = serde_json::json!({
        "jsonrpc": "2.0", "id": 1, "method": "public/subscribe",
        "params": { "channels": channels },
    });
    socket
        .send(tokio_tungstenite::tungstenite::Message::text(
            subscribe.to_string(),
        ))
        .await
        .expect("subscribe");
    let mut redis = redis::Client::open("redis://127.0.0.1:6379/0")
        .expect("a redis url")
        .get_multiplexed_async_connection()
        .await
        .expect("Redis on 127.0.0.1:6379");
    while let Some(Ok(message)) = socket.next().await {
        let tokio_tungstenite::tungstenite::Message::Text(text) = message else {
            continue;
        };
        let Ok(Frame {
            params: Some(params),
        }) = serde_json::from_str::<Frame>(&text)
        else {
            continue;
        };
        let Some(instrument) = params.channel.split('.').nth(1) else {
            continue;
        };
        let key = format!("{prefix}trades:{instrument}");
        let mut pipe = redis::pipe();
        for chunk in params.data.chunks(PER_ENTRY) {
            let (field, value) = match chunk {
                [one] => ("t", one.get().to_owned()),
                many => {
                    let mut packed = String::from("[");
                    for (i, trade) in many.iter().enumerate() {
                        if i > 0 {
                            packed.push(',');
                        }
                        packed.push_str(trade.get());
                    }
                    packed.push(']');
                    ("b", packed)
                }
            };
            pipe.cmd("XADD")
                .arg(&key)
                .arg("MAXLEN")
                .arg("~")
                .arg(1_000_000 / PER_ENTRY)
                .arg("*")
                .arg(field)
                .arg(value)
                .ignore();
        }
        let _: redis::RedisResult<()> = pipe.query_async(&mut redis).await;
    }
}

fn free_port() -> std::net::SocketAddr {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
}

/// Keel's receiver on the default configuration, nothing else running.
fn keel(sim: &SimHandle, prefix: &str) -> Child {
    Command::new(env!("CARGO_BIN_EXE_keel"))
        .args(["run", "--config"])
        .arg(concat!(env!("CARGO_MANIFEST_DIR"), "/conf/keel.toml"))
        .env("RUST_LOG", "warn")
        .env("KEEL__REDIS__URL", "redis://127.0.0.1:6379/0")
        .env("KEEL__REDIS__KEY_PREFIX", prefix)
        .env("KEEL__SIM__IN_DAEMON", "false")
        .env("KEEL__RECEIVER__URL", sim.ws_url())
        .env("KEEL__BACKFILL__HTTP_URL", sim.http_url())
        .env("KEEL__ADMIN__LISTEN", free_port().to_string())
        .env("KEEL__DISTRIBUTOR__ENABLED", "false")
        .env("KEEL__ANALYZER__ENABLED", "false")
        .env("KEEL__SCHEDULE__ENABLED", "false")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("the keel binary starts")
}

fn raw(sim: &SimHandle, prefix: &str) -> Child {
    Command::new(std::env::current_exe().expect("this bench's path"))
        .env(RAW_LOOP, format!("{} {prefix}", sim.ws_url()))
        .stdout(Stdio::null())
        .spawn()
        .expect("the raw loop starts")
}

/// Trades added to the streams under `prefix` so far.
async fn added(redis: &mut redis::aio::MultiplexedConnection, prefix: &str) -> i64 {
    let mut total = 0;
    for instrument in INSTRUMENTS {
        total += last_trade_seq(redis, &format!("{prefix}trades:{instrument}")).await;
    }
    total
}

struct Measured {
    trades_per_sec: f64,
    cpu_us_per_trade: f64,
    peak_rss_kib: u64,
    slow_closes: u64,
}

async fn measure(
    sim: &SimHandle,
    redis: &mut redis::aio::MultiplexedConnection,
    mut child: Child,
    prefix: &str,
    rate: f64,
) -> Measured {
    let deadline = Instant::now() + Duration::from_secs(60);
    while sim.stats().subscriptions < INSTRUMENTS.len() {
        assert!(Instant::now() < deadline, "never subscribed");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    sim.set_rate(rate);
    tokio::time::sleep(WARMUP).await;
    let (added0, cpu0, slow0, t0) = (
        added(redis, prefix).await,
        cpu_seconds(child.id()),
        sim.stats().closed_slow,
        Instant::now(),
    );
    let mut peak = 0;
    while t0.elapsed() < WINDOW {
        peak = peak.max(rss_kib(child.id()));
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let (added1, cpu1, secs) = (
        added(redis, prefix).await,
        cpu_seconds(child.id()),
        t0.elapsed().as_secs_f64(),
    );
    sim.set_rate(0.0);
    let slow_closes = sim.stats().closed_slow - slow0;
    let _ = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    let _ = child.wait();
    let deadline = Instant::now() + Duration::from_secs(30);
    while sim.stats().subscriptions > 0 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let trades = (added1 - added0).max(1) as f64;
    Measured {
        trades_per_sec: trades / secs,
        cpu_us_per_trade: (cpu1 - cpu0) / trades * 1e6,
        peak_rss_kib: peak,
        slow_closes,
    }
}

#[tokio::main(flavor = "multi_thread")]
async fn main() {
    if let Ok(args) = std::env::var(RAW_LOOP) {
        let (ws, prefix) = args.split_once(' ').expect("ws url and prefix");
        raw_loop(ws, prefix).await;
        return;
    }
    let tag = format!(
        "{}_{}",
        std::process::id(),
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() % 100_000)
    );
    let sim = sim::start(SimConfig {
        listen: "127.0.0.1:0".parse().expect("an address"),
        instruments: INSTRUMENTS.iter().map(|s| s.to_string()).collect(),
        trades_per_sec: 0.0,
        history_limit: 100_000,
        ..SimConfig::default()
    })
    .await
    .expect("the simulator starts");
    let mut redis = redis::Client::open("redis://127.0.0.1:6379/0")
        .expect("a redis url")
        .get_multiplexed_async_connection()
        .await
        .expect("Redis on 127.0.0.1:6379 (run scripts/up)");

    println!(
        "receiver alone: keel sim -> Redis, {} instruments, 100ms channels, {} rounds in ABBA order",
        INSTRUMENTS.len(),
        ROUNDS
    );
    let mut run = 0;
    for rate in RATES {
        let (mut keel_runs, mut raw_runs) = (Vec::new(), Vec::new());
        for _ in 0..ROUNDS {
            for is_keel in [true, false, false, true] {
                run += 1;
                let prefix = format!("keel-bench-recv:{tag}:{run}:");
                let child = if is_keel {
                    keel(&sim, &prefix)
                } else {
                    raw(&sim, &prefix)
                };
                let measured = measure(&sim, &mut redis, child, &prefix, rate).await;
                if is_keel {
                    &mut keel_runs
                } else {
                    &mut raw_runs
                }
                .push(measured);
            }
        }
        let mean = |runs: &[Measured], of: fn(&Measured) -> f64| {
            runs.iter().map(of).sum::<f64>() / runs.len().max(1) as f64
        };
        let (keel_rate, raw_rate) = (
            mean(&keel_runs, |m| m.trades_per_sec),
            mean(&raw_runs, |m| m.trades_per_sec),
        );
        let (keel_cpu, raw_cpu) = (
            mean(&keel_runs, |m| m.cpu_us_per_trade),
            mean(&raw_runs, |m| m.cpu_us_per_trade),
        );
        let peak = |runs: &[Measured]| runs.iter().map(|m| m.peak_rss_kib).max().unwrap_or(0);
        let slow = |runs: &[Measured]| runs.iter().map(|m| m.slow_closes).sum::<u64>();
        println!("  asked {rate:.0}/s:");
        println!(
            "    keel receiver: {keel_rate:>8.0} trades/s, {keel_cpu:.2} µs CPU per trade, peak RSS {:.1} MiB, slow closes {}",
            peak(&keel_runs) as f64 / 1024.0,
            slow(&keel_runs)
        );
        println!(
            "    minimal loop:  {raw_rate:>8.0} trades/s, {raw_cpu:.2} µs CPU per trade, peak RSS {:.1} MiB, slow closes {}",
            peak(&raw_runs) as f64 / 1024.0,
            slow(&raw_runs)
        );
        let verdict = |met: bool| if met { "met" } else { "NOT met" };
        println!(
            "    ratios: trades/s keel/loop {:.2} (target >= 0.8: {}), CPU per trade loop/keel {:.2} (target >= 0.8: {})",
            keel_rate / raw_rate,
            verdict(keel_rate / raw_rate >= 0.8),
            raw_cpu / keel_cpu,
            verdict(raw_cpu / keel_cpu >= 0.8)
        );
    }

    sim.stop().await;
    let keys: Vec<String> = redis::cmd("KEYS")
        .arg(format!("keel-bench-recv:{tag}:*"))
        .query_async(&mut redis)
        .await
        .unwrap_or_default();
    if !keys.is_empty() {
        let _: redis::RedisResult<()> = redis::cmd("DEL").arg(keys).query_async(&mut redis).await;
    }
}
