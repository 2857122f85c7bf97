//! `keel sim` against the real exchange: each request of the corpus
//! (`tests/deribit-frames/`) whose method the simulator serves is sent to it over
//! a real WebSocket, and the answer is compared with the real response
//! structurally: the same keys at every level, the same JSON types (`null`
//! matches anything: whether a price is null depends on the market), the id
//! echoed, the same error codes and messages. Notifications are compared the
//! same way with the real ones of their channel.
//!
//! Deliberate differences are listed in `EXCEPTIONS`, each with its reason.

mod common;

use std::path::Path;
use std::time::Duration;

use common::deribit::WsClient;
use keel_core::secret::Secret;
use keel_deribit::sim::{self, SimConfig, SimHandle};
use keel_deribit::{codes, Response};
use serde_json::{json, Value};

const SECOND: Duration = Duration::from_secs(1);

/// `(file, path)`: keys or types the simulator deliberately does not match.
const EXCEPTIONS: &[(&str, &str, &str)] = &[
    (
        "deribit-docs/public-status.response.json",
        "result.locked",
        "the docs example writes `true`; the documented type is the string \
         \"true\" | \"partial\" | \"false\", which clients compare with \"false\"",
    ),
    (
        "deribit-docs/public-get_instruments.response.json",
        "result[0]",
        "the 2023 docs example predates fields every instrument now carries \
         (see nautilus/http_get_instrument.json, compared exactly)",
    ),
    (
        "deribit-docs/public-ticker.response.json",
        "result.stats.volume_notional",
        "added to real tickers after the docs example (nautilus/ws_ticker.json has it)",
    ),
    (
        "deribit-docs/public-get_order_book.response.json",
        "result.stats",
        "the docs example predates `volume_usd` and `volume_notional` \
         (nautilus/http_get_order_book.json, compared exactly, has them)",
    ),
    (
        "deribit-docs/public-get_order_book.response.json",
        "result.estimated_delivery_price",
        "the docs example predates it; nautilus/http_get_order_book.json has it",
    ),
    (
        "deribit-docs/public-get_order_book.response.json",
        "result.interest_value",
        "the docs example predates it; nautilus/http_get_order_book.json has it",
    ),
    (
        "deribit-docs/public-get_last_trades_by_instrument.response.json",
        "result.trades[0].contracts",
        "the docs example predates `contracts`; nautilus/http_get_last_trades.json has it",
    ),
    (
        "deribit-docs/public-get_last_trades_by_instrument_and_time.response.json",
        "result.trades[0].contracts",
        "the docs example predates `contracts`; nautilus/http_get_last_trades.json has it",
    ),
];

fn corpus(file: &str) -> Value {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/deribit-frames")
        .join(file);
    serde_json::from_str(&std::fs::read_to_string(&path).expect("corpus file")).expect("JSON")
}

fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "bool",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

/// Where `sim` differs in shape from `real`, as `path: what`.
fn differences(real: &Value, sim: &Value, path: &str, out: &mut Vec<(String, String)>) {
    match (real, sim) {
        (Value::Null, _) | (_, Value::Null) => {}
        (Value::Object(r), Value::Object(s)) => {
            for (key, value) in r {
                let at = format!("{path}.{key}");
                match s.get(key) {
                    Some(other) => differences(value, other, &at, out),
                    None => out.push((at, "missing in keel sim".into())),
                }
            }
            for key in s.keys().filter(|k| !r.contains_key(*k)) {
                out.push((format!("{path}.{key}"), "not in the real frame".into()));
            }
        }
        (Value::Array(r), Value::Array(s)) => {
            if let (Some(r0), Some(s0)) = (r.first(), s.first()) {
                differences(r0, s0, &format!("{path}[0]"), out);
            }
        }
        (r, s) if kind(r) != kind(s) => out.push((
            path.to_owned(),
            format!("{} here, {} in keel sim", kind(r), kind(s)),
        )),
        _ => {}
    }
}

fn excepted(file: &str, path: &str) -> bool {
    EXCEPTIONS
        .iter()
        .any(|(f, p, _)| *f == file && (path == *p || path.starts_with(&format!("{p}."))))
}

fn response_value(r: &Response) -> Value {
    serde_json::from_str(&r.to_json()).expect("a response is JSON")
}

async fn start() -> SimHandle {
    sim::start(SimConfig {
        listen: "127.0.0.1:0".parse().unwrap(),
        trades_per_sec: 200.0,
        instruments: vec![
            "BTC-PERPETUAL".into(),
            "ETH-PERPETUAL".into(),
            "BTC-25JUN27".into(),
            "BTC-25JUN27-100000-C".into(),
        ],
        client_id: Some("fo7WAPRm4P".into()),
        client_secret: Some(Secret::new("W0H6FJW4IRPZ1MOQ8FP6KMC5RZDUUKXS")),
        min_heartbeat: SECOND,
        ..SimConfig::default()
    })
    .await
    .expect("simulator starts")
}

