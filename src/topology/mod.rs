//! Hub and spoke: node sync heartbeats on `presence.sync.{node_id}` and the registry of nodes
//! built from them (served at `GET /api/v2/nodes`).
//!
//! Every node publishes a [`Heartbeat`] every [`HEARTBEAT_EVERY`]: what it is, where, which KV
//! revision its cache has applied, how many entries it caches. Core NATS subjects cross
//! leafnodes both ways, so every node hears every other, and any node can list the deployment.
//! See docs/architecture.md, "Hub and spoke".

use std::{
    sync::Arc,
    time::{Duration, Instant},
};

use chrono::{DateTime, Utc};
use futures::StreamExt;
use serde::{Deserialize, Serialize};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use utoipa::ToSchema;

use crate::{
    cache::PresenceCache,
    config::{Config, NodeType},
    link::LinkState,
};

mod holdings;
mod registry;

pub(crate) use holdings::Holdings;
pub(crate) use registry::{DOWN_AFTER, NodeStatus, Registry};

pub(crate) const HEARTBEAT_EVERY: Duration = Duration::from_secs(2);
/// Heartbeats larger than this are not read.
const MAX_HEARTBEAT_BYTES: usize = 4096;

/// What a node says about itself on `presence.sync.{node_id}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub(crate) struct Heartbeat {
    pub node_id: String,
    /// `center` or `leaf`.
    pub node_type: String,
    pub region: Option<String>,
    pub version: String,
    /// The highest KV revision the node's cache has applied.
    pub applied_revision: u64,
    pub cache_entries: u64,
    pub uptime_seconds: u64,
    /// Whether the node reaches NATS and its cache is fresh.
    pub fresh: bool,
    /// Whether the node's embedded server encrypts its store at rest (`None`: an external
    /// server, which the node cannot speak for): a leaf warns when its center encrypts and it
    /// does not.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub encrypts_store: Option<bool>,
    #[schema(value_type = String, format = DateTime)]
    #[serde(serialize_with = "crate::model::rfc3339_millis")]
    pub sent_at: DateTime<Utc>,
}

/// What the heartbeat task reads about its own node.
pub(crate) struct Local {
    pub node_id: String,
    pub node_type: NodeType,
    pub region: Option<String>,
    pub cache: PresenceCache,
    pub link: Arc<LinkState>,
    pub started: Instant,
    /// See [`Heartbeat::encrypts_store`].
    pub encrypts_store: Option<bool>,
}

impl Local {
    /// This node, as of now.
    pub(crate) fn new(config: &Config, cache: PresenceCache, link: Arc<LinkState>) -> Self {
        Self {
            node_id: config.node_id(),
            node_type: config.service.node_type,
            region: config.service.region.clone(),
            cache,
            link,
            started: Instant::now(),
            encrypts_store: config.nats.embedded.then_some(config.nats.jetstream.encryption.is_some()),
        }
    }

    fn heartbeat(&self) -> Heartbeat {
        Heartbeat {
            node_id: self.node_id.clone(),
            node_type: self.node_type.as_str().into(),
            region: self.region.clone(),
            version: env!("CARGO_PKG_VERSION").into(),
            applied_revision: self.link.applied_revision(),
            cache_entries: self.cache.entry_count(),
            uptime_seconds: self.started.elapsed().as_secs(),
            fresh: !self.link.stale(),
            encrypts_store: self.encrypts_store,
            sent_at: Utc::now(),
        }
    }
}

/// Publishes this node's heartbeats and records everyone's, in `tasks`, until `stop`.
pub(crate) fn spawn(
    tasks: &mut JoinSet<()>,
    client: async_nats::Client,
    local: Local,
    registry: Arc<Registry>,
    stop: &CancellationToken,
) {
    let plaintext_leaf = local.node_type == NodeType::Leaf && local.encrypts_store == Some(false);
    tasks.spawn(publish(client.clone(), local, stop.clone()));
    tasks.spawn(listen(client, registry, plaintext_leaf, stop.clone()));
}

/// Sends this node's heartbeat every [`HEARTBEAT_EVERY`].
async fn publish(client: async_nats::Client, local: Local, stop: CancellationToken) {
    let subject = format!("presence.sync.{}", local.node_id);
    let mut every = tokio::time::interval(HEARTBEAT_EVERY);
    loop {
        tokio::select! {
            () = stop.cancelled() => return,
            _ = every.tick() => {}
        }
        // The housekeeping lets "nothing here" entries whose time is up go: run it so the count is current.
        local.cache.cleanup().await;
        let payload = serde_json::to_vec(&local.heartbeat()).expect("heartbeats serialize");
        if let Err(e) = client.publish(subject.clone(), payload.into()).await {
            tracing::debug!(error = %e, "heartbeat not sent");
        }
    }
}

/// Records every node's heartbeats (this one's included) in the registry. A leaf that keeps its
/// store in plaintext (`plaintext_leaf`) warns once when it hears a center that encrypts its own:
/// the leaf holds a copy of the whole bucket.
async fn listen(
    client: async_nats::Client,
    registry: Arc<Registry>,
    plaintext_leaf: bool,
    stop: CancellationToken,
) {
    let mut warn_plaintext = plaintext_leaf;
    loop {
        let mut heard = match client.subscribe("presence.sync.>").await {
            Ok(sub) => sub,
            Err(e) => {
                tracing::warn!(error = %e, "cannot subscribe to node heartbeats; retrying");
                tokio::time::sleep(Duration::from_secs(1)).await;
                continue;
            }
        };
        loop {
            let message = tokio::select! {
                () = stop.cancelled() => return,
                message = heard.next() => message,
            };
            let Some(message) = message else { break };
            let sender = message.subject.as_str().strip_prefix("presence.sync.").unwrap_or_default();
            let heartbeat = (message.payload.len() <= MAX_HEARTBEAT_BYTES)
                .then(|| serde_json::from_slice::<Heartbeat>(&message.payload).ok())
                .flatten();
            let encrypting_center =
                heartbeat.as_ref().is_some_and(|h| h.node_type == "center" && h.encrypts_store == Some(true));
            match heartbeat.map(|h| registry.record(sender, h)) {
                Some(Ok(())) if warn_plaintext && encrypting_center => {
                    warn_plaintext = false;
                    tracing::warn!(
                        center = sender,
                        "the center encrypts its store at rest and this leaf does not: this leaf's copy of \
                         the bucket is plaintext on disk; set nats.jetstream.encryption here too (docs/security.md)"
                    );
                }
                Some(Ok(())) => {}
                Some(Err(why)) => tracing::debug!(subject = %message.subject, why, "heartbeat refused"),
                None => tracing::debug!(subject = %message.subject, "not a heartbeat"),
            }
        }
    }
}
