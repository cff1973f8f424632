//! What a node knows about itself, in one place: the answers of `/health`, `/health/nats`,
//! `/health/cache` and `/api/v2/nodes`, and the gauges of `/metrics`. The HTTP layer only
//! serializes them. None of the probes can hang: every NATS call has a deadline.

use std::{
    path::PathBuf,
    sync::Arc,
    time::{Duration, Instant},
};

mod responses;

pub(crate) use responses::*;

use crate::{
    cache::PresenceCache,
    coherence::CLOCK_TOLERANCE,
    config::{Config, NodeType},
    lifecycle::{Events, ExpiryQueue},
    link::LinkState,
    live::Hub,
    nats::{Placement, ServerStatus, watch::StreamWatch},
    store::PresenceStore,
    telemetry::{
        Metrics,
        metrics::{JetStreamLabels, JetStreamLeaderLabels, LinkLabels},
    },
    topology::{NodeStatus, Registry},
    webhooks::Statuses,
};

const PROBE_TIMEOUT: Duration = Duration::from_secs(1);

/// The parts of a node that health looks at.
pub(crate) struct Health {
    node_id: String,
    node_type: NodeType,
    started: Instant,
    link: Arc<LinkState>,
    cache: PresenceCache,
    max_cost: u64,
    store: PresenceStore,
    client: async_nats::Client,
    jetstream: async_nats::jetstream::Context,
    events: Events,
    /// What is wrong with the shared streams.
    streams: Arc<StreamWatch>,
    expiry: Arc<ExpiryQueue>,
    hub: Arc<Hub>,
    registry: Arc<Registry>,
    metrics: Arc<Metrics>,
    /// The embedded server's state; `None` on an external NATS.
    embedded: Option<Arc<ServerStatus>>,
    /// The configured certificates, by the link they secure (read at each scrape, so that a
    /// rotated file shows its new expiry).
    certificates: Vec<(&'static str, PathBuf)>,
    /// The webhook endpoints this node delivers to (a center's).
    webhooks: Arc<Statuses>,
}

/// What health asks of NATS: the client, its JetStream context, the bucket, the audit log, and
/// the embedded server (`None` on an external NATS).
pub(crate) type Probed = (
    async_nats::Client,
    async_nats::jetstream::Context,
    (PresenceStore, Events, Arc<StreamWatch>),
    Option<Arc<ServerStatus>>,
);

/// What the node keeps, whose state health reports.
pub(crate) type Kept =
    (PresenceCache, Arc<LinkState>, Arc<ExpiryQueue>, Arc<Hub>, Arc<Registry>, Arc<Statuses>);

impl Health {
    pub(crate) fn new(config: &Config, probed: Probed, kept: Kept, metrics: Arc<Metrics>) -> Self {
        let (client, jetstream, (store, events, streams), embedded) = probed;
        let (cache, link, expiry, hub, registry, webhooks) = kept;
        Self {
            node_id: config.node_id(),
            node_type: config.service.node_type,
            started: Instant::now(),
            link,
            cache,
            max_cost: config.cache.max_cost,
            store,
            client,
            jetstream,
            events,
            streams,
            expiry,
            hub,
            registry,
            metrics,
            embedded,
            certificates: certificates(config),
            webhooks,
        }
    }
}

/// The certificate files this node presents, by the link they secure (for their expiry metric).
fn certificates(config: &Config) -> Vec<(&'static str, PathBuf)> {
    let https = config.service.tls.as_ref().and_then(|t| t.cert_file.clone());
    let leafnode = config.nats.leaf_tls.as_ref().map(|t| t.cert_file.clone());
    let nats = config.nats.tls.as_ref().and_then(|t| t.cert_file.clone());
    [("https", https), ("leafnode", leafnode), ("nats", nats)]
        .into_iter()
        .filter_map(|(link, path)| path.map(|p| (link, p)))
        .collect()
}

impl Health {
    /// Can this node serve, and how well?
    pub(crate) fn report(&self) -> HealthResponse {
        let link = self.link.snapshot();
        let clock_ok = link.clock_offset.is_none_or(|o| o.abs().to_std().is_ok_and(|o| o <= CLOCK_TOLERANCE));
        let nodes = self.registry.nodes(0);
        let embedded_nats = self.embedded.as_ref().map(|server| EmbeddedNatsHealth {
            running: server.running(),
            restarts: server.restarts(),
            keeps_dying: server.flapping(),
        });
        let server_ok = embedded_nats.as_ref().is_none_or(|s| s.running && !s.keeps_dying);
        let shared_streams = self.streams.problems();
        let ok = link.reachable && !link.stale && clock_ok && server_ok && shared_streams.is_empty();
        HealthResponse {
            status: if ok { "ok" } else { "degraded" }.into(),
            node_id: self.node_id.clone(),
            node_type: self.node_type.as_str().into(),
            version: env!("CARGO_PKG_VERSION").into(),
            uptime_seconds: self.started.elapsed().as_secs(),
            nats_connected: link.reachable,
            clock_offset_ms: link.clock_offset.map(|o| o.num_milliseconds()),
            nodes: NodesSummary { known: nodes.len(), up: nodes.iter().filter(|n| n.up).count() },
            streams: self.hub.open(),
            embedded_nats,
            shared_streams,
            webhooks: self.webhooks.report(),
        }
    }

