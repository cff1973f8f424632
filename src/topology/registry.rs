//! The registry of nodes, built from their heartbeats. It believes only well-formed heartbeats
//! sent on the sender's own subject, forgets a node silent for [`FORGET_AFTER`], and holds at most
//! [`MAX_NODES`] (a flood of made-up nodes cannot grow it, or `/api/v2/nodes`, without bound).

use std::{
    collections::BTreeMap,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::Heartbeat;
use crate::model::is_valid_token;

/// A node whose last heartbeat is older than this is considered down.
pub(crate) const DOWN_AFTER: Duration = Duration::from_secs(7);
/// A node silent this long is forgotten.
pub(crate) const FORGET_AFTER: Duration = Duration::from_secs(600);
/// The most nodes the registry holds.
pub(crate) const MAX_NODES: usize = 1000;
const MAX_LABEL: usize = 64;

/// One node as the registry knows it, as `GET /api/v2/nodes` shows it: what it said of itself
/// but the KV revision it applied (a counter that moves with every write, invisible users'
/// sessions included, so it stays between the nodes, as does whether it encrypts its store).
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub(crate) struct NodeStatus {
    pub node_id: String,
    /// `center` or `leaf`.
    pub node_type: String,
    pub region: Option<String>,
    pub version: String,
    pub cache_entries: u64,
    pub uptime_seconds: u64,
    /// Whether the node reaches NATS and its cache is fresh.
    pub fresh: bool,
    /// When the node sent its last heartbeat, by its clock.
    #[schema(value_type = String, format = DateTime)]
    #[serde(serialize_with = "crate::model::rfc3339_millis")]
    pub sent_at: DateTime<Utc>,
    /// When this node last heard from it.
    #[schema(value_type = String, format = DateTime)]
    #[serde(serialize_with = "crate::model::rfc3339_millis")]
    pub last_heartbeat: DateTime<Utc>,
    /// Revisions behind the newest this node knows of.
    pub lag: u64,
    /// A heartbeat arrived within the last 7 seconds.
    pub up: bool,
}

struct Seen {
    heartbeat: Heartbeat,
    at: Instant,
    at_utc: DateTime<Utc>,
}

/// The nodes this node has heard from.
#[derive(Default)]
pub(crate) struct Registry {
    nodes: Mutex<BTreeMap<String, Seen>>,
}

impl Registry {
    pub(crate) fn new() -> Arc<Self> {
        Arc::default()
    }

    /// Records a heartbeat that arrived on `presence.sync.{sender}`, if it is believable.
    pub(crate) fn record(&self, sender: &str, heartbeat: Heartbeat) -> Result<(), &'static str> {
        self.record_at(sender, heartbeat, Instant::now())
    }

    fn record_at(&self, sender: &str, heartbeat: Heartbeat, now: Instant) -> Result<(), &'static str> {
        validate(sender, &heartbeat)?;
        let mut nodes = self.nodes.lock().expect("registry lock");
        nodes.retain(|_, seen| now.saturating_duration_since(seen.at) < FORGET_AFTER);
        if nodes.len() >= MAX_NODES && !nodes.contains_key(sender) {
            // Make room only by letting go of the longest-silent node that is down anyway.
            let down = nodes
                .iter()
                .filter(|(_, seen)| now.saturating_duration_since(seen.at) >= DOWN_AFTER)
                .min_by_key(|(_, seen)| seen.at)
                .map(|(id, _)| id.clone());
            nodes.remove(&down.ok_or("the registry is full")?);
        }
        nodes.insert(sender.to_string(), Seen { heartbeat, at: now, at_utc: Utc::now() });
        Ok(())
    }

    /// When `node` was last heard from, if it was since this node started (and not forgotten).
    pub(crate) fn last_heard(&self, node: &str) -> Option<Instant> {
        self.nodes.lock().expect("registry lock").get(node).map(|seen| seen.at)
    }

    /// Every node heard from and not yet forgotten, with its lag behind `newest_revision`.
    pub(crate) fn nodes(&self, newest_revision: u64) -> Vec<NodeStatus> {
        let nodes = self.nodes.lock().expect("registry lock");
        nodes
            .values()
            .filter(|seen| seen.at.elapsed() < FORGET_AFTER)
            .map(|seen| {
                let h = &seen.heartbeat;
                NodeStatus {
                    node_id: h.node_id.clone(),
                    node_type: h.node_type.clone(),
                    region: h.region.clone(),
                    version: h.version.clone(),
                    cache_entries: h.cache_entries,
                    uptime_seconds: h.uptime_seconds,
                    fresh: h.fresh,
                    sent_at: h.sent_at,
                    lag: newest_revision.saturating_sub(h.applied_revision),
                    up: seen.at.elapsed() < DOWN_AFTER,
                    last_heartbeat: seen.at_utc,
                }
            })
            .collect()
    }
}

