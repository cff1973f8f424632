//! Where a replicated stream lives, as JetStream reports it: the server that leads it (and takes
//! its writes) and the replicas that follow, each current or lagging. For `/health/nats`, the
//! metrics and the operator of a clustered center.

use async_nats::jetstream::stream::ClusterInfo;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub(crate) struct Placement {
    /// The server that leads the stream; none while a new leader is being elected.
    pub leader: Option<String>,
    /// The other servers that hold a copy (none for a stream of one replica).
    pub replicas: Vec<Replica>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub(crate) struct Replica {
    /// The server's name.
    pub name: String,
    /// Caught up with the leader.
    pub current: bool,
    /// Taken for offline by the others.
    pub offline: bool,
    /// Operations it is behind the leader.
    pub lag: u64,
    /// Milliseconds since the leader last heard from it.
    pub active_ms: u64,
}

impl Placement {
    pub(crate) fn of(cluster: Option<&ClusterInfo>) -> Option<Self> {
        let cluster = cluster?;
        let replicas = cluster
            .replicas
            .iter()
            .map(|peer| Replica {
                name: peer.name.clone(),
                current: peer.current,
                offline: peer.offline,
                lag: peer.lag.unwrap_or(0),
                active_ms: u64::try_from(peer.active.as_millis()).unwrap_or(u64::MAX),
            })
            .collect();
        Some(Self { leader: cluster.leader.clone(), replicas })
    }

    /// Replicas caught up with the leader, the leader included (0 without a leader).
    pub(crate) fn current(&self) -> usize {
        match self.leader {
            Some(_) => 1 + self.replicas.iter().filter(|r| r.current && !r.offline).count(),
            None => 0,
        }
    }
}
