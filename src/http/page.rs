//! `GET /`: a small page for people: watch users' status change live (through the project's
//! TypeScript client, whose build is embedded here), set your own, join a room and see who is in
//! it and who is typing. HTML, JavaScript and CSS are in the binary; the page loads nothing from
//! elsewhere, and its Content Security Policy says so.

use axum::{
    Router,
    http::{HeaderValue, header},
    response::{IntoResponse, Response},
    routing::get,
};

use super::AppState;

const INDEX: &str = include_str!("page/index.html");
const SCRIPT: &str = include_str!("page/app.js");
const ROOM_SCRIPT: &str = include_str!("page/room.js");
const STYLE: &str = include_str!("page/app.css");
const ICON: &[u8] = include_bytes!("page/favicon.ico");

/// The TypeScript client as the page uses it: `clients/typescript`'s build, copied here by
/// `npm run page` there (`scripts/test` fails when this copy is not its source's build).
const CLIENT: [(&str, &str); 6] = [
    ("index.js", include_str!("page/client/index.js")),
    ("client.js", include_str!("page/client/client.js")),
    ("rest.js", include_str!("page/client/rest.js")),
    ("room.js", include_str!("page/client/room.js")),
    ("types.js", include_str!("page/client/types.js")),
    ("view.js", include_str!("page/client/view.js")),
];

/// Only this node: its own scripts, styles and API.
const POLICY: &str = "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; \
                      img-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

pub(super) fn routes() -> Router<AppState> {
    Router::new()
        .route("/", get(|| async { asset("text/html; charset=utf-8", INDEX) }))
        .route("/page/app.js", get(|| async { asset("text/javascript; charset=utf-8", SCRIPT) }))
        .route("/page/room.js", get(|| async { asset("text/javascript; charset=utf-8", ROOM_SCRIPT) }))
        .route("/page/app.css", get(|| async { asset("text/css; charset=utf-8", STYLE) }))
        .route("/favicon.ico", get(|| async { asset("image/x-icon", ICON) }))
        .route("/page/client/{file}", get(client))
}

async fn client(axum::extract::Path(file): axum::extract::Path<String>) -> Response {
    match CLIENT.iter().find(|(name, _)| *name == file) {
        Some((_, text)) => asset("text/javascript; charset=utf-8", *text),
        None => super::ApiError::NotFound("no such route".into()).into_response(),
    }
}

fn asset(content_type: &'static str, body: impl IntoResponse) -> Response {
    let mut response = body.into_response();
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    headers.insert(header::CONTENT_SECURITY_POLICY, HeaderValue::from_static(POLICY));
    headers.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    response
}
