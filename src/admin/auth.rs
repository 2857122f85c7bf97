//! Bearer-token check, in constant time; the token never reaches a log.

use axum::extract::{Request, State};
use axum::http::{header, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use super::routes::{error, App};

/// Refusals are logged within the repeat allowance: a client retrying without a
/// token must not flood the log.
static UNAUTHORIZED_LOG: std::sync::LazyLock<keel_core::logs::Repeats> =
    std::sync::LazyLock::new(Default::default);

/// Compares without stopping at the first difference.
fn same(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

pub(super) async fn require_token(
    State(app): State<App>,
    request: Request,
    next: Next,
) -> Response {
    let Some(token) = &app.token else {
        return next.run(request).await;
    };
    let presented = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    match presented {
        Some(p) if same(p.as_bytes(), token.expose().as_bytes()) => next.run(request).await,
        _ => {
            app.refusals
                .unauthorized
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            UNAUTHORIZED_LOG.warn(|suppressed| {
                // The path is the caller's text: bounded, never the token.
                let path: String = request.uri().path().chars().take(100).collect();
                tracing::warn!(%path, suppressed, "Admin request without a valid token refused.");
            });
            error(StatusCode::UNAUTHORIZED, "a valid bearer token is required").into_response()
        }
    }
}
