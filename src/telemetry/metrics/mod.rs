//! Prometheus metrics, one registry per node (tests run many nodes in one process), rendered in
//! the text format at `GET /metrics`. Names follow Prometheus conventions: prefix `presence_`,
//! counters end in `_total`, durations in `_seconds`, sizes in `_bytes`.

mod labels;
mod process;
mod rooms;
mod webhooks;

use std::{sync::atomic::AtomicU64, time::Duration};

use prometheus_client::{
    metrics::{counter::Counter, family::Family, gauge::Gauge, histogram::Histogram},
    registry::{Registry, Unit},
};

pub(crate) use labels::*;
use process::resident_memory_bytes;
pub(crate) use rooms::RoomMetrics;
pub(crate) use webhooks::{EndpointLabels, WebhookMetrics};

fn latency_buckets() -> Histogram {
    // 50 µs to about 3 s.
    Histogram::new(prometheus_client::metrics::histogram::exponential_buckets(0.000_05, 2.0, 17))
}

/// Every metric the node exports; cheap handles, updated in place.
pub(crate) struct Metrics {
    registry: Registry,
    pub http_requests: Family<HttpLabels, Counter>,
    pub http_duration: Family<HttpLabels, Histogram, fn() -> Histogram>,
    pub updates: Counter,
    pub nats_duration: Family<NatsLabels, Histogram, fn() -> Histogram>,
    pub open_connections: Gauge,
    pub cache_hits: Counter,
    pub cache_misses: Counter,
    pub cache_evictions: Counter,
    pub cache_hit_ratio: Gauge<f64, AtomicU64>,
    pub cache_entries: Gauge,
    pub cache_size: Gauge,
    pub nats_connected: Gauge,
    pub cache_stale: Gauge,
    pub watcher_lag: Gauge,
    pub resident_memory: Gauge,
    pub rate_limited: Family<KindLabels, Counter>,
    pub expired: Counter,
    pub events_failed: Counter,
    pub events_repaired: Counter,
    pub tokens_refused: Counter,
    pub http_connections_refused: Family<ReasonLabels, Counter>,
    pub http_timeouts: Family<ReasonLabels, Counter>,
    pub expiry_scheduled: Gauge,
    pub expiry_overdue: Gauge,
    pub clock_offset: Gauge<f64, AtomicU64>,
    pub tokens_previous_secret: Counter,
    pub nodes_known: Gauge,
    pub nodes_up: Gauge,
    pub cache_max: Gauge,
    pub embedded_nats_running: Gauge,
    pub embedded_nats_restarts: Gauge,
    pub certificate_expiry: Family<LinkLabels, Gauge>,
    pub jetstream_replicas_current: Family<JetStreamLabels, Gauge>,
    pub jetstream_leader: Family<JetStreamLeaderLabels, Gauge>,
    pub streams_open: Family<StreamLabels, Gauge>,
    pub stream_changes_delivered: Counter,
    pub stream_changes_coalesced: Counter,
    pub stream_clients_dropped: Family<ReasonLabels, Counter>,
    pub streams_refused: Family<ReasonLabels, Counter>,
    /// A leaf's writes sent to the center, by outcome: `stored`, `no_center` (written through
    /// the link instead), `failed`.
    pub writes_forwarded: Family<OutcomeLabels, Counter>,
    /// Device sessions this node holds (in their grace too).
    pub sessions_held: Gauge,
    /// Writes of session transitions, by outcome: `written`, `unchanged` (the record said so
    /// already: no KV write), `failed` (retried).
    pub session_writes: Family<OutcomeLabels, Counter>,
    pub rooms: RoomMetrics,
    pub webhooks: WebhookMetrics,
}

