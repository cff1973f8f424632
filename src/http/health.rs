//! Operations endpoints: `/health` (can this node serve?), `/health/nats`, `/health/cache`,
//! `/api/v2/nodes` and `/metrics` (Prometheus text format). Each asks [`crate::health::Health`]
//! once and serializes the answer.

use axum::{
    Json, Router,
    extract::State,
    http::{StatusCode, header},
    response::IntoResponse,
    routing::get,
};
use serde::Serialize;
use utoipa::ToSchema;

use super::AppState;
use crate::{
    health::{CacheHealth, HealthResponse, NatsHealth},
    topology::NodeStatus,
};

pub(super) fn routes() -> Router<AppState> {
    Router::new()
        .route("/health", get(health))
        .route("/health/nats", get(nats))
        .route("/health/cache", get(cache))
        .route("/metrics", get(metrics))
        .route("/api/v2/nodes", get(nodes))
}

/// Whether this node can serve.
#[utoipa::path(
    get,
    path = "/health",
    responses((status = 200, description = "The node serves (status `ok` or `degraded`)", body = HealthResponse)),
    tag = "operations"
)]
pub(super) async fn health(State(state): State<AppState>) -> Json<HealthResponse> {
    Json(state.health.report())
}

/// The NATS link, JetStream, the bucket and the watcher.
#[utoipa::path(
    get,
    path = "/health/nats",
    responses(
        (status = 200, description = "NATS, JetStream and the bucket answer", body = NatsHealth),
        (status = 503, description = "Some of them do not", body = NatsHealth),
    ),
    tag = "operations"
)]
pub(super) async fn nats(State(state): State<AppState>) -> (StatusCode, Json<NatsHealth>) {
    let report = state.health.nats().await;
    (if report.ok() { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE }, Json(report))
}

/// Cache statistics: hits, misses, entries added and evicted, size.
#[utoipa::path(get, path = "/health/cache", responses((status = 200, body = CacheHealth)), tag = "operations")]
pub(super) async fn cache(State(state): State<AppState>) -> Json<CacheHealth> {
    Json(state.health.cache().await)
}

#[derive(Debug, Serialize, ToSchema)]
pub(super) struct NodesResponse {
    /// Always `true`.
    pub success: bool,
    /// Every node heard from (this one included), by node id.
    pub data: Vec<NodeStatus>,
}

/// The nodes of the deployment: last heartbeat, lag in revisions, up or not.
#[utoipa::path(get, path = "/api/v2/nodes", responses((status = 200, body = NodesResponse)), tag = "operations")]
pub(super) async fn nodes(State(state): State<AppState>) -> Json<NodesResponse> {
    Json(NodesResponse { success: true, data: state.health.nodes() })
}

/// Prometheus text format.
pub(super) async fn metrics(State(state): State<AppState>) -> impl IntoResponse {
    let body = state.health.render_metrics().await;
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")], body)
}
