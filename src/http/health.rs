//! `GET /health`: can this node serve? 200 with the node's id and type when its NATS connection
//! is up, 503 with the same body when it is not.

use axum::{Json, Router, extract::State, http::StatusCode, routing::get};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::AppState;

pub fn routes() -> Router<AppState> {
    Router::new().route("/health", get(health))
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct HealthResponse {
    /// `ok` when the node can serve reads and writes, `unavailable` when it cannot reach NATS.
    pub status: String,
    pub node_id: String,
    /// `center` or `leaf`.
    pub node_type: String,
    /// The service's version.
    pub version: String,
    pub uptime_seconds: u64,
    /// Whether the service's NATS connection is up.
    pub nats_connected: bool,
}

/// Whether this node can serve.
#[utoipa::path(
    get,
    path = "/health",
    responses(
        (status = 200, description = "The node can serve", body = HealthResponse),
        (status = 503, description = "The node cannot reach NATS", body = HealthResponse),
    ),
    tag = "operations"
)]
pub async fn health(State(state): State<AppState>) -> (StatusCode, Json<HealthResponse>) {
    let connected = state.nats.connection_state() == async_nats::connection::State::Connected;
    let body = HealthResponse {
        status: if connected { "ok" } else { "unavailable" }.into(),
        node_id: state.node_id.clone(),
        node_type: state.node_type.as_str().into(),
        version: env!("CARGO_PKG_VERSION").into(),
        uptime_seconds: state.started.elapsed().as_secs(),
        nats_connected: connected,
    };
    let status = if connected {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (status, Json(body))
}