/// The request a case sends: the corpus's own request where it has one and its
/// instruments exist in the simulator, else the same method on one that does.
struct Case {
    file: &'static str,
    method: &'static str,
    params: Value,
}

fn cases() -> Vec<Case> {
    let request =
        |name: &str| corpus(&format!("deribit-docs/{name}.request.json"))["params"].clone();
    let now = keel_deribit::model::to_ms(std::time::SystemTime::now());
    vec![
        Case {
            file: "deribit-docs/public-test.response.json",
            method: "public/test",
            params: request("public-test"),
        },
        Case {
            file: "deribit-docs/public-hello.response.json",
            method: "public/hello",
            params: request("public-hello"),
        },
        Case {
            file: "deribit-docs/public-get_time.response.json",
            method: "public/get_time",
            params: request("public-get_time"),
        },
        Case {
            file: "deribit-docs/public-status.response.json",
            method: "public/status",
            params: request("public-status"),
        },
        Case {
            file: "deribit-docs/public-set_heartbeat.response.json",
            method: "public/set_heartbeat",
            params: request("public-set_heartbeat"),
        },
        Case {
            file: "deribit-docs/public-disable_heartbeat.response.json",
            method: "public/disable_heartbeat",
            params: request("public-disable_heartbeat"),
        },
        Case {
            file: "deribit-docs/public-get_currencies.response.json",
            method: "public/get_currencies",
            params: request("public-get_currencies"),
        },
        Case {
            file: "deribit-docs/public-auth.response.json",
            method: "public/auth",
            params: request("public-auth"),
        },
        Case {
            file: "deribit-docs/public-get_instruments.response.json",
            method: "public/get_instruments",
            params: request("public-get_instruments"),
        },
        Case {
            file: "nautilus/http_get_instrument.json",
            method: "public/get_instrument",
            params: json!({"instrument_name": "BTC-PERPETUAL"}),
        },
        Case {
            file: "nautilus/http_get_instrument_option.json",
            method: "public/get_instrument",
            params: json!({"instrument_name": "BTC-25JUN27-100000-C"}),
        },
        Case {
            file: "nautilus/http_get_expirations_any.json",
            method: "public/get_expirations",
            params: json!({"currency": "any", "kind": "any"}),
        },
        Case {
            file: "nautilus/http_get_expirations_btc_option.json",
            method: "public/get_expirations",
            params: json!({"currency": "btc", "kind": "option"}),
        },
        Case {
            file: "deribit-docs/public-ticker.response.json",
            method: "public/ticker",
            params: request("public-ticker"),
        },
        Case {
            file: "deribit-docs/public-get_order_book.response.json",
            method: "public/get_order_book",
            params: request("public-get_order_book"),
        },
        Case {
            file: "nautilus/http_get_order_book.json",
            method: "public/get_order_book",
            params: json!({"instrument_name": "BTC-PERPETUAL", "depth": 20}),
        },
        Case {
            file: "deribit-docs/public-get_last_trades_by_instrument.response.json",
            method: "public/get_last_trades_by_instrument",
            params: request("public-get_last_trades_by_instrument"),
        },
        Case {
            file: "nautilus/http_get_last_trades.json",
            method: "public/get_last_trades_by_instrument",
            params: json!({"instrument_name": "ETH-PERPETUAL", "count": 5}),
        },
        Case {
            file: "deribit-docs/public-get_last_trades_by_instrument_and_time.response.json",
            method: "public/get_last_trades_by_instrument_and_time",
            params: json!({"instrument_name": "ETH-PERPETUAL", "count": 1, "end_timestamp": now}),
        },
        Case {
            file: "nautilus/http_get_tradingview_chart_data.json",
            method: "public/get_tradingview_chart_data",
            params: json!({"instrument_name": "BTC-PERPETUAL", "resolution": "1", "start_timestamp": now - 600_000, "end_timestamp": now}),
        },
        Case {
            file: "deribit-docs/public-subscribe.response.json",
            method: "public/subscribe",
            params: json!({"channels": ["ticker.BTC-PERPETUAL.100ms"]}),
        },
        Case {
            file: "deribit-docs/public-unsubscribe.response.json",
            method: "public/unsubscribe",
            params: json!({"channels": ["ticker.BTC-PERPETUAL.100ms"]}),
        },
        Case {
            file: "deribit-docs/public-unsubscribe_all.response.json",
            method: "public/unsubscribe_all",
            params: request("public-unsubscribe_all"),
        },
        // Errors: the same code, message and data keys.
        Case {
            file: "roq/private_subscribe_error_method_not_found.json",
            method: "public/no_such_method",
            params: json!({}),
        },
        Case {
            file: "roq/get_user_trades_by_currency_error_invalid_params.json",
            method: "public/get_last_trades_by_instrument",
            params: json!({}),
        },
        Case {
            file: "issues/cryptofeed-768_error_13778_raw_needs_auth.json",
            method: "public/subscribe",
            params: json!({"channels": ["trades.BTC-PERPETUAL.raw"]}),
        },
    ]
}

