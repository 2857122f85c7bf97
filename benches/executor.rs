//! Executor latency: intent -> exchange acknowledgement as a strategy sees it
//! (its intent written to `orders:intents`, the first event for the label read
//! back from `orders:events`), at 100 and 1,000 intents a second, beside a raw
//! round trip in the same run: the same order sent by a bare authenticated
//! WebSocket client straight to the simulator, its answer awaited.
//!
//! Keel's path adds to the raw one: the intent's XADD and the group read, the
//! order recorded in PostgreSQL (committed) before it is sent, the state
//! change recorded after the answer, and the event's XADD and read. Target:
//! p99 within 2 ms of the raw round trip's p99.
//!
//! The orders are immediate-or-cancel far below the market, so each is
//! answered at once (cancelled, unfilled) and none rests. The simulator's
//! matching-engine budget is raised above the rates measured, so the account's
//! rate limit (which the executor keeps to) does not pace the measurement.
//! Run: `cargo bench --bench executor`.

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use futures::{SinkExt, StreamExt};
use keel::config::Config;
use keel::{tree, Runtime};
use keel_actors::service::executor::{ExecutorConfig, InstrumentLimits};
use keel_core::secret::Secret;
use keel_deribit::sim::{self, RateLimits, SimConfig};
use parking_lot::Mutex;
use serde_json::{json, Value};
use tokio_tungstenite::tungstenite::Message;

mod common;
use common::connect;

const BTC: &str = "BTC-PERPETUAL";
const RATES: [f64; 2] = [100.0, 1_000.0];
const MEASURE: Duration = Duration::from_secs(5);
const TARGET_MS: f64 = 2.0;

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

fn free_port() -> SocketAddr {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
}

/// Calls and total seconds by `actor/op` of the PostgreSQL and Redis
/// resources so far: where the executor's time goes.
fn store_calls(handle: &keel::RuntimeHandle) -> BTreeMap<String, (u64, f64)> {
    let tree = handle.tree();
    let mut out = BTreeMap::new();
    for actor in [tree::PG, tree::REDIS] {
        let Some(ops) = tree
            .actor(actor)
            .and_then(|a| a.details.get("calls"))
            .and_then(Value::as_object)
        else {
            continue;
        };
        for (op, s) in ops {
            let count = s["count"].as_u64().unwrap_or(0);
            let sum = s["sum_seconds"].as_f64().unwrap_or(0.0);
            out.insert(format!("{actor}/{op}"), (count, sum));
        }
    }
    out
}

/// `(p50, p99, max)` in milliseconds.
fn quantiles(mut samples: Vec<Duration>) -> (f64, f64, f64) {
    samples.sort();
    let at = |q: f64| {
        let i = ((samples.len() as f64 * q).ceil() as usize).clamp(1, samples.len()) - 1;
        samples[i].as_secs_f64() * 1e3
    };
    (at(0.50), at(0.99), at(1.0))
}

type Ws =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// Sends one request and waits for the answer with its id (notifications in
/// between are skipped).
async fn call(ws: &mut Ws, id: u64, method: &str, params: Value) -> Value {
    let text = json!({"jsonrpc": "2.0", "id": id, "method": method, "params": params});
    ws.send(Message::Text(text.to_string().into()))
        .await
        .expect("send to the simulator");
    loop {
        let frame = tokio::time::timeout(Duration::from_secs(5), ws.next())
            .await
            .expect("an answer within 5 s")
            .expect("the connection stays open")
            .expect("a frame");
        let Message::Text(text) = frame else { continue };
        let value: Value = serde_json::from_str(text.as_str()).expect("JSON");
        if value["id"].as_u64() == Some(id) {
            return value;
        }
    }
}

async fn session(url: &str) -> Ws {
    let (mut ws, _) = tokio_tungstenite::connect_async(url)
        .await
        .expect("the simulator accepts");
    let timestamp = now_ms();
    let signature = sim::signature("bench", timestamp, "n", "");
    let auth = call(
        &mut ws,
        0,
        "public/auth",
        json!({"grant_type": "client_signature", "client_id": "bench",
               "timestamp": timestamp, "nonce": "n", "data": "", "signature": signature}),
    )
    .await;
    assert!(auth["result"].is_object(), "auth: {auth}");
    ws
}

/// The raw round trip: each order sent by a bare client at `rate`, its
/// answer awaited before the next (the simulator answers in well under the
/// pacing interval, so nothing queues).
async fn raw(url: &str, rate: f64, price: f64) -> Vec<Duration> {
    let mut ws = session(url).await;
    let mut samples = Vec::new();
    let mut tick = tokio::time::interval(Duration::from_secs_f64(1.0 / rate));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    let until = Instant::now() + MEASURE;
    let mut id = 1;
    while Instant::now() < until {
        tick.tick().await;
        id += 1;
        let started = Instant::now();
        let answer = call(
            &mut ws,
            id,
            "private/buy",
            json!({"instrument_name": BTC, "amount": 10, "type": "limit", "price": price,
                   "time_in_force": "immediate_or_cancel", "label": format!("raw-{rate}-{id}")}),
        )
        .await;
        samples.push(started.elapsed());
        assert!(answer["result"].is_object(), "order: {answer}");
    }
    samples
}