impl Metrics {
    pub(crate) fn new() -> Self {
        let mut m = Self {
            registry: Registry::with_prefix("presence"),
            http_requests: Family::default(),
            http_duration: Family::new_with_constructor(latency_buckets),
            updates: Counter::default(),
            nats_duration: Family::new_with_constructor(latency_buckets),
            open_connections: Gauge::default(),
            cache_hits: Counter::default(),
            cache_misses: Counter::default(),
            cache_evictions: Counter::default(),
            cache_hit_ratio: Gauge::default(),
            cache_entries: Gauge::default(),
            cache_size: Gauge::default(),
            nats_connected: Gauge::default(),
            cache_stale: Gauge::default(),
            watcher_lag: Gauge::default(),
            resident_memory: Gauge::default(),
            rate_limited: Family::default(),
            expired: Counter::default(),
            events_failed: Counter::default(),
            events_repaired: Counter::default(),
            tokens_refused: Counter::default(),
            http_connections_refused: Family::default(),
            http_timeouts: Family::default(),
            expiry_scheduled: Gauge::default(),
            expiry_overdue: Gauge::default(),
            clock_offset: Gauge::default(),
            tokens_previous_secret: Counter::default(),
            nodes_known: Gauge::default(),
            nodes_up: Gauge::default(),
            cache_max: Gauge::default(),
            embedded_nats_running: Gauge::default(),
            embedded_nats_restarts: Gauge::default(),
            certificate_expiry: Family::default(),
            jetstream_replicas_current: Family::default(),
            jetstream_leader: Family::default(),
            streams_open: Family::default(),
            stream_changes_delivered: Counter::default(),
            stream_changes_coalesced: Counter::default(),
            stream_clients_dropped: Family::default(),
            streams_refused: Family::default(),
            writes_forwarded: Family::default(),
            sessions_held: Gauge::default(),
            session_writes: Family::default(),
            rooms: RoomMetrics::default(),
            webhooks: WebhookMetrics::default(),
        };
        let r = &mut m.registry;
        r.register(
            "http_requests",
            "HTTP requests by route template, method and status",
            m.http_requests.clone(),
        );
        r.register_with_unit(
            "http_request_duration",
            "HTTP request latency",
            Unit::Seconds,
            m.http_duration.clone(),
        );
        r.register("updates", "Presence writes acknowledged by JetStream", m.updates.clone());
        r.register_with_unit(
            "nats_request_duration",
            "Latency of requests to NATS by operation",
            Unit::Seconds,
            m.nats_duration.clone(),
        );
        r.register("http_open_connections", "Open HTTP connections", m.open_connections.clone());
        r.register("cache_hits", "Cache lookups that found an entry", m.cache_hits.clone());
        r.register("cache_misses", "Cache lookups that found none", m.cache_misses.clone());
        r.register("cache_evictions", "Entries evicted for size or expiry", m.cache_evictions.clone());
        r.register("cache_hit_ratio", "hits / (hits + misses) since start", m.cache_hit_ratio.clone());
        r.register("cache_entries", "Entries in the cache", m.cache_entries.clone());
        r.register_with_unit(
            "cache_weighted_size",
            "Approximate cost of the cached entries",
            Unit::Bytes,
            m.cache_size.clone(),
        );
        r.register("nats_connected", "1 while the NATS connection is up", m.nats_connected.clone());
        r.register("cache_stale", "1 while cached entries may miss updates", m.cache_stale.clone());
        r.register(
            "watcher_lag_revisions",
            "KV revisions not yet applied to the cache",
            m.watcher_lag.clone(),
        );
        r.register_with_unit(
            "process_resident_memory",
            "Resident set size of the process",
            Unit::Bytes,
            m.resident_memory.clone(),
        );
        r.register("rate_limited", "Requests refused by a rate limit", m.rate_limited.clone());
        r.register("expired", "Expiry transitions this node wrote (and announced)", m.expired.clone());
        r.register(
            "events_failed",
            "Presence events that could not be published or confirmed",
            m.events_failed.clone(),
        );
        r.register(
            "events_repaired",
            "Events a crash left out of the audit log, stored by the repair",
            m.events_repaired.clone(),
        );
        r.register(
            "tokens_refused",
            "Requests whose bearer token was refused (401)",
            m.tokens_refused.clone(),
        );
        r.register(
            "tokens_previous_secret",
            "Requests whose token was signed with auth.previous_jwt_secret (accepted)",
            m.tokens_previous_secret.clone(),
        );
        r.register(
            "http_connections_refused",
            "Connections turned away at a cap (reason: total, per_ip)",
            m.http_connections_refused.clone(),
        );
        r.register(
            "http_timeouts",
            "Connections closed or requests answered 408 for slowness (reason: header, body, idle, tls_handshake)",
            m.http_timeouts.clone(),
        );
        r.register(
            "expiry_scheduled",
            "Revisions waiting in this node's expiry schedule",
            m.expiry_scheduled.clone(),
        );
        r.register(
            "expiry_overdue",
            "Expiries due more than a second ago and not yet written: the expiry job's backlog",
            m.expiry_overdue.clone(),
        );
        r.register("nodes_known", "Nodes in this node's registry (itself included)", m.nodes_known.clone());
        r.register("nodes_up", "Nodes heard from within the heartbeat timeout", m.nodes_up.clone());
        r.register_with_unit(
            "cache_max",
            "cache.max_cost: the cache's bound",
            Unit::Bytes,
            m.cache_max.clone(),
        );
        r.register(
            "embedded_nats_running",
            "1 while the embedded nats-server runs (absent with an external NATS)",
            m.embedded_nats_running.clone(),
        );
        r.register(
            "embedded_nats_restarts",
            "Restarts of the embedded nats-server since the service started",
            m.embedded_nats_restarts.clone(),
        );
        r.register_with_unit(
            "tls_certificate_expiry_timestamp",
            "When each configured certificate expires (Unix time), by link: https, leafnode, nats",
            Unit::Seconds,
            m.certificate_expiry.clone(),
        );
        r.register(
            "jetstream_replicas_current",
            "Copies of each shared stream (bucket, audit_log) caught up with its leader, the leader \
             included (1 on a single server); 0 while it has no leader or does not answer",
            m.jetstream_replicas_current.clone(),
        );
        r.register(
            "jetstream_leader",
            "1 for the server that leads each shared stream (bucket, audit_log), by its name",
            m.jetstream_leader.clone(),
        );
        r.register("streams_open", "Open live streams by kind: sse, websocket", m.streams_open.clone());
        r.register(
            "stream_changes_delivered",
            "Presence changes written to live-stream clients",
            m.stream_changes_delivered.clone(),
        );
        r.register(
            "stream_changes_coalesced",
            "Presence changes replaced by a newer one for the same user before a client took them",
            m.stream_changes_coalesced.clone(),
        );
        r.register(
            "stream_clients_dropped",
            "Live-stream clients disconnected by the node (reason: slow, dead, flooding)",
            m.stream_clients_dropped.clone(),
        );
        r.register(
            "streams_refused",
            "Live streams refused at a cap (reason: total, per_ip)",
            m.streams_refused.clone(),
        );
        r.register(
            "writes_forwarded",
            "A leaf's writes sent to the center to carry out (outcome: stored, no_center, failed)",
            m.writes_forwarded.clone(),
        );
        r.register(
            "sessions_held",
            "Device sessions this node holds, in their grace too",
            m.sessions_held.clone(),
        );
        r.register(
            "session_writes",
            "Session transitions synced to the bucket (outcome: written, unchanged, failed)",
            m.session_writes.clone(),
        );
        m.rooms.register(r);
        m.webhooks.register(r);
        // Known label values start at zero, so that their series exist (and `rate` works) before
        // the first refusal or timeout.
        for reason in ["total", "per_ip"] {
            let _ = m.http_connections_refused.get_or_create(&ReasonLabels { reason });
        }
        for reason in ["header", "body", "idle", "tls_handshake"] {
            let _ = m.http_timeouts.get_or_create(&ReasonLabels { reason });
        }
        for kind in ["read", "write"] {
            let _ = m.rate_limited.get_or_create(&KindLabels { kind });
        }
        for kind in ["sse", "websocket"] {
            let _ = m.streams_open.get_or_create(&StreamLabels { kind });
        }
        for reason in ["slow", "dead"] {
            let _ = m.stream_clients_dropped.get_or_create(&ReasonLabels { reason });
        }
        for reason in ["total", "per_ip"] {
            let _ = m.streams_refused.get_or_create(&ReasonLabels { reason });
        }
        for outcome in ["stored", "no_center", "failed"] {
            let _ = m.writes_forwarded.get_or_create(&OutcomeLabels { outcome });
        }
        for outcome in ["written", "unchanged", "failed"] {
            let _ = m.session_writes.get_or_create(&OutcomeLabels { outcome });
        }
        r.register_with_unit(
            "clock_offset",
            "This node's clock minus the NATS server's, estimated",
            Unit::Seconds,
            m.clock_offset.clone(),
        );
        m
    }

    pub(crate) fn observe_nats(&self, op: &'static str, elapsed: Duration) {
        self.nats_duration.get_or_create(&NatsLabels { op }).observe(elapsed.as_secs_f64());
    }

    /// The text exposition of every metric.
    pub(crate) fn render(&self) -> String {
        self.resident_memory.set(resident_memory_bytes() as i64);
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &self.registry)
            .expect("writing to a String cannot fail");
        out
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}
