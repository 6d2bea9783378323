//! The OpenAPI document, generated from the handlers' annotations and served at
//! `/openapi.json`.

use std::sync::OnceLock;

use axum::http::header;
use axum::response::IntoResponse;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};

use crate::routes::{cancel, health, messages, projects, queues};

/// The document.
#[derive(OpenApi)]
#[openapi(
    info(
        title = "broker-api",
        description = "An HTTP API over the platform's RabbitMQ queues. Every `/api/` route and `/metrics` need `Authorization: Bearer <token>`. Each route's security requirement names the scope it needs (OpenAPI 3.1 roles of the `bearer` scheme): `read` (BROKER_API_READ_TOKEN: lists, queues, projects, metrics), `user` (BROKER_API_TOKEN: also create, publish to, get from and delete queues), `admin` (BROKER_API_ADMIN_TOKEN: also the platform's queues `todo`, `todo.dead`, `results.*`, which the `user` scope only reads). A larger scope includes the smaller ones. A token whose scope is too small gets 403 with `{\"scope\": \"<needed>\"}`. Errors are JSON: `{\"error\": \"...\", \"status\": N}`."
    ),
    paths(
        health::healthz,
        health::readyz,
        crate::metrics::serve,
        queues::list,
        queues::inspect,
        queues::create,
        queues::delete,
        messages::publish,
        messages::get,
        projects::list,
        projects::one,
        cancel::cancel,
    ),
    components(schemas(crate::error::ErrorBody, crate::auth::Scope, commanditaire::cancel::Cancelled)),
    modifiers(&Bearer),
    tags(
        (name = "queues", description = "Queues and their depth"),
        (name = "messages", description = "Publish (confirmed) and get"),
        (name = "projects", description = "The platform's projects and their progress"),
        (name = "health", description = "Liveness and readiness"),
    )
)]
pub struct ApiDoc;

struct Bearer;

impl Modify for Bearer {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
        );
    }
}

/// The document as JSON (built once).
pub fn document() -> &'static str {
    static DOC: OnceLock<String> = OnceLock::new();
    DOC.get_or_init(|| {
        ApiDoc::openapi()
            .to_pretty_json()
            .expect("the OpenAPI document serializes")
    })
}

/// `GET /openapi.json`.
pub async fn serve() -> impl IntoResponse {
    ([(header::CONTENT_TYPE, "application/json")], document())
}
