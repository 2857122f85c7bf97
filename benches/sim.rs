//! `keel sim` throughput: trades per second generated, serialized and delivered
//! to one authenticated `trades.*.raw` subscriber, against a raw baseline from
//! the same run: a bare WebSocket server pushing pre-serialized notifications of
//! the same shape to the same client (the transport's ceiling).
//!
//! Target: at least 200,000 trade notifications per second. Run:
//! `cargo bench --bench sim`.

use std::time::{Duration, Instant};

use futures::{SinkExt, StreamExt};
use keel_core::secret::Secret;
use keel_deribit::model::PublicTrade;
use keel_deribit::sim::{self, SimConfig};
use keel_deribit::{parse_server_frame, ServerFrame};
use tokio_tungstenite::tungstenite::Message;

const TARGET: f64 = 200_000.0;
const MEASURE: Duration = Duration::from_secs(4);
const INSTRUMENTS: [&str; 4] = [
    "BTC-PERPETUAL",
    "ETH-PERPETUAL",
    "BTC-25DEC26",
    "ETH-25DEC26",
];

/// Reads notifications for `MEASURE` after a warm-up; returns trades per second.
async fn count_trades(url: &str, prelude: Vec<String>) -> f64 {
    let (mut ws, _) = tokio_tungstenite::connect_async(url).await.unwrap();
    for text in prelude {
        ws.send(Message::Text(text.into())).await.unwrap();
    }
    let warm_until = Instant::now() + Duration::from_millis(500);
    let mut counting_since = None;
    let mut trades = 0usize;
    while let Some(Ok(message)) = ws.next().await {
        let Message::Text(text) = message else {
            continue;
        };
        let Ok(ServerFrame::Subscription { data, .. }) = parse_server_frame(text.as_str()) else {
            continue;
        };
        let now = Instant::now();
        if now < warm_until {
            continue;
        }
        let since = *counting_since.get_or_insert(now);
        // Decoded into typed trades: a real client pays for that too.
        trades += serde_json::from_str::<Vec<PublicTrade>>(data.get()).map_or(0, |t| t.len());
        if now.duration_since(since) >= MEASURE {
            return trades as f64 / now.duration_since(since).as_secs_f64();
        }
    }
    panic!("the stream ended before the measurement did");
}

/// A bare WebSocket server sending the same notifications as fast as it can.
async fn raw_server() -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                let Ok(mut ws) = tokio_tungstenite::accept_async(stream).await else {
                    return;
                };
                // A 1 ms tick at the target rate carries about 50 trades per instrument.
                let trades: Vec<PublicTrade> = (0..50)
                    .map(|i| PublicTrade {
                        trade_seq: i,
                        trade_id: format!("{}", 1_000_000_000 + i),
                        timestamp: 1_795_400_000_000,
                        tick_direction: 1,
                        price: 60_000.5,
                        mark_price: Some(60_001.234_5),
                        index_price: 59_999.876_5,
                        instrument_name: "BTC-PERPETUAL".into(),
                        direction: "buy".into(),
                        amount: 120.0,
                        contracts: Some(12.0),
                        iv: None,
                        liquidation: None,
                        block_trade_id: None,
                        combo_id: None,
                        combo_trade_id: None,
                    })
                    .collect();
                let frame = format!(
                    r#"{{"jsonrpc":"2.0","method":"subscription","params":{{"channel":"trades.BTC-PERPETUAL.raw","data":{}}}}}"#,
                    serde_json::to_string(&trades).unwrap()
                );
                loop {
                    if ws.send(Message::Text(frame.clone().into())).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    format!("ws://{addr}")
}

#[tokio::main(flavor = "multi_thread")]
async fn main() {
    let raw = count_trades(&raw_server().await, Vec::new()).await;

    let sim = sim::start(SimConfig {
        listen: "127.0.0.1:0".parse().unwrap(),
        instruments: INSTRUMENTS.iter().map(|s| s.to_string()).collect(),
        trades_per_sec: 400_000.0,
        client_id: Some("bench".into()),
        client_secret: Some(Secret::new("bench")),
        history_limit: 2_000_000,
        ..SimConfig::default()
    })
    .await
    .unwrap();
    let channels: Vec<String> = INSTRUMENTS
        .iter()
        .map(|i| format!("trades.{i}.raw"))
        .collect();
    let prelude = vec![
        r#"{"jsonrpc":"2.0","id":1,"method":"public/auth","params":{"grant_type":"client_credentials","client_id":"bench","client_secret":"bench"}}"#.to_owned(),
        serde_json::json!({"jsonrpc":"2.0","id":2,"method":"public/subscribe","params":{"channels": channels}}).to_string(),
    ];
    let delivered = count_trades(&sim.ws_url(), prelude).await;
    let stats = sim.stats();
    sim.stop().await;

    println!("keel sim: trades generated, serialized and delivered to one raw subscriber ({} instruments, asked for 400,000/s)", INSTRUMENTS.len());
    println!("  sim:  {delivered:>12.0} trades/s");
    println!(
        "  raw:  {raw:>12.0} trades/s (bare WebSocket server, pre-serialized frames, same client)"
    );
    println!("  ratio sim/raw: {:.2}", delivered / raw);
    println!(
        "  target >= {TARGET:.0} trades/s: {}",
        if delivered >= TARGET {
            "met"
        } else {
            "NOT met"
        }
    );
    println!(
        "  connections closed as too slow during the run: {}",
        stats.closed_slow
    );
}
