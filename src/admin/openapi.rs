//! `GET /api/openapi.json`: the admin API as an OpenAPI 3.1 document, generated
//! by utoipa from the handlers' `#[utoipa::path]` attributes and the body types
//! below. The router is built from the same attributes (`utoipa_axum::routes!`),
//! so a route cannot exist without its entry in the document, nor the other way.

use std::collections::BTreeMap;

use serde::Serialize;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi, ToSchema};

/// The document's frame: title, version and bearer authentication; the paths
/// come from the router.
#[derive(OpenApi)]
#[openapi(
    info(title = "Keel admin API", description = "Inspect and steer a running Keel tree."),
    modifiers(&Bearer),
    security(("bearer" = []))
)]
pub(super) struct AdminApi;

struct Bearer;

impl Modify for Bearer {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        openapi
            .components
            .get_or_insert_with(Default::default)
            .add_security_scheme(
                "bearer",
                SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
            );
    }
}

/// Every error: a status code and this body.
#[derive(Serialize, ToSchema)]
pub(super) struct ErrorBody {
    /// What went wrong, for a human.
    pub(super) error: String,
}

/// `GET /healthz`.
#[derive(Serialize, ToSchema)]
pub(super) struct Health {
    /// Always `ok`: the process answers.
    pub(super) status: &'static str,
}

/// `GET /readyz`.
#[derive(Serialize, ToSchema)]
pub(super) struct Readiness {
    /// Whether every resource serves and every permanent worker runs.
    pub(super) ready: bool,
    /// When not ready: what keeps each actor from it (`connecting: ...`,
    /// `restarting`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) not_ready: Option<BTreeMap<String, String>>,
}

/// `GET /api/tree`.
#[derive(Serialize, ToSchema)]
pub(super) struct Tree {
    /// Every actor, in start order, each with the names of its children.
    #[schema(value_type = Vec<Object>)]
    pub(super) actors: Vec<serde_json::Value>,
}

/// `GET /api/actors/{name}/messages`.
#[derive(Serialize, ToSchema)]
pub(super) struct Messages {
    /// The actor's name.
    pub(super) actor: String,
    /// Its most recent messages, oldest first: sequence number, time, kind and
    /// summary.
    #[schema(value_type = Vec<Object>)]
    pub(super) messages: Vec<keel_core::registry::MessageRecord>,
}

/// `POST /api/actors/{name}/restart`.
#[derive(Serialize, ToSchema)]
pub(super) struct Restarted {
    /// The child restarted.
    pub(super) restarted: String,
}

/// `POST /api/executor/halt` and `/api/executor/resume`.
#[derive(Serialize, ToSchema)]
pub(super) struct Halted {
    /// Whether the executor's kill switch is on now.
    pub(super) halted: bool,
}

/// `POST /api/tasks/{name}/run`.
#[derive(Serialize, ToSchema)]
pub(super) struct Started {
    /// The task started.
    pub(super) started: String,
}

/// `POST /api/shutdown`.
#[derive(Serialize, ToSchema)]
pub(super) struct ShuttingDown {
    /// Always `true`.
    pub(super) shutting_down: bool,
    /// Always `SIGTERM`: the shutdown is the one a signal starts.
    #[serde(rename = "as")]
    pub(super) as_signal: &'static str,
}
