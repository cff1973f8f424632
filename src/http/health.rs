//! Operations endpoints: `/health` (can this node serve?), `/health/nats`, `/health/cache` and
//! `/metrics` (Prometheus text format). None of them can hang: every NATS probe has a deadline.

use std::time::{Duration, Instant};

use axum::{
    Json, Router,
    extract::State,
    http::{StatusCode, header},
    response::IntoResponse,
    routing::get,
};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::AppState;
use crate::cache::{CacheMetrics, watcher::CLOCK_TOLERANCE};

const PROBE_TIMEOUT: Duration = Duration::from_secs(1);

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/health", get(health))
        .route("/health/nats", get(nats))
        .route("/health/cache", get(cache))
        .route("/metrics", get(metrics))
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct HealthResponse {
    /// `ok`, or `degraded` while NATS is unreachable or the cache may be stale: the node still
    /// serves reads (cached, or `offline` marked degraded) but refuses writes.
    pub status: String,
    pub node_id: String,
    /// `center` or `leaf`.
    pub node_type: String,
    /// The service's version.
    pub version: String,
    pub uptime_seconds: u64,
    /// Whether the service's NATS connection is up.
    pub nats_connected: bool,
    /// This node's clock minus the NATS server's, estimated from watched writes (absent until
    /// one was seen). Beyond one second the status is `degraded`: expiry times would be off.
    pub clock_offset_ms: Option<i64>,
    /// Nodes heard from (this one included) and how many of them are up.
    pub nodes: NodesSummary,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct NodesSummary {
    pub known: usize,
    pub up: usize,
}

/// Whether this node can serve.
#[utoipa::path(
    get,
    path = "/health",
    responses((status = 200, description = "The node serves (status `ok` or `degraded`)", body = HealthResponse)),
    tag = "operations"
)]
pub async fn health(State(state): State<AppState>) -> Json<HealthResponse> {
    let directory = &state.directory;
    let offset = directory.coherence().clock_offset();
    let clock_ok = offset.is_none_or(|o| o.abs().to_std().is_ok_and(|o| o <= CLOCK_TOLERANCE));
    let healthy = directory.coherence().nats_connected() && !directory.stale() && clock_ok;
    Json(HealthResponse {
        status: if healthy { "ok" } else { "degraded" }.into(),
        node_id: directory.node_id().to_string(),
        node_type: state.node_type.as_str().into(),
        version: env!("CARGO_PKG_VERSION").into(),
        uptime_seconds: state.started.elapsed().as_secs(),
        nats_connected: directory.coherence().nats_connected(),
        clock_offset_ms: offset.map(|o| o.num_milliseconds()),
        nodes: {
            let nodes = state.registry.nodes(0);
            NodesSummary { known: nodes.len(), up: nodes.iter().filter(|n| n.up).count() }
        },
    })
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct NatsHealth {
    pub connected: bool,
    /// The connected server's version, as it announced itself.
    pub server_version: Option<String>,
    /// One ping to the server and back, in milliseconds.
    pub rtt_ms: Option<f64>,
    /// JetStream answered an account-info request.
    pub jetstream: bool,
    /// The presence bucket answered a status request.
    pub bucket: bool,
    pub watcher: WatcherHealth,
    /// Whether the circuit breaker in front of NATS is open (writes refused at once).
    pub breaker_open: bool,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct WatcherHealth {
    /// False while the cache may miss updates.
    pub connected: bool,
    /// The highest KV revision applied to the cache.
    pub applied_revision: u64,
    /// Revisions in the bucket not yet applied (as of the last check, every 250 ms).
    pub lag: u64,
    /// Times the cache was rebuilt because the bucket was replaced under it.
    pub rebuilds: u64,
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
pub async fn nats(State(state): State<AppState>) -> (StatusCode, Json<NatsHealth>) {
    let connected = state.nats.connection_state() == async_nats::connection::State::Connected;
    let (rtt_ms, jetstream, bucket) = if connected {
        let started = Instant::now();
        let ping = probe(async { state.nats.flush().await.is_ok() }).await;
        let rtt = ping.then(|| started.elapsed().as_secs_f64() * 1000.0);
        let js = probe(async { state.jetstream.query_account().await.is_ok() }).await;
        let kv = probe(async { state.kv.stream.clone().info().await.is_ok() }).await;
        (rtt, js, kv)
    } else {
        (None, false, false)
    };
    let coherence = state.directory.coherence();
    let body = NatsHealth {
        connected,
        server_version: connected.then(|| state.nats.server_info().version),
        rtt_ms,
        jetstream,
        bucket,
        watcher: WatcherHealth {
            connected: !coherence.stale(),
            applied_revision: coherence.applied_revision(),
            lag: coherence.lag(),
            rebuilds: coherence.rebuilds(),
        },
        breaker_open: state.directory.breaker().is_open(),
    };
    let ok = connected && jetstream && bucket;
    (if ok { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE }, Json(body))
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct CacheHealth {
    #[serde(flatten)]
    pub metrics: CacheMetrics,
    /// hits / (hits + misses) since start; 0 before the first lookup.
    pub hit_ratio: f64,
    pub entries: u64,
    /// Approximate bytes of the cached entries.
    pub weighted_size: u64,
    /// `cache.max_cost`.
    pub max_cost: u64,
    /// True while the cache may miss updates.
    pub stale: bool,
}

/// Cache statistics (the design document's `CacheMetrics`).
#[utoipa::path(get, path = "/health/cache", responses((status = 200, body = CacheHealth)), tag = "operations")]
pub async fn cache(State(state): State<AppState>) -> Json<CacheHealth> {
    let cache = state.directory.cache();
    // moka counts entries during its housekeeping; run it so the numbers are current.
    cache.cleanup().await;
    let metrics = cache.metrics();
    Json(CacheHealth {
        hit_ratio: hit_ratio(&metrics),
        metrics,
        entries: cache.entry_count(),
        weighted_size: cache.weighted_size(),
        max_cost: state.max_cost,
        stale: state.directory.stale(),
    })
}

/// True when `check` answers true within [`PROBE_TIMEOUT`].
async fn probe(check: impl Future<Output = bool>) -> bool {
    tokio::time::timeout(PROBE_TIMEOUT, check).await.unwrap_or(false)
}

fn hit_ratio(m: &CacheMetrics) -> f64 {
    let lookups = m.hits + m.misses;
    if lookups == 0 { 0.0 } else { m.hits as f64 / lookups as f64 }
}

/// Prometheus text format.
pub async fn metrics(State(state): State<AppState>) -> impl IntoResponse {
    let m = &state.metrics;
    let cache = state.directory.cache();
    cache.cleanup().await;
    m.cache_hit_ratio.set(hit_ratio(&cache.metrics()));
    m.cache_entries.set(cache.entry_count() as i64);
    m.cache_size.set(cache.weighted_size() as i64);
    let coherence = state.directory.coherence();
    m.nats_connected.set(coherence.nats_connected() as i64);
    m.cache_stale.set(coherence.stale() as i64);
    m.watcher_lag.set(coherence.lag() as i64);
    m.expiry_scheduled.set(state.directory.expiry().len() as i64);
    if let Some(offset) = coherence.clock_offset() {
        m.clock_offset.set(offset.num_milliseconds() as f64 / 1000.0);
    }
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")], m.render())
}