/// Intents written at `rate` for `MEASURE`; the time from each XADD to the
/// first event for its label.
async fn keel(
    redis: &redis::Client,
    prefix: &str,
    rate: f64,
    price: f64,
) -> (Vec<Duration>, usize) {
    let mut writer = redis
        .get_multiplexed_async_connection()
        .await
        .expect("Redis");
    let mut reader = redis
        .get_multiplexed_async_connection()
        .await
        .expect("Redis");
    let intents = format!("{prefix}orders:intents");
    let events = format!("{prefix}orders:events");
    let sent: Arc<Mutex<HashMap<String, Instant>>> = Arc::default();
    let tag = format!("k{}", rate as u64);
    let sender = {
        let sent = Arc::clone(&sent);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs_f64(1.0 / rate));
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
            let until = Instant::now() + MEASURE;
            let mut n = 0usize;
            while Instant::now() < until {
                tick.tick().await;
                let label = format!("{tag}-{n}");
                n += 1;
                sent.lock().insert(label.clone(), Instant::now());
                let _: String = redis::cmd("XADD")
                    .arg(&intents)
                    .arg("*")
                    .arg("action")
                    .arg("place")
                    .arg("label")
                    .arg(&label)
                    .arg("instrument")
                    .arg(BTC)
                    .arg("side")
                    .arg("buy")
                    .arg("amount")
                    .arg("10")
                    .arg("price")
                    .arg(price.to_string())
                    .arg("time_in_force")
                    .arg("immediate_or_cancel")
                    .query_async(&mut writer)
                    .await
                    .expect("XADD");
            }
            n
        })
    };
    let mut sender = sender;
    let mut samples = BTreeMap::new();
    let mut last = "0-0".to_owned();
    let mut total = None;
    let deadline = Instant::now() + MEASURE + Duration::from_secs(30);
    while Instant::now() < deadline && total.is_none_or(|n| samples.len() < n) {
        if total.is_none() && sender.is_finished() {
            total = Some((&mut sender).await.expect("the sender"));
        }
        read_events(&mut reader, &events, &mut last, &sent, &mut samples).await;
    }
    let total = total.unwrap_or(0);
    (samples.into_values().collect(), total)
}

async fn read_events(
    reader: &mut redis::aio::MultiplexedConnection,
    events: &str,
    last: &mut String,
    sent: &Mutex<HashMap<String, Instant>>,
    samples: &mut BTreeMap<String, Duration>,
) {
    type Reply = Option<Vec<(String, Vec<(String, Vec<(String, String)>)>)>>;
    let reply: Reply = redis::cmd("XREAD")
        .arg("COUNT")
        .arg(1000)
        .arg("BLOCK")
        .arg(100)
        .arg("STREAMS")
        .arg(events)
        .arg(&*last)
        .query_async(reader)
        .await
        .expect("XREAD");
    let now = Instant::now();
    for (_, entries) in reply.into_iter().flatten() {
        for (id, fields) in entries {
            *last = id;
            let fields: HashMap<String, String> = fields.into_iter().collect();
            let Some(label) = fields.get("label") else {
                continue;
            };
            if let Some(at) = sent.lock().get(label) {
                samples.entry(label.clone()).or_insert(now - *at);
            }
        }
    }
}

