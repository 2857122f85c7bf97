//! The simulator's HTTP side: the WebSocket endpoint, public methods over GET,
//! and the `/sim/` control routes.

use std::collections::HashMap;
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Path, Query, State, WebSocketUpgrade};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response as HttpResponse};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::{json, Value};
use tokio_util::sync::CancellationToken;

use super::exchange::Exchange;
use super::faults::Fault;
use super::reply::{self, micros};
use super::{methods, session};
use crate::{codes, RpcError};

#[derive(Clone)]
struct App {
    exchange: Arc<Exchange>,
    stop: CancellationToken,
}

pub(super) fn router(exchange: Arc<Exchange>, stop: CancellationToken) -> Router {
    Router::new()
        .route("/ws/api/v2", get(websocket))
        .route("/api/v2/public/{method}", get(public))
        .route("/sim/stats", get(stats))
        .route("/sim/faults", post(faults))
        .route("/sim/rate", post(rate))
        .fallback(not_found)
        .with_state(App { exchange, stop })
}

async fn websocket(State(app): State<App>, upgrade: WebSocketUpgrade) -> HttpResponse {
    upgrade.on_upgrade(move |socket| session::run(socket, app.exchange, app.stop))
}

/// `GET /api/v2/public/{method}?name=value...`: the same JSON-RPC body as over
/// the WebSocket; errors come with status 400, as Deribit's do.
async fn public(
    State(app): State<App>,
    Path(method): Path<String>,
    Query(query): Query<HashMap<String, String>>,
) -> HttpResponse {
    let us_in = micros();
    let params = Value::Object(
        query
            .into_iter()
            .map(|(k, v)| (k, Value::String(v)))
            .collect(),
    );
    let full = format!("public/{method}");
    let limited = !app.exchange.spend_http(&full);
    let outcome = if limited {
        Err(RpcError::new(codes::TOO_MANY_REQUESTS))
    } else {
        match methods::call(&app.exchange, &full, &params) {
            Some(result) => result,
            None => Err(RpcError::new(codes::METHOD_NOT_FOUND)),
        }
    };
    let status = match &outcome {
        Ok(_) => StatusCode::OK,
        Err(_) if limited => StatusCode::TOO_MANY_REQUESTS,
        Err(_) => StatusCode::BAD_REQUEST,
    };
    let body = reply::timed(Value::Null, us_in, outcome).to_http_json();
    (status, [("content-type", "application/json")], body).into_response()
}

async fn stats(State(app): State<App>) -> HttpResponse {
    Json(app.exchange.stats()).into_response()
}

fn bad_request(message: String) -> HttpResponse {
    (StatusCode::BAD_REQUEST, Json(json!({ "error": message }))).into_response()
}

/// `POST /sim/faults` with `{"fault": "stall", "ms": 2000}` and the like.
async fn faults(State(app): State<App>, body: Bytes) -> HttpResponse {
    let fault: Fault = match serde_json::from_slice(&body) {
        Ok(fault) => fault,
        Err(e) => {
            return bad_request(format!(
                "expected a fault such as {{\"fault\":\"stall\",\"ms\":1000}}: {e}"
            ))
        }
    };
    match app.exchange.inject(&fault) {
        Ok(done) => Json(json!({ "fault": fault.name(), "done": done })).into_response(),
        Err(why) => bad_request(why.to_string()),
    }
}

/// `POST /sim/rate` with `{"trades_per_sec": 1000}`.
async fn rate(State(app): State<App>, body: Bytes) -> HttpResponse {
    #[derive(serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Rate {
        trades_per_sec: f64,
    }
    match serde_json::from_slice::<Rate>(&body) {
        Ok(r) if r.trades_per_sec.is_finite() && r.trades_per_sec >= 0.0 => {
            app.exchange.set_rate(r.trades_per_sec);
            Json(json!({ "trades_per_sec": r.trades_per_sec })).into_response()
        }
        Ok(_) => bad_request("trades_per_sec must be a number >= 0".into()),
        Err(e) => bad_request(format!("expected {{\"trades_per_sec\": N}}: {e}")),
    }
}

async fn not_found() -> HttpResponse {
    (
        StatusCode::NOT_FOUND,
        Json(json!({ "error": "no such route" })),
    )
        .into_response()
}
