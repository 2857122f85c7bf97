//! `GET /`: the dashboard, one self-contained page (no build step, no external
//! assets) that shows the tree live and offers restart, run and shutdown.
//!
//! The page itself carries no data, so it is served without the token (a browser
//! cannot attach a bearer token to a navigation); everything it shows it fetches
//! from the token-protected API with the token the operator enters, or passes in
//! the URL fragment (`/#token=...`), which never reaches the server or its logs.

use axum::http::header;
use axum::response::{IntoResponse, Response};

const PAGE: &str = include_str!("dashboard.html");

/// Only inline code and same-origin requests: the page can load nothing else.
const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; script-src 'unsafe-inline'; \
     style-src 'unsafe-inline'; connect-src 'self'; img-src data:; frame-ancestors 'none'; \
     base-uri 'none'; form-action 'none'";

/// The dashboard: a static page whose data comes from the routes below.
#[utoipa::path(get, path = "/", tag = "dashboard", security(()),
    responses((status = 200, description = "The dashboard page", content_type = "text/html")))]
pub(super) async fn page() -> Response {
    (
        [
            (header::CONTENT_TYPE, "text/html; charset=utf-8"),
            (header::CONTENT_SECURITY_POLICY, CONTENT_SECURITY_POLICY),
            (header::CACHE_CONTROL, "no-cache"),
            (header::REFERRER_POLICY, "no-referrer"),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        ],
        PAGE,
    )
        .into_response()
}
