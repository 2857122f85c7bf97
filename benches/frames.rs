//! What reading a notification costs per trade: a frame of 10,000 trades as
//! the exchange sends them on `trades.{instrument}.100ms` at a busy moment,
//! read by the receiver's one-pass read (channel, then each trade decoded where
//! it stands, with its text), by the general parser (the frame, then the data),
//! and by the raw baseline: serde splitting the data into raw elements without
//! decoding them (what the receiver bench's hand-written loop does). Best of 5
//! interleaved rounds. Run: `cargo bench --bench frames`.

use std::hint::black_box;
use std::time::{Duration, Instant};

use keel_deribit::{
    decode_trades, parse_server_frame, parse_subscription, read_trades, ServerFrame,
};
use serde::Deserialize;
use serde_json::value::RawValue;

const TRADES: usize = 10_000;
const FRAMES: usize = 20;
const ROUNDS: usize = 5;

#[derive(Deserialize)]
struct Frame<'a> {
    #[serde(borrow)]
    params: Params<'a>,
}

#[derive(Deserialize)]
struct Params<'a> {
    #[serde(borrow)]
    channel: &'a str,
    #[serde(borrow)]
    data: Vec<&'a RawValue>,
}

fn frame() -> String {
    let trades: Vec<String> = (0..TRADES)
        .map(|i| {
            let seq = 30_289_442 + i;
            let price = 97_000.5 + (i % 200) as f64 * 0.5;
            format!(
                r#"{{"trade_seq":{seq},"trade_id":"{id}","timestamp":{ts},"tick_direction":{tick},"price":{price},"mark_price":{mark},"instrument_name":"BTC-PERPETUAL","index_price":{index},"direction":"{dir}","amount":{amount},"contracts":{contracts}}}"#,
                id = 348_079_269 + i,
                ts = 1_764_000_000_000u64 + i as u64 / 10,
                tick = i % 4,
                mark = price - 1.17,
                index = price + 3.41,
                dir = if i % 3 == 0 { "sell" } else { "buy" },
                amount = 10 * (1 + i % 50),
                contracts = 1 + i % 50,
            )
        })
        .collect();
    format!(
        r#"{{"jsonrpc":"2.0","method":"subscription","params":{{"channel":"trades.BTC-PERPETUAL.100ms","data":[{}]}}}}"#,
        trades.join(",")
    )
}

/// ns per trade over `FRAMES` frames.
fn time(text: &str, read: impl Fn(&str) -> usize) -> f64 {
    let start = Instant::now();
    for _ in 0..FRAMES {
        assert_eq!(black_box(read(black_box(text))), TRADES);
    }
    start.elapsed().as_nanos() as f64 / (FRAMES * TRADES) as f64
}

fn main() {
    let text = frame();
    let raw = |text: &str| {
        let frame: Frame = serde_json::from_str(text).expect("the frame parses");
        black_box(frame.params.channel);
        frame.params.data.len()
    };
    let one_pass = |text: &str| {
        parse_subscription(text, |_, rest| read_trades(rest)).map_or(0, |(_, trades)| trades.len())
    };
    let general = |text: &str| match parse_server_frame(text) {
        Ok(ServerFrame::Subscription { channel, data }) => {
            decode_trades(&channel, data.get()).map_or(0, |t| t.len())
        }
        _ => 0,
    };
    let mut best = [f64::MAX; 3];
    let warm = Instant::now();
    while warm.elapsed() < Duration::from_secs(1) {
        time(&text, one_pass);
    }
    for _ in 0..ROUNDS {
        for (i, read) in [&raw as &dyn Fn(&str) -> usize, &one_pass, &general]
            .into_iter()
            .enumerate()
        {
            best[i] = best[i].min(time(&text, read));
        }
    }
    let [raw, one_pass, general] = best;
    println!(
        "a frame of {TRADES} trades ({} bytes, {:.0} per trade), best of {ROUNDS} rounds of {FRAMES} frames:",
        text.len(),
        text.len() as f64 / TRADES as f64
    );
    println!("  raw baseline (split into raw elements, nothing decoded): {raw:.0} ns per trade");
    println!(
        "  one-pass read (each trade decoded, with its text):      {one_pass:.0} ns per trade, raw/this {:.2}",
        raw / one_pass
    );
    println!(
        "  general parser, then decode_trades:                      {general:.0} ns per trade, raw/this {:.2}",
        raw / general
    );
}
