//! The OpenAPI 3 document of the API, generated from the handlers' annotations and the types they
//! exchange, served at `/api/v2/openapi.json`.

use axum::{Json, Router, routing::get};
use utoipa::{
    Modify, OpenApi,
    openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme},
};

use super::{AppState, health, presence};

#[derive(OpenApi)]
#[openapi(
    info(title = "Presence", description = "Who is online, away, busy or offline."),
    paths(
        presence::get_one,
        presence::get_many,
        presence::batch,
        presence::set_one,
        presence::history,
        presence::erase,
        health::health,
        health::nats,
        health::cache,
        health::nodes
    ),
    components(schemas(super::ErrorResponse)),
    modifiers(&BearerAuth),
    tags(
        (name = "presence", description = "Read anyone's presence; write your own with a JWT"),
        (name = "operations", description = "Health and statistics"),
    )
)]
pub(crate) struct ApiDoc;

struct BearerAuth;

impl Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let scheme = HttpBuilder::new().scheme(HttpAuthScheme::Bearer).bearer_format("JWT").build();
        openapi
            .components
            .get_or_insert_with(Default::default)
            .add_security_scheme("bearer", SecurityScheme::Http(scheme));
    }
}

pub(crate) fn routes() -> Router<AppState> {
    Router::new().route("/api/v2/openapi.json", get(|| async { Json(ApiDoc::openapi()) }))
}
