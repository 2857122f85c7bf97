//! `GET /api/openapi.json`: the admin routes as an OpenAPI 3.0 document.

use serde_json::{json, Value};

fn op(summary: &str, responses: &[(&str, &str)]) -> Value {
    let responses: serde_json::Map<String, Value> = responses
        .iter()
        .map(|(code, what)| ((*code).to_owned(), json!({ "description": what })))
        .collect();
    json!({ "summary": summary, "responses": responses })
}

fn name_param() -> Value {
    json!([{ "name": "name", "in": "path", "required": true, "schema": { "type": "string" } }])
}

/// The document (routes, parameters, answers; bearer authentication).
pub(super) fn document() -> Value {
    let auth = &[("401", "missing or wrong bearer token")];
    let with = |summary: &str, mut codes: Vec<(&'static str, &'static str)>| {
        codes.extend_from_slice(auth);
        op(summary, &codes)
    };
    let mut messages = with(
        "An actor's recent messages",
        vec![
            ("200", "messages, oldest first"),
            ("400", "bad limit"),
            ("404", "no such actor"),
        ],
    );
    messages["parameters"] = json!([
        { "name": "name", "in": "path", "required": true, "schema": { "type": "string" } },
        { "name": "limit", "in": "query", "schema": { "type": "integer", "minimum": 1, "maximum": 1000 } }
    ]);
    let mut actor = with(
        "One actor",
        vec![("200", "the actor"), ("404", "no such actor")],
    );
    actor["parameters"] = name_param();
    let mut stream = with(
        "Live message tail (Server-Sent Events)",
        vec![("200", "text/event-stream"), ("404", "no such actor")],
    );
    stream["parameters"] = name_param();
    let mut restart = with(
        "Restart an actor now",
        vec![
            ("200", "restarted"),
            ("404", "no such child"),
            ("409", "shutting down"),
        ],
    );
    restart["parameters"] = name_param();
    let mut run = with(
        "Run a scheduled task now",
        vec![
            ("202", "started"),
            ("404", "no such task"),
            ("409", "already running, or no scheduler"),
        ],
    );
    run["parameters"] = name_param();
    json!({
        "openapi": "3.0.3",
        "info": { "title": "Keel admin API", "version": env!("CARGO_PKG_VERSION") },
        "components": { "securitySchemes": { "bearer": { "type": "http", "scheme": "bearer" } } },
        "security": [{ "bearer": [] }],
        "paths": {
            "/": { "get": { "summary": "The dashboard (a static page; its data comes from the routes below)", "security": [], "responses": { "200": { "description": "text/html" } } } },
            "/healthz": { "get": { "summary": "Liveness", "security": [], "responses": { "200": { "description": "the process runs" } } } },
            "/readyz": { "get": with("Readiness", vec![("200", "ready"), ("503", "not ready, with a reason per actor")]) },
            "/api/tree": { "get": with("Every actor", vec![("200", "the tree")]) },
            "/api/actors/{name}": { "get": actor },
            "/api/actors/{name}/messages": { "get": messages },
            "/api/actors/{name}/messages/stream": { "get": stream },
            "/api/actors/{name}/restart": { "post": restart },
            "/api/tasks/{name}/run": { "post": run },
            "/api/shutdown": { "post": with("Graceful shutdown, as SIGTERM", vec![("202", "shutting down"), ("409", "already shutting down")]) },
            "/api/openapi.json": { "get": with("This document", vec![("200", "OpenAPI 3.0")]) },
            "/metrics": { "get": with("Prometheus text metrics", vec![("200", "text/plain; version=0.0.4")]) }
        }
    })
}