#[tokio::main(flavor = "multi_thread")]
async fn main() {
    let tag = format!("{}_{}", std::process::id(), now_ms() % 100_000);
    let db_name = format!("keel_bench_exec_{tag}");
    connect("postgres")
        .await
        .batch_execute(&format!("CREATE DATABASE {db_name}"))
        .await
        .expect("create the bench database");
    let sim = sim::start(SimConfig {
        listen: "127.0.0.1:0".parse().expect("an address"),
        instruments: vec![BTC.to_owned()],
        trades_per_sec: 10.0,
        client_id: Some("bench".into()),
        client_secret: Some(Secret::new("bench")),
        rate_limits: RateLimits {
            matching_rate: 10_000,
            matching_burst: 10_000,
            ..RateLimits::default()
        },
        ..SimConfig::default()
    })
    .await
    .expect("the simulator starts");
    let url = sim.ws_url();
    let mut ws = session(&url).await;
    let book = call(
        &mut ws,
        1,
        "public/get_order_book",
        json!({"instrument_name": BTC, "depth": 1}),
    )
    .await;
    let bid = book["result"]["bids"][0][0].as_f64().expect("a bid");
    drop(ws);
    // Far below the market, a whole number of ticks: answered unfilled.
    let price = ((bid * 0.9) / 10.0).round() * 10.0;

    let prefix = format!("bench:exec:{tag}:");
    let mut config = Config::default();
    config.postgres.url = format!("postgres://postgres@127.0.0.1:5432/{db_name}");
    config.redis.key_prefix = prefix.clone();
    config.admin.listen = free_port();
    config.sim.in_daemon = false;
    config.receiver.enabled = false;
    config.distributor.enabled = false;
    config.analyzer.enabled = false;
    config.schedule.enabled = false;
    config.executor = ExecutorConfig {
        enabled: true,
        url: url.clone(),
        client_id: Some("bench".into()),
        client_secret: Some(Secret::new("bench")),
        instruments: BTreeMap::from([(
            BTC.to_owned(),
            InstrumentLimits {
                max_amount: 1000.0,
                max_notional: None,
                max_position: 1_000_000.0,
                price_band: 0.2,
            },
        )]),
        ..ExecutorConfig::default()
    };
    let handle = Runtime::from_config(&config)
        .start()
        .await
        .expect("the tree starts");
    let ready = Instant::now() + Duration::from_secs(30);
    while handle
        .tree()
        .actor(tree::EXECUTOR)
        .and_then(|a| a.details.get("session").cloned())
        .is_none_or(|s| s != "trading")
    {
        assert!(Instant::now() < ready, "the executor never started trading");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let redis = redis::Client::open("redis://127.0.0.1:6379/0").expect("a redis url");

    println!(
        "executor: intent (XADD) -> first event for its label (XREAD), {BTC} IOC orders \
         answered at once, {}s per rate; raw: the same order over a bare WebSocket, answer awaited",
        MEASURE.as_secs()
    );
    println!(
        "{:>8} {:>10} {:>10} {:>10} {:>10} {:>10} {:>10} {:>10} {:>12}",
        "rate/s",
        "raw p50",
        "raw p99",
        "keel p50",
        "keel p99",
        "keel max",
        "acked",
        "sent",
        "p99 - raw"
    );
    let mut verdicts = Vec::new();
    for rate in RATES {
        let raw = quantiles(raw(&url, rate, price).await);
        let before = store_calls(&handle);
        // The strategy's side runs on a thread and runtime of its own, as a
        // strategy is a process of its own: its reads and writes are not
        // queued behind Keel's tasks on the bench's runtime.
        let (samples, sent) = {
            let (redis, prefix) = (redis.clone(), prefix.clone());
            tokio::task::spawn_blocking(move || {
                tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .expect("a runtime for the strategy")
                    .block_on(keel(&redis, &prefix, rate, price))
            })
            .await
            .expect("the strategy's side")
        };
        let after = store_calls(&handle);
        let acked = samples.len();
        let k = quantiles(samples);
        let over = k.1 - raw.1;
        println!(
            "{rate:>8.0} {:>8.3}ms {:>8.3}ms {:>8.3}ms {:>8.3}ms {:>8.3}ms {acked:>10} {sent:>10} {over:>10.3}ms",
            raw.0, raw.1, k.0, k.1, k.2
        );
        verdicts.push((rate, over, acked == sent));
        let means: Vec<String> = after
            .iter()
            .filter_map(|(op, (n, sum))| {
                let (n0, sum0) = before.get(op).copied().unwrap_or((0, 0.0));
                (n > &n0).then(|| {
                    format!(
                        "{op} {} x {:.3}ms",
                        n - n0,
                        (sum - sum0) / (n - n0) as f64 * 1e3
                    )
                })
            })
            .collect();
        println!("         store calls: {}", means.join(", "));
    }
    for (rate, over, all) in verdicts {
        println!(
            "{rate:.0}/s: p99 {over:.3} ms above the raw round trip (target <= {TARGET_MS} ms): {}{}",
            if over <= TARGET_MS { "met" } else { "NOT met" },
            if all { "" } else { "; some intents were never acknowledged" }
        );
    }
    handle.shutdown().await;
    let _: () = redis::cmd("EVAL")
        .arg("for _, k in ipairs(redis.call('KEYS', ARGV[1])) do redis.call('DEL', k) end")
        .arg(0)
        .arg(format!("{prefix}*"))
        .query_async(
            &mut redis
                .get_multiplexed_async_connection()
                .await
                .expect("Redis"),
        )
        .await
        .unwrap_or(());
    sim.stop().await;
    let _ = connect("postgres")
        .await
        .batch_execute(&format!("DROP DATABASE {db_name} WITH (FORCE)"))
        .await;
}
