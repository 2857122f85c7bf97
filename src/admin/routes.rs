//! The admin routes.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::middleware;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use futures::StreamExt as _;
use keel_core::secret::Secret;
use serde::Deserialize;
use serde_json::{json, Value};
use tokio::sync::Notify;

use crate::RuntimeHandle;
use keel_core::supervisor::RestartRefused;

/// What the handlers share.
#[derive(Clone)]
pub(super) struct App {
    pub(super) handle: Arc<RuntimeHandle>,
    pub(super) token: Option<Secret>,
    pub(super) shutdown_requested: Arc<Notify>,
    pub(super) shutting_down: Arc<AtomicBool>,
    /// Permits for live tails (SSE); none left means 503.
    pub(super) streams: Arc<tokio::sync::Semaphore>,
    pub(super) refusals: Arc<super::Refusals>,
}

/// Most messages one request returns.
const MAX_LIMIT: usize = 1000;

pub(super) fn error(status: StatusCode, message: &str) -> (StatusCode, Json<Value>) {
    (status, Json(json!({ "error": message })))
}

pub(super) fn router(app: App) -> Router {
    let protected = Router::new()
        .route("/readyz", get(readyz))
        .route("/api/tree", get(tree))
        .route("/api/actors/{name}", get(actor))
        .route("/api/actors/{name}/messages", get(messages))
        .route("/api/actors/{name}/messages/stream", get(tail))
        .route("/api/actors/{name}/restart", post(restart))
        .route("/api/shutdown", post(shutdown))
        .route("/api/tasks/{name}/run", post(run_task))
        .route("/metrics", get(metrics))
        .route(
            "/api/openapi.json",
            get(|| async { Json(super::openapi::document()) }),
        )
        .route_layer(middleware::from_fn_with_state(
            app.clone(),
            super::auth::require_token,
        ));
    Router::new()
        .route("/", get(super::dashboard::page))
        .route(
            "/healthz",
            get(|| async { Json(json!({ "status": "ok" })) }),
        )
        .merge(protected)
        .fallback(|| async { error(StatusCode::NOT_FOUND, "no such route") })
        .method_not_allowed_fallback(|| async {
            error(
                StatusCode::METHOD_NOT_ALLOWED,
                "method not allowed on this route",
            )
        })
        .layer(axum::extract::DefaultBodyLimit::max(16 * 1024))
        .layer(middleware::map_response(json_errors))
        .with_state(app)
}

/// Every error answer is JSON: the ones axum's extractors make themselves (a
/// path that is not UTF-8, a body over the limit) arrive as text and are
/// wrapped here, keeping their status.
async fn json_errors(response: Response) -> Response {
    let status = response.status();
    let is_json = response
        .headers()
        .get(axum::http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"));
    if !(status.is_client_error() || status.is_server_error()) || is_json {
        return response;
    }
    let body = axum::body::to_bytes(response.into_body(), 4096)
        .await
        .unwrap_or_default();
    let text = String::from_utf8_lossy(&body).trim().to_owned();
    let message = if text.is_empty() {
        status.canonical_reason().unwrap_or("error").to_owned()
    } else {
        text
    };
    error(status, &message).into_response()
}

/// 200 when every resource is ready and every permanent worker runs; else 503
/// with a reason per actor.
async fn readyz(State(app): State<App>) -> Response {
    let reasons = app.handle.not_ready();
    if reasons.is_empty() {
        Json(json!({ "ready": true })).into_response()
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(json!({ "ready": false, "not_ready": reasons })),
        )
            .into_response()
    }
}

async fn metrics(State(app): State<App>) -> Response {
    let mut text = super::metrics::render_tree(&app.handle);
    text.push_str(&super::metrics::render(&app.handle.tree()));
    text.push_str(&super::metrics::render_refusals(&app.refusals));
    (
        [("content-type", "text/plain; version=0.0.4; charset=utf-8")],
        text,
    )
        .into_response()
}

async fn tree(State(app): State<App>) -> Response {
    let tree = app.handle.tree();
    let actors: Vec<Value> = tree
        .actors
        .iter()
        .map(|a| {
            let mut v = serde_json::to_value(a).unwrap_or(Value::Null);
            if let Value::Object(map) = &mut v {
                map.insert("children".into(), json!(tree.children_of(&a.name)));
            }
            v
        })
        .collect();
    Json(json!({ "actors": actors })).into_response()
}

