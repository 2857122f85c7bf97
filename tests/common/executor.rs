//! Helpers shared by the executor's tests: its configuration against a
//! simulator, intents written as a strategy writes them, and the views of
//! PostgreSQL and the exchange the tests compare.
#![allow(dead_code, unreachable_pub)]

use std::collections::BTreeMap;
use std::time::Duration;

use keel_actors::service::executor::{ExecutorConfig, InstrumentLimits};
use keel_core::secret::Secret;
use keel_deribit::model::to_ms;
use keel_deribit::sim::{self, SimHandle};
use serde_json::{json, Value};

use super::deribit::WsClient;
use super::eventually_some;

pub const BTC: &str = "BTC-PERPETUAL";
pub const WAIT: Duration = Duration::from_secs(90);

pub fn executor(sim: &SimHandle) -> ExecutorConfig {
    ExecutorConfig {
        enabled: true,
        url: sim.ws_url(),
        client_id: Some("k".into()),
        client_secret: Some(Secret::new("s")),
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
    }
}

/// `config` running the executor against `sim` and nothing else.
pub fn executor_only(mut config: keel::config::Config, sim: &SimHandle) -> keel::config::Config {
    config.receiver.enabled = false;
    config.distributor.enabled = false;
    config.analyzer.enabled = false;
    config.schedule.enabled = false;
    config.executor = executor(sim);
    config
}

/// `(best bid, best ask)` of the simulator's book.
pub async fn best(ws: &mut WsClient) -> (f64, f64) {
    let book: Value = ws
        .request(
            "public/get_order_book",
            json!({"instrument_name": BTC, "depth": 1}),
        )
        .await
        .result()
        .unwrap();
    (
        book["bids"][0][0].as_f64().unwrap(),
        book["asks"][0][0].as_f64().unwrap(),
    )
}

/// The exchange's own view, through a session of the test's own.
pub async fn exchange(sim: &SimHandle) -> WsClient {
    let mut ws = WsClient::connect(&sim.ws_url()).await;
    let timestamp = to_ms(std::time::SystemTime::now());
    let signature = sim::signature("s", timestamp, "t", "");
    let auth = ws
        .request("public/auth", json!({"grant_type": "client_signature", "client_id": "k", "timestamp": timestamp, "nonce": "t", "data": "", "signature": signature}))
        .await;
    assert!(auth.outcome.is_ok());
    ws
}

pub fn xadd(conn: &mut redis::Connection, stream: &str, fields: &[(&str, String)]) {
    let mut cmd = redis::cmd("XADD");
    cmd.arg(stream).arg("*");
    for (k, v) in fields {
        cmd.arg(*k).arg(v);
    }
    let _: String = cmd.query(conn).expect("XADD");
}

pub fn place(
    label: &str,
    side: &str,
    amount: f64,
    price: f64,
    tif: &str,
) -> Vec<(&'static str, String)> {
    vec![
        ("action", "place".into()),
        ("label", label.into()),
        ("instrument", BTC.into()),
        ("side", side.into()),
        ("amount", amount.to_string()),
        ("price", price.to_string()),
        ("time_in_force", tif.into()),
    ]
}

/// `label -> (state, filled)` of every order PostgreSQL holds.
pub async fn stored(db: &tokio_postgres::Client) -> BTreeMap<String, (String, f64)> {
    db.query("SELECT label, state, filled_amount FROM orders", &[])
        .await
        .map(|rows| {
            rows.iter()
                .map(|r| (r.get(0), (r.get(1), r.get(2))))
                .collect()
        })
        .unwrap_or_default()
}

pub fn stream_len(conn: &mut redis::Connection, key: &str) -> usize {
    redis::cmd("XLEN").arg(key).query(conn).unwrap_or(0)
}

pub fn rank_terminal(state: &str) -> bool {
    matches!(state, "filled" | "cancelled" | "rejected" | "expired")
}

/// Waits until every label has left pending, sent and unknown in `pg`.
pub async fn settled(pg: &super::pg_cluster::PrivatePg, labels: &[String]) {
    let client = pg.client().await;
    eventually_some("the intents settled", WAIT, || async {
        let orders = stored(&client).await;
        let open: Vec<_> = labels
            .iter()
            .filter(|l| {
                !orders
                    .get(*l)
                    .is_some_and(|(s, _)| !matches!(s.as_str(), "pending" | "sent" | "unknown"))
            })
            .map(|l| (l, orders.get(l)))
            .collect();
        if !open.is_empty() {
            eprintln!("unsettled: {} {:?}", open.len(), open.first());
        }
        open.is_empty().then_some(())
    })
    .await;
}

/// Every event on `orders:events` so far, as field maps.
pub fn events(
    conn: &mut redis::Connection,
    prefix: &super::redis::TestPrefix,
) -> Vec<BTreeMap<String, String>> {
    let entries: Vec<(String, Vec<(String, String)>)> = redis::cmd("XRANGE")
        .arg(format!("{}orders:events", prefix.prefix))
        .arg("-")
        .arg("+")
        .query(conn)
        .unwrap_or_default();
    entries
        .into_iter()
        .map(|(_, fields)| fields.into_iter().collect())
        .collect()
}

/// Waits until PostgreSQL holds `label` in `state`.
pub async fn until_state(db: &tokio_postgres::Client, label: &str, state: &str) {
    eventually_some(&format!("{label} {state}"), WAIT, || async {
        let stored = stored(db).await;
        (stored.get(label).map(|(s, _)| s.as_str()) == Some(state)).then_some(())
    })
    .await;
}

/// The orders the exchange holds for `label`.
pub async fn on_exchange(ws: &mut WsClient, label: &str) -> Vec<keel_deribit::private::Order> {
    ws.request(
        "private/get_order_state_by_label",
        json!({"currency": "BTC", "label": label}),
    )
    .await
    .result()
    .unwrap()
}