    /// The NATS link, JetStream, the bucket and the watcher, probed now.
    pub(crate) async fn nats(&self) -> NatsHealth {
        let connection = crate::nats::probe(&self.client, &self.jetstream, PROBE_TIMEOUT).await;
        let (bucket, streams) = match connection.connected {
            true => self.shared_streams().await,
            false => (false, SharedStreams::default()),
        };
        let link = self.link.snapshot();
        NatsHealth {
            connected: connection.connected,
            server_version: connection.server_version,
            rtt_ms: connection.rtt.map(|rtt| rtt.as_secs_f64() * 1000.0),
            jetstream: connection.jetstream,
            bucket,
            streams,
            watcher: WatcherHealth { connected: !link.stale, lag: link.lag, rebuilds: link.rebuilds },
            breaker_open: self.store.caller().breaker().is_open(),
            read_breaker_open: self.store.caller().read_breaker().is_open(),
        }
    }

    /// Whether the bucket answers, and where the bucket and the audit log live (both asked at
    /// once, each within the probe's deadline).
    async fn shared_streams(&self) -> (bool, SharedStreams) {
        let (head, audit_log) = tokio::join!(
            tokio::time::timeout(PROBE_TIMEOUT, self.store.head()),
            tokio::time::timeout(PROBE_TIMEOUT, self.events.placement()),
        );
        let head = head.ok().and_then(Result::ok);
        let answers = head.is_some();
        let streams = SharedStreams {
            bucket: head.and_then(|h| h.placement),
            audit_log: audit_log.ok().and_then(Result::ok).flatten(),
        };
        (answers, streams)
    }

    /// Cache statistics (the `CacheMetrics` of the design), current as of now.
    pub(crate) async fn cache(&self) -> CacheHealth {
        // The housekeeping lets "nothing here" entries whose time is up go: run it so the numbers are current.
        self.cache.cleanup().await;
        let metrics = self.cache.metrics();
        CacheHealth {
            hit_ratio: metrics.hit_ratio(),
            metrics,
            entries: self.cache.entry_count(),
            weighted_size: self.cache.weighted_size(),
            max_cost: self.max_cost,
            stale: self.link.stale(),
            restoring: self.link.is_restoring(),
            restored: self.cache.restored(),
        }
    }

    /// Every node heard from, with its lag behind the newest revision this node knows of.
    pub(crate) fn nodes(&self) -> Vec<NodeStatus> {
        let link = self.link.snapshot();
        self.registry.nodes(link.applied_revision + link.lag)
    }

    /// The Prometheus text exposition, with the gauges brought up to date.
    pub(crate) async fn render_metrics(&self) -> String {
        let m = &self.metrics;
        self.cache.cleanup().await;
        m.cache_hit_ratio.set(self.cache.metrics().hit_ratio());
        m.cache_entries.set(self.cache.entry_count() as i64);
        m.cache_size.set(self.cache.weighted_size() as i64);
        let link = self.link.snapshot();
        m.nats_connected.set(link.reachable as i64);
        m.cache_stale.set(link.stale as i64);
        m.watcher_lag.set(link.lag as i64);
        m.expiry_scheduled.set(self.expiry.len() as i64);
        m.expiry_overdue.set(self.expiry.overdue(chrono::Utc::now(), Duration::from_secs(1)) as i64);
        let nodes = self.registry.nodes(0);
        m.nodes_known.set(nodes.len() as i64);
        m.nodes_up.set(nodes.iter().filter(|n| n.up).count() as i64);
        m.cache_max.set(self.max_cost as i64);
        if let Some(server) = &self.embedded {
            m.embedded_nats_running.set(server.running() as i64);
            m.embedded_nats_restarts.set(server.restarts() as i64);
        }
        for (link, path) in &self.certificates {
            if let Some(not_after) = crate::tls::not_after(path) {
                m.certificate_expiry.get_or_create(&LinkLabels { link }).set(not_after);
            }
        }
        let (_, streams) = self.shared_streams().await;
        // A leader that moved leaves no series behind; a stream that does not answer has no copy
        // this node can count on.
        m.jetstream_leader.clear();
        for (stream, placement) in [("bucket", streams.bucket), ("audit_log", streams.audit_log)] {
            let current = placement.as_ref().map_or(0, Placement::current);
            m.jetstream_replicas_current.get_or_create(&JetStreamLabels { stream }).set(current as i64);
            if let Some(server) = placement.and_then(|p| p.leader) {
                m.jetstream_leader.get_or_create(&JetStreamLeaderLabels { stream, server }).set(1);
            }
        }
        if let Some(offset) = link.clock_offset {
            m.clock_offset.set(offset.num_milliseconds() as f64 / 1000.0);
        }
        m.render()
    }
}
