//! The simulator's HTTP side: the WebSocket endpoint, public methods over GET,
//! and the `/sim/` control routes.

use std::collections::HashMap;
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{OriginalUri, Path, Query, State, WebSocketUpgrade};
use axum::http::{HeaderMap, Method, StatusCode};
use axum::response::{IntoResponse, Response as HttpResponse};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::{json, Value};
use tokio_util::sync::CancellationToken;

use super::exchange::{Exchange, OrderFault};
use super::faults::Fault;
use super::reply::{self, micros};
use super::{auth, methods, session, trading};
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
        .route(
            "/api/v2/private/{method}",
            get(private_http).post(private_http),
        )
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

/// How long an HTTP order answer dropped by a fault is held before the
/// server gives up on it (a client times out long before).
const DROPPED_HTTP_ANSWER: std::time::Duration = std::time::Duration::from_secs(120);

/// `GET /api/v2/private/{method}?name=value...`, or `POST` with a JSON-RPC
/// body, authenticated by the `Authorization` header (an access token, or a
/// `deri-hmac-sha256` signature over the request; see
/// [`auth::authorize_http`]). The same account, budgets and order faults as
/// over the WebSocket; what belongs to a connection (subscriptions, cancel on
/// disconnect, logout) is served over the WebSocket only.
async fn private_http(
    State(app): State<App>,
    http_method: Method,
    OriginalUri(uri): OriginalUri,
    headers: HeaderMap,
    Path(name): Path<String>,
    Query(query): Query<HashMap<String, String>>,
    body: Bytes,
) -> HttpResponse {
    let us_in = micros();
    let full = format!("private/{name}");
    let (id, params) = if http_method == Method::POST && !body.is_empty() {
        match serde_json::from_slice::<Value>(&body) {
            Ok(request) => (
                request.get("id").cloned().unwrap_or(Value::Null),
                request.get("params").cloned().unwrap_or_else(|| json!({})),
            ),
            Err(e) => {
                let error = RpcError::new(codes::PARSE_ERROR).because(e.to_string(), None);
                return http_reply(Value::Null, us_in, Err(error), StatusCode::BAD_REQUEST);
            }
        }
    } else {
        let params = query
            .into_iter()
            .map(|(k, v)| (k, Value::String(v)))
            .collect();
        (Value::Null, Value::Object(params))
    };
    let path = uri
        .path_and_query()
        .map_or_else(|| uri.path().to_owned(), |pq| pq.as_str().to_owned());
    let header = headers
        .get(axum::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok());
    let text = String::from_utf8_lossy(&body);
    if let Err(e) = auth::authorize_http(&app.exchange, header, http_method.as_str(), &path, &text)
    {
        return http_reply(id, us_in, Err(e), StatusCode::BAD_REQUEST);
    }
    if !app.exchange.spend_http(&full) {
        let error = RpcError::new(codes::TOO_MANY_REQUESTS);
        return http_reply(id, us_in, Err(error), StatusCode::TOO_MANY_REQUESTS);
    }
    let fault = if trading::is_order_entry(&full) {
        app.exchange.order_faults.lock().take()
    } else {
        OrderFault::None
    };
    if let OrderFault::Reject(code) = fault {
        return http_reply(id, us_in, Err(RpcError::new(code)), StatusCode::BAD_REQUEST);
    }
    let outcome = match trading::call(&app.exchange, HTTP_CONNECTION, &full, &params) {
        Some(outcome) => outcome,
        None => Err(RpcError::new(codes::METHOD_NOT_FOUND)),
    };
    match fault {
        OrderFault::Drop => {
            tracing::debug!(method = %full, "Holding an HTTP order answer back (fault).");
            tokio::time::sleep(DROPPED_HTTP_ANSWER).await;
            return (StatusCode::GATEWAY_TIMEOUT, "").into_response();
        }
        OrderFault::Delay(ms) => {
            tokio::time::sleep(std::time::Duration::from_millis(ms)).await;
        }
        OrderFault::None | OrderFault::Reject(_) => {}
    }
    let status = if outcome.is_ok() {
        StatusCode::OK
    } else {
        StatusCode::BAD_REQUEST
    };
    http_reply(id, us_in, outcome, status)
}

/// Orders placed over HTTP belong to no connection: cancel on disconnect
/// takes them only with the `account` scope.
const HTTP_CONNECTION: u64 = 0;

fn http_reply(
    id: Value,
    us_in: u64,
    outcome: Result<Value, RpcError>,
    status: StatusCode,
) -> HttpResponse {
    // A JSON-RPC POST gets its id back; a GET has none to echo.
    let response = reply::timed(id.clone(), us_in, outcome);
    let body = if id.is_null() {
        response.to_http_json()
    } else {
        response.to_json()
    };
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
