//! What health answers, as serialized: `/health`, `/health/nats`, `/health/cache`.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::{cache::CacheMetrics, nats::Placement, webhooks::EndpointHealth};

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub(crate) struct HealthResponse {
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
    /// Live streams (Server-Sent Events and WebSocket) open on this node.
    pub streams: usize,
    /// The embedded nats-server (absent with an external NATS). While it is down, or once it was
    /// restarted 3 times within 10 minutes, the status is `degraded`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub embedded_nats: Option<EmbeddedNatsHealth>,
    /// What is wrong with the bucket and the audit log, checked every 5 s: missing, or (on a
    /// center) settings other than its configuration's. Anything here makes the status `degraded`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub shared_streams: Vec<String>,
    /// On a center, the webhook endpoints (docs/webhooks.md) by name: whether they are
    /// delivering, retrying or disabled, and what waits for them. Their state leaves the status
    /// as it is: an endpoint's trouble is the application's, not the node's.
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub webhooks: std::collections::BTreeMap<String, EndpointHealth>,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub(crate) struct EmbeddedNatsHealth {
    pub running: bool,
    /// Restarts since the service started.
    pub restarts: u64,
    /// Restarted 3 times or more within the last 10 minutes.
    pub keeps_dying: bool,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub(crate) struct NodesSummary {
    pub known: usize,
    pub up: usize,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub(crate) struct NatsHealth {
    pub connected: bool,
    /// The connected server's version, as it announced itself.
    pub server_version: Option<String>,
    /// One ping to the server and back, in milliseconds.
    pub rtt_ms: Option<f64>,
    /// JetStream answered an account-info request.
    pub jetstream: bool,
    /// The presence bucket answered a status request.
    pub bucket: bool,
    /// Where the shared streams live: the server that leads each and its replicas (a single
    /// server leads with none; null when the stream does not answer).
    pub streams: SharedStreams,
    pub watcher: WatcherHealth,
    /// Whether the circuit breaker in front of NATS writes is open (writes refused at once).
    pub breaker_open: bool,
    /// Whether the one in front of KV reads is open (misses answered degraded at once).
    pub read_breaker_open: bool,
}

#[derive(Debug, Default, Serialize, Deserialize, ToSchema)]
pub(crate) struct SharedStreams {
    /// The presence bucket's stream.
    pub bucket: Option<Placement>,
    /// The audit log's stream.
    pub audit_log: Option<Placement>,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub(crate) struct WatcherHealth {
    /// False while the cache may miss updates.
    pub connected: bool,
    /// Revisions in the bucket not yet applied (as of the last check, every 250 ms).
    pub lag: u64,
    /// Times the cache was rebuilt because the bucket was replaced under it.
    pub rebuilds: u64,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub(crate) struct CacheHealth {
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
    /// True while the start-up lands the node's cache snapshot (erasures on this node wait).
    pub restoring: bool,
    /// Presences this start took from the node's cache snapshot (0: it read them from the bucket).
    pub restored: u64,
}

impl NatsHealth {
    /// NATS, JetStream and the bucket all answer.
    pub(crate) fn ok(&self) -> bool {
        self.connected && self.jetstream && self.bucket
    }
}