/// A heartbeat is believed when it names the node whose subject it came on, says what a node
/// can be, and keeps its labels short.
fn validate(sender: &str, h: &Heartbeat) -> Result<(), &'static str> {
    if !is_valid_token(sender) || h.node_id != sender {
        return Err("node_id is not the sender's subject");
    }
    if !matches!(h.node_type.as_str(), "center" | "leaf") {
        return Err("node_type is neither center nor leaf");
    }
    let long = |text: &str| text.len() > MAX_LABEL || text.chars().any(char::is_control);
    if h.region.as_deref().is_some_and(long) || long(&h.version) {
        return Err("region or version too long or not printable");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn beat(id: &str) -> Heartbeat {
        Heartbeat {
            node_id: id.into(),
            node_type: "leaf".into(),
            region: Some("eu".into()),
            version: "0.1.0".into(),
            applied_revision: 1,
            cache_entries: 0,
            uptime_seconds: 0,
            fresh: true,
            encrypts_store: Some(true),
            sent_at: Utc::now(),
        }
    }

    #[test]
    fn what_stays_between_the_nodes_is_not_served() {
        let r = Registry::default();
        r.record("a", beat("a")).unwrap();
        let served = serde_json::to_value(r.nodes(3)).unwrap();
        assert_eq!(
            (&served[0]["node_id"], &served[0]["lag"]),
            (&serde_json::json!("a"), &serde_json::json!(2))
        );
        for private in ["encrypts_store", "applied_revision"] {
            assert!(served[0].get(private).is_none(), "{private}: {served}");
        }
    }

    #[test]
    fn only_believable_heartbeats_are_recorded() {
        let r = Registry::default();
        assert!(r.record("a", beat("a")).is_ok());
        assert!(r.record("a", beat("b")).is_err(), "another node's name");
        assert!(r.record("a.b", beat("a.b")).is_err(), "not a token");
        let mut odd = beat("c");
        odd.node_type = "mainframe".into();
        assert!(r.record("c", odd).is_err());
        let mut long = beat("d");
        long.region = Some("x".repeat(65));
        assert!(r.record("d", long).is_err());
        assert_eq!(r.nodes(0).len(), 1);
    }

    #[test]
    fn silent_nodes_are_forgotten_and_the_registry_is_bounded() {
        let r = Registry::default();
        let t0 = Instant::now();
        for i in 0..MAX_NODES {
            r.record_at(&format!("n{i}"), beat(&format!("n{i}")), t0).unwrap();
        }
        assert!(r.record_at("late", beat("late"), t0).is_err(), "full of nodes that are up");
        let later = t0 + DOWN_AFTER;
        r.record_at("n0", beat("n0"), later).unwrap();
        r.record_at("late", beat("late"), later).unwrap();
        let ids: Vec<String> = r.nodes.lock().unwrap().keys().cloned().collect();
        assert_eq!(ids.len(), MAX_NODES);
        assert!(ids.contains(&"late".to_string()) && ids.contains(&"n0".to_string()));
        r.record_at("n0", beat("n0"), later + FORGET_AFTER).unwrap();
        assert_eq!(r.nodes.lock().unwrap().len(), 1, "the silent ones are forgotten");
    }
}