async fn actor(State(app): State<App>, Path(name): Path<String>) -> Response {
    match app.handle.tree().actor(&name) {
        Some(a) => Json(a.clone()).into_response(),
        None => error(StatusCode::NOT_FOUND, &format!("no actor named `{name}`")).into_response(),
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Limit {
    limit: Option<String>,
}

async fn messages(
    State(app): State<App>,
    Path(name): Path<String>,
    query: Result<Query<Limit>, axum::extract::rejection::QueryRejection>,
) -> Response {
    let limit = match query.map(|Query(q)| q.limit) {
        Ok(None) => 50,
        Ok(Some(text)) => match text.parse::<usize>() {
            Ok(n) if (1..=MAX_LIMIT).contains(&n) => n,
            _ => {
                return error(
                    StatusCode::BAD_REQUEST,
                    &format!("limit must be a number from 1 to {MAX_LIMIT}"),
                )
                .into_response()
            }
        },
        Err(_) => {
            return error(StatusCode::BAD_REQUEST, "the only parameter is limit").into_response()
        }
    };
    match app.handle.registry().messages(&name, limit) {
        Some(messages) => Json(json!({ "actor": name, "messages": messages })).into_response(),
        None => error(StatusCode::NOT_FOUND, &format!("no actor named `{name}`")).into_response(),
    }
}

/// `GET /api/actors/{name}/messages/stream`: each new message as a Server-Sent
/// Event (`data:` its JSON), from now on.
async fn tail(State(app): State<App>, Path(name): Path<String>) -> Response {
    let Ok(permit) = Arc::clone(&app.streams).try_acquire_owned() else {
        app.refusals.streams.fetch_add(1, Ordering::Relaxed);
        return error(
            StatusCode::SERVICE_UNAVAILABLE,
            &format!("at most {} live tails at once", super::MAX_STREAMS),
        )
        .into_response();
    };
    let registry = app.handle.registry().clone();
    let Some(start) = registry
        .messages(&name, 1)
        .map(|m| m.last().map_or(0, |r| r.seq))
    else {
        return error(StatusCode::NOT_FOUND, &format!("no actor named `{name}`")).into_response();
    };
    // The permit lives as long as the stream: a tail that ends frees its place.
    let events = futures::stream::unfold(
        (registry, name, start, permit),
        |(registry, name, last, permit)| async move {
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
            let fresh = registry.messages_after(&name, last)?;
            let next = fresh.last().map_or(last, |r| r.seq);
            let events: Vec<Result<Event, std::convert::Infallible>> = fresh
                .iter()
                .map(|r| {
                    Ok(Event::default()
                        .event("message")
                        .json_data(r)
                        .unwrap_or_default())
                })
                .collect();
            Some((
                futures::stream::iter(events),
                (registry, name, next, permit),
            ))
        },
    )
    .flatten();
    Sse::new(events)
        .keep_alive(KeepAlive::default())
        .into_response()
}

async fn restart(State(app): State<App>, Path(name): Path<String>) -> Response {
    match app.handle.restart(&name).await {
        Ok(()) => Json(json!({ "restarted": name })).into_response(),
        Err(RestartRefused::Unknown(_)) => {
            error(StatusCode::NOT_FOUND, &format!("no child named `{name}`")).into_response()
        }
        Err(RestartRefused::ShuttingDown) => {
            error(StatusCode::CONFLICT, "the tree is shutting down").into_response()
        }
    }
}

async fn run_task(State(app): State<App>, Path(name): Path<String>) -> Response {
    use keel_core::scheduler::{run_now, RunRefused};
    match run_now(app.handle.registry(), crate::tree::SCHEDULER, &name).await {
        Ok(()) => (StatusCode::ACCEPTED, Json(json!({ "started": name }))).into_response(),
        Err(RunRefused::Unknown(_)) => {
            error(StatusCode::NOT_FOUND, &format!("no task named `{name}`")).into_response()
        }
        Err(RunRefused::Running(_)) => error(
            StatusCode::CONFLICT,
            &format!("`{name}` is already running"),
        )
        .into_response(),
        Err(RunRefused::NoScheduler) => {
            error(StatusCode::CONFLICT, "no scheduler is running").into_response()
        }
    }
}

async fn shutdown(State(app): State<App>) -> Response {
    if app.shutting_down.swap(true, Ordering::AcqRel) || app.handle.has_ended() {
        return error(StatusCode::CONFLICT, "a shutdown is already in progress").into_response();
    }
    app.shutdown_requested.notify_one();
    (
        StatusCode::ACCEPTED,
        Json(json!({ "shutting_down": true, "as": "SIGTERM" })),
    )
        .into_response()
}
