//! The OpenAPI 3 document of the API, generated from the handlers' annotations and the types they
//! exchange, then refined ([`refine`]) with what the annotations cannot say: the user id's
//! pattern wherever one appears, list sizes, the message's character rules, and the operations
//! of the user named `batch`. Served at `/api/v2/openapi.json`; a schema-driven fuzzer
//! (schemathesis, in `.ci/run`) holds the API to it.

use std::sync::OnceLock;

use axum::{Json, Router, routing::get};
use serde_json::{Value, json};
use utoipa::{
    Modify, OpenApi,
    openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme},
};

use super::{AppState, health, owner, presence, rooms, sse, ws};

#[derive(OpenApi)]
#[openapi(
    info(title = "Presence", description = "Who is online, away, busy or offline."),
    paths(
        presence::get_one,
        presence::get_many,
        presence::batch,
        presence::set_one,
        owner::history,
        owner::erase,
        sse::stream,
        ws::upgrade,
        rooms::read,
        rooms::counts,
        rooms::stream,
        health::health,
        health::nats,
        health::cache,
        health::nodes
    ),
    components(schemas(super::ErrorResponse)),
    modifiers(&BearerAuth),
    tags(
        (name = "presence", description = "Read anyone's presence; write your own with a JWT"),
        (name = "live", description = "Follow users' presence as it changes: Server-Sent Events or WebSocket"),
        (name = "rooms", description = "Who is in a room right now; joining is over the WebSocket (docs/rooms.md)"),
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
    Router::new().route("/api/v2/openapi.json", get(|| async { Json(document()) }))
}

/// The served document, built once.
pub(crate) fn document() -> &'static Value {
    static DOCUMENT: OnceLock<Value> = OnceLock::new();
    DOCUMENT.get_or_init(|| {
        let mut doc = serde_json::to_value(ApiDoc::openapi()).expect("the document serializes");
        refine(&mut doc);
        doc
    })
}

/// A user id (docs/api.md), as `model::UserId::parse` checks it.
const USER_ID: &str = "^[A-Za-z0-9_-]{1,128}$";
/// A `?users=` (or `?rooms=`) list: 1 to 1000 ids, within what a URI can hold (65,534 bytes in all).
const USER_LIST: &str = "^[A-Za-z0-9_-]{1,128}(,[A-Za-z0-9_-]{1,128}){0,999}$";
const USER_LIST_MAX_LENGTH: u64 = 60_000;
/// A status message: none of the characters `PresenceUpdate::new` refuses (control, bidi,
/// invisible, separators; the zero-width joiner, allowed there between emoji, is left out here).
const MESSAGE: &str = "^[^\\u0000-\\u001f\\u007f-\\u009f\\u061c\\u180e\\u200b-\\u200f\\u2028-\\u202e\\u2060-\\u2064\\u2066-\\u2069\\ufeff]*$";

/// A header's comma-separated list of tokens with `token` (a pattern) among them.
fn list_with(token: &str) -> Value {
    json!({"type": "string", "pattern": format!("^(.*,)?[ \\t]*{token}[ \\t]*(,.*)?$")})
}

/// What the annotations cannot express.
fn refine(doc: &mut Value) {
    let user_id = json!({"type": "string", "pattern": USER_ID, "minLength": 1, "maxLength": 128});
    for path in doc["paths"].as_object_mut().expect("paths").values_mut() {
        for operation in path.as_object_mut().expect("a path item").values_mut() {
            let Some(parameters) = operation.get_mut("parameters").and_then(Value::as_array_mut) else {
                continue;
            };
            for parameter in parameters {
                match parameter["name"].as_str() {
                    Some("user_id" | "room") => parameter["schema"] = user_id.clone(),
                    Some("rooms") => {
                        parameter["required"] = json!(true);
                        parameter["schema"] = json!({"type": "string", "pattern": USER_LIST, "maxLength": USER_LIST_MAX_LENGTH});
                    }
                    Some("device") => {
                        parameter["schema"] =
                            json!({"type": "string", "pattern": USER_ID, "minLength": 1, "maxLength": 128})
                    }
                    Some("kind") => {
                        parameter["schema"] =
                            json!({"type": "string", "enum": ["web", "mobile", "desktop", "other"]})
                    }
                    Some("Connection") => parameter["schema"] = list_with("[Uu][Pp][Gg][Rr][Aa][Dd][Ee]"),
                    Some("Upgrade") => {
                        parameter["schema"] = list_with("[Ww][Ee][Bb][Ss][Oo][Cc][Kk][Ee][Tt]")
                    }
                    Some("Sec-WebSocket-Version") => {
                        parameter["schema"] = json!({"type": "string", "enum": ["13"]})
                    }
                    Some("Sec-WebSocket-Key") => {
                        parameter["schema"] =
                            json!({"type": "string", "pattern": "^[A-Za-z0-9+/]{21}[AQgw]==$"})
                    }
                    Some("users") => {
                        parameter["required"] = json!(true);
                        parameter["schema"] = json!({"type": "string", "pattern": USER_LIST, "maxLength": USER_LIST_MAX_LENGTH});
                    }
                    _ => {}
                }
            }
        }
    }
    let schemas = &mut doc["components"]["schemas"];
    let ids = &mut schemas["BatchRequest"]["properties"]["user_ids"];
    ids["minItems"] = json!(1);
    ids["maxItems"] = json!(1000);
    ids["items"] = user_id;
    schemas["StreamEvent"]["properties"]["event"]["enum"] =
        json!(["snapshot", "change", "room", "stale", "fresh", "closed"]);
    schemas["StreamEvent"]["properties"]["data"]["contentMediaType"] = json!("application/json");
    let body = &mut schemas["SetPresenceRequest"]["properties"];
    body["status"]["enum"] = json!(["online", "away", "busy", "offline", "invisible"]);
    body["message"]["maxLength"] = json!(256);
    body["message"]["pattern"] = json!(MESSAGE);
    batch_user(doc);
}

/// `/api/v2/presence/batch` is also the path of the user named `batch`: its GET, PUT and DELETE
/// are that user's, as the router serves them.
fn batch_user(doc: &mut Value) {
    let single = doc["paths"]["/api/v2/presence/{user_id}"].clone();
    let batch = doc["paths"]["/api/v2/presence/batch"].as_object_mut().expect("the batch path");
    for method in ["get", "put", "delete"] {
        let mut operation = single[method].clone();
        if let Some(parameters) = operation.get_mut("parameters").and_then(Value::as_array_mut) {
            parameters.retain(|p| p["name"] != "user_id");
        }
        operation["operationId"] = json!(format!("{method}_user_named_batch"));
        operation["summary"] =
            json!(format!("{} (the user named `batch`)", operation["summary"].as_str().unwrap_or("")));
        batch.insert(method.into(), operation);
    }
}
