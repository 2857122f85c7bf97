//! The admin routes.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::middleware;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::{Json, Router};
use futures::StreamExt as _;
use keel_core::secret::Secret;
use serde::Deserialize;
use serde_json::{json, Value};
use tokio::sync::Notify;

use super::openapi::{
    ErrorBody, Halted, Health, Messages, Readiness, Restarted, ShuttingDown, Started, Tree,
};
use crate::RuntimeHandle;
use keel_core::supervisor::RestartRefused;
use utoipa::OpenApi as _;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

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

pub(super) fn error(status: StatusCode, message: &str) -> (StatusCode, Json<ErrorBody>) {
    let body = ErrorBody {
        error: message.to_owned(),
    };
    (status, Json(body))
}

/// Liveness: 200 while the process runs.
#[utoipa::path(get, path = "/healthz", tag = "health", security(()),
    responses((status = 200, description = "The process runs", body = Health)))]
async fn healthz() -> Json<Health> {
    Json(Health { status: "ok" })
}

/// This document.
#[utoipa::path(get, path = "/api/openapi.json", tag = "meta",
    responses(
        (status = 200, description = "OpenAPI 3.1, generated from the routes"),
        (status = 401, description = UNAUTHORIZED, body = ErrorBody),
    ))]
async fn openapi_json() -> Json<&'static utoipa::openapi::OpenApi> {
    Json(document())
}

/// What a protected route answers without the right token.
const UNAUTHORIZED: &str = "Missing or wrong bearer token";

/// The routes anyone may call: the dashboard page and liveness.
fn public() -> OpenApiRouter<App> {
    OpenApiRouter::with_openapi(super::openapi::AdminApi::openapi())
        .routes(routes!(super::dashboard::page))
        .routes(routes!(healthz))
}

/// The routes behind the bearer token.
fn protected() -> OpenApiRouter<App> {
    OpenApiRouter::new()
        .routes(routes!(readyz))
        .routes(routes!(tree))
        .routes(routes!(actor))
        .routes(routes!(messages))
        .routes(routes!(tail))
        .routes(routes!(restart))
        .routes(routes!(shutdown))
        .routes(routes!(run_task))
        .routes(routes!(halt))
        .routes(routes!(resume))
        .routes(routes!(cluster))
        .routes(routes!(metrics))
        .routes(routes!(openapi_json))
}

/// The OpenAPI document of exactly the routes [`router`] serves.
pub(super) fn document() -> &'static utoipa::openapi::OpenApi {
    static DOCUMENT: std::sync::OnceLock<utoipa::openapi::OpenApi> = std::sync::OnceLock::new();
    DOCUMENT.get_or_init(|| public().merge(protected()).split_for_parts().1)
}

pub(super) fn router(app: App) -> Router {
    let (protected, _) = protected().split_for_parts();
    let protected = protected.route_layer(middleware::from_fn_with_state(
        app.clone(),
        super::auth::require_token,
    ));
    let (public, _) = public().split_for_parts();
    public
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

/// Readiness: 200 when every resource is ready and every permanent worker
/// runs; else 503 with a reason per actor.
#[utoipa::path(get, path = "/readyz", tag = "health",
    responses(
        (status = 200, description = "Ready", body = Readiness),
        (status = 503, description = "Not ready, with a reason per actor", body = Readiness),
        (status = 401, description = UNAUTHORIZED, body = ErrorBody),
    ))]
async fn readyz(State(app): State<App>) -> Response {
    let reasons = app.handle.not_ready();
    let ready = reasons.is_empty();
    let body = Readiness {
        ready,
        not_ready: (!ready).then_some(reasons),
    };
    let status = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (status, Json(body)).into_response()
}

/// Prometheus text metrics.
#[utoipa::path(get, path = "/metrics", tag = "inspection",
    responses(
        (status = 200, description = "Prometheus text format 0.0.4", content_type = "text/plain"),
        (status = 401, description = UNAUTHORIZED, body = ErrorBody),
    ))]
async fn metrics(State(app): State<App>) -> Response {
    // One snapshot for every figure of the scrape.
    let tree = app.handle.tree();
    let mut text = super::metrics::render_tree(&app.handle, &tree);
    text.push_str(&super::metrics::render(&tree));
    text.push_str(&super::metrics::render_refusals(&app.refusals));
    (
        [("content-type", "text/plain; version=0.0.4; charset=utf-8")],
        text,
    )
        .into_response()
}

/// Every actor.
#[utoipa::path(get, path = "/api/tree", tag = "inspection",
    responses(
        (status = 200, description = "The tree", body = Tree),
        (status = 401, description = UNAUTHORIZED, body = ErrorBody),
    ))]
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
    Json(Tree { actors }).into_response()
}

/// One actor.
#[utoipa::path(get, path = "/api/actors/{name}", tag = "inspection",
    params(("name" = String, Path, description = "The actor's name")),
    responses(
        (status = 200, description = "The actor: state, restarts, last failure, messages handled, details", body = Object),
        (status = 404, description = "No such actor", body = ErrorBody),
        (status = 401, description = UNAUTHORIZED, body = ErrorBody),
    ))]
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

/// An actor's recent messages.
#[utoipa::path(get, path = "/api/actors/{name}/messages", tag = "inspection",
    params(
        ("name" = String, Path, description = "The actor's name"),
        ("limit" = Option<usize>, Query, description = "How many, 1 to 1000 (default 50)", minimum = 1, maximum = 1000),
    ),
    responses(
        (status = 200, description = "Messages, oldest first", body = Messages),
        (status = 400, description = "A bad limit, or another parameter", body = ErrorBody),
        (status = 404, description = "No such actor", body = ErrorBody),
        (status = 401, description = UNAUTHORIZED, body = ErrorBody),
    ))]
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
        Some(messages) => Json(Messages {
            actor: name,
            messages,
        })
        .into_response(),
        None => error(StatusCode::NOT_FOUND, &format!("no actor named `{name}`")).into_response(),
    }
}