#[tokio::test]
async fn keel_sim_answers_the_corpus_requests_as_deribit_did() {
    let sim = start().await;
    // Some history for the trade and chart methods.
    common::eventually("trades", 10 * SECOND, || {
        sim.stats().instruments.values().all(|i| i.trades >= 5)
    })
    .await;
    let mut failures = Vec::new();
    for case in cases() {
        let real = corpus(case.file);
        let id = real.get("id").cloned().unwrap_or(json!(1));
        // Each case on its own connection: no state (auth, heartbeats) leaks.
        let mut ws = WsClient::connect(&sim.ws_url()).await;
        let answer = ws
            .request_with_id(id.clone(), case.method, case.params.clone())
            .await;
        if answer.id != id {
            failures.push(format!(
                "{}: id {} not echoed ({})",
                case.file, id, answer.id
            ));
        }
        let ours = response_value(&answer);
        if let Some(error) = real.get("error") {
            let Some(mine) = ours.get("error") else {
                failures.push(format!("{}: keel sim answered {ours}", case.file));
                continue;
            };
            if (error["code"].clone(), error["message"].clone())
                != (mine["code"].clone(), mine["message"].clone())
            {
                failures.push(format!(
                    "{}: error {error} here, {mine} in keel sim",
                    case.file
                ));
            }
            let mut diffs = Vec::new();
            differences(error, mine, "error", &mut diffs);
            failures.extend(
                diffs
                    .into_iter()
                    .map(|(p, w)| format!("{}: {p}: {w}", case.file)),
            );
            continue;
        }
        let mut diffs = Vec::new();
        differences(&real["result"], &ours["result"], "result", &mut diffs);
        if ours.get("result").is_none() {
            diffs.push(("result".into(), format!("keel sim answered {ours}")));
        }
        for (path, what) in diffs {
            if !excepted(case.file, &path) {
                failures.push(format!("{}: {path}: {what}", case.file));
            }
        }
    }
    assert!(
        failures.is_empty(),
        "{} differences:\n{}",
        failures.len(),
        failures.join("\n")
    );
    sim.stop().await;
}

#[tokio::test]
async fn keel_sim_notifications_have_the_shape_of_real_ones() {
    let sim = start().await;
    let mut ws = WsClient::connect(&sim.ws_url()).await;
    let cases = [
        ("nautilus/ws_ticker.json", "ticker.BTC-PERPETUAL.100ms"),
        ("nautilus/ws_trades.json", "trades.BTC-PERPETUAL.100ms"),
        ("nautilus/ws_quote.json", "quote.BTC-PERPETUAL"),
        ("nautilus/ws_chart.json", "chart.trades.BTC-PERPETUAL.1"),
        (
            "nautilus/ws_book_grouped_snapshot.json",
            "book.BTC-PERPETUAL.none.10.100ms",
        ),
        (
            "deribit-docs/book-instrument_name-interval.notification.1.json",
            "book.BTC-PERPETUAL.100ms",
        ),
        (
            "deribit-docs/book-instrument_name-interval.notification.2.json",
            "book.BTC-PERPETUAL.100ms",
        ),
    ];
    let channels: Vec<&str> = cases.iter().map(|(_, c)| *c).collect();
    let answer = ws
        .request("public/subscribe", json!({ "channels": channels }))
        .await;
    assert!(answer.outcome.is_ok(), "{:?}", answer.outcome);
    let mut failures = Vec::new();
    let mut book_seen = 0;
    for (file, channel) in cases {
        let real = corpus(file);
        // The second book case is the change after the snapshot.
        let data = if channel == "book.BTC-PERPETUAL.100ms" {
            book_seen += 1;
            let mut last = None;
            for _ in 0..book_seen {
                last = ws.next_on(channel, 10 * SECOND).await;
            }
            last
        } else {
            ws.next_on(channel, 10 * SECOND).await
        };
        let Some(data) = data else {
            failures.push(format!("{file}: nothing on {channel}"));
            continue;
        };
        let ours: Value = serde_json::from_str(&data).expect("JSON");
        let mut diffs = Vec::new();
        differences(&real["params"]["data"], &ours, "data", &mut diffs);
        for (path, what) in diffs {
            // Real trades carry kind-specific and combo fields only when they apply.
            let optional = [
                "combo_id",
                "combo_trade_id",
                "liquidation",
                "block_trade_id",
                "iv",
            ]
            .iter()
            .any(|f| path.ends_with(&format!(".{f}")));
            if !optional {
                failures.push(format!("{file}: {path}: {what}"));
            }
        }
    }
    assert!(
        failures.is_empty(),
        "{} differences:\n{}",
        failures.len(),
        failures.join("\n")
    );
    let _ = codes::INVALID_PARAMS;
    sim.stop().await;
}
