//! `GET /api/v2/nodes`: the registry of nodes, built from their heartbeats.

use axum::{Json, Router, extract::State, routing::get};
use serde::Serialize;
use utoipa::ToSchema;

use super::AppState;
use crate::topology::NodeStatus;

pub fn routes() -> Router<AppState> {
    Router::new().route("/api/v2/nodes", get(nodes))
}

#[derive(Debug, Serialize, ToSchema)]
pub struct NodesResponse {
    /// Always `true`.
    pub success: bool,
    /// Every node heard from (this one included), by node id.
    pub data: Vec<NodeStatus>,
}

/// The nodes of the deployment: last heartbeat, lag in revisions, up or not.
#[utoipa::path(get, path = "/api/v2/nodes", responses((status = 200, body = NodesResponse)), tag = "operations")]
pub async fn nodes(State(state): State<AppState>) -> Json<NodesResponse> {
    let coherence = state.directory.coherence();
    let newest = coherence.applied_revision() + coherence.lag();
    Json(NodesResponse { success: true, data: state.registry.nodes(newest) })
}