/// Live message tail: each new message as a Server-Sent Event (`data:` its
/// JSON), from now on.
#[utoipa::path(get, path = "/api/actors/{name}/messages/stream", tag = "inspection",
    params(("name" = String, Path, description = "The actor's name")),
    responses(
        (status = 200, description = "Server-Sent Events, one `message` event per message", content_type = "text/event-stream"),
        (status = 404, description = "No such actor", body = ErrorBody),
        (status = 503, description = "Too many live tails at once", body = ErrorBody),
        (status = 401, description = UNAUTHORIZED, body = ErrorBody),
    ))]
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

/// Restart a child now: drained, then started again.
#[utoipa::path(post, path = "/api/actors/{name}/restart", tag = "control",
    params(("name" = String, Path, description = "The child's name")),
    responses(
        (status = 200, description = "Restarted", body = Restarted),
        (status = 404, description = "No such child", body = ErrorBody),
        (status = 409, description = "The tree is shutting down", body = ErrorBody),
        (status = 401, description = UNAUTHORIZED, body = ErrorBody),
    ))]
async fn restart(State(app): State<App>, Path(name): Path<String>) -> Response {
    match app.handle.restart(&name).await {
        Ok(()) => Json(Restarted { restarted: name }).into_response(),
        Err(RestartRefused::Unknown(_)) => {
            error(StatusCode::NOT_FOUND, &format!("no child named `{name}`")).into_response()
        }
        Err(RestartRefused::ShuttingDown) => {
            error(StatusCode::CONFLICT, "the tree is shutting down").into_response()
        }
    }
}

/// Run a scheduled task now.
#[utoipa::path(post, path = "/api/tasks/{name}/run", tag = "control",
    params(("name" = String, Path, description = "The task's name")),
    responses(
        (status = 202, description = "Started", body = Started),
        (status = 404, description = "No such task", body = ErrorBody),
        (status = 409, description = "Already running, or no scheduler", body = ErrorBody),
        (status = 401, description = UNAUTHORIZED, body = ErrorBody),
    ))]
async fn run_task(State(app): State<App>, Path(name): Path<String>) -> Response {
    use keel_core::scheduler::{run_now, RunRefused};
    match run_now(app.handle.registry(), crate::tree::SCHEDULER, &name).await {
        Ok(()) => (StatusCode::ACCEPTED, Json(Started { started: name })).into_response(),
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

/// The executor's kill switch: stop taking intents and cancel every open
/// order Keel placed. It holds across restarts of the executor until resumed.
#[utoipa::path(post, path = "/api/executor/halt", tag = "control",
    responses(
        (status = 200, description = "Halted", body = Halted),
        (status = 404, description = "No executor runs", body = ErrorBody),
        (status = 401, description = UNAUTHORIZED, body = ErrorBody),
    ))]
async fn halt(State(app): State<App>) -> Response {
    set_halted(&app, true).await
}

/// Turns the executor's kill switch off: intents are taken again.
#[utoipa::path(post, path = "/api/executor/resume", tag = "control",
    responses(
        (status = 200, description = "Resumed", body = Halted),
        (status = 404, description = "No executor runs", body = ErrorBody),
        (status = 401, description = UNAUTHORIZED, body = ErrorBody),
    ))]
async fn resume(State(app): State<App>) -> Response {
    set_halted(&app, false).await
}

async fn set_halted(app: &App, halt: bool) -> Response {
    use keel_actors::service::executor;
    match executor::set_halted(app.handle.registry(), crate::tree::EXECUTOR, halt).await {
        Ok(halted) => Json(Halted { halted }).into_response(),
        Err(executor::HaltRefused::NoExecutor) => {
            error(StatusCode::NOT_FOUND, "no executor is running").into_response()
        }
    }
}

/// The instances sharing this Redis, as this instance's last heartbeat saw
/// them: each with its heartbeat's age and the leases it holds, which instance
/// took each scheduled task's interval, and every consumer group's consumers
/// with their pending entries.
#[utoipa::path(get, path = "/api/cluster", tag = "inspection",
    responses(
        (status = 200, description = "The cluster", body = Object),
        (status = 404, description = "Cluster mode is off", body = ErrorBody),
        (status = 401, description = UNAUTHORIZED, body = ErrorBody),
    ))]
async fn cluster(State(app): State<App>) -> Response {
    let view = app
        .handle
        .tree()
        .actor(crate::tree::CLUSTER)
        .and_then(|a| a.details.get("cluster").cloned());
    match view {
        Some(view) => Json(view).into_response(),
        None => error(
            StatusCode::NOT_FOUND,
            "cluster mode is off ([cluster] enabled = false)",
        )
        .into_response(),
    }
}

/// Graceful shutdown, as SIGTERM.
#[utoipa::path(post, path = "/api/shutdown", tag = "control",
    responses(
        (status = 202, description = "Shutting down", body = ShuttingDown),
        (status = 409, description = "A shutdown is already in progress", body = ErrorBody),
        (status = 401, description = UNAUTHORIZED, body = ErrorBody),
    ))]
async fn shutdown(State(app): State<App>) -> Response {
    if app.shutting_down.swap(true, Ordering::AcqRel) || app.handle.has_ended() {
        return error(StatusCode::CONFLICT, "a shutdown is already in progress").into_response();
    }
    app.shutdown_requested.notify_one();
    (
        StatusCode::ACCEPTED,
        Json(ShuttingDown {
            shutting_down: true,
            as_signal: "SIGTERM",
        }),
    )
        .into_response()
}
