//! The audit log's repair: a node killed between a change's KV put and its event leaves a record
//! that watchers served and announced with no event in the audit log. A center node looks at the
//! bucket's recent records and stores the events that are missing:
//!
//! - when it starts, at everything written since shortly before the newest event (or record)
//!   the streams hold: a crashed center's last writes;
//! - when another center node stops sending heartbeats (a center of a cluster that died and may
//!   never come back), at what was written around its last heartbeat, once every other writer
//!   of that time has had its time to store its own events ([`SETTLED`]).
//!
//! A record needs an event when the user's newest event is of an older revision and shows them
//! otherwise than the record does (a write others see as no change has none). The repaired event
//! carries the message id the node that made the change would have used: JetStream stores one of
//! the two however they race, within its duplicate window. See docs/lifecycle.md, "Repair".

use std::{collections::HashSet, sync::Arc, time::Duration};

use chrono::{DateTime, Utc};
use futures::{StreamExt, TryStreamExt};
use tokio_util::sync::CancellationToken;

use super::events::{EventError, EventKind, Events, PresenceEvent, RETRY_FOR, SYSTEM_ACTOR};
use crate::{
    model::{CompactPresence, Status, StoredPresence, UserId},
    store::{PresenceStore, StoreError},
    telemetry::{Metrics, chain},
    topology::{DOWN_AFTER, NodeStatus, Registry},
};

/// How long after a change its event may still come from the node that made it: the background
/// retries of an event's store, and a request on top.
pub(crate) const SETTLED: Duration = Duration::from_secs(RETRY_FOR.as_secs() + 15);
/// How often a center node looks for center nodes that stopped sending heartbeats.
const CHECK_EVERY: Duration = Duration::from_secs(5);
/// How soon a look that failed is tried again.
const RETRY: Duration = Duration::from_secs(2);
/// Users checked at once.
const CONCURRENCY: usize = 16;

#[derive(Debug, thiserror::Error)]
pub(crate) enum RepairError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Events(#[from] EventError),
}

/// What the repair needs.
pub(crate) struct Repair {
    pub store: PresenceStore,
    pub events: Events,
    pub metrics: Arc<Metrics>,
    /// The nodes this one hears, and its own id.
    pub registry: Arc<Registry>,
    pub node_id: String,
}

impl Repair {
    /// Runs until `stop` is cancelled.
    pub(crate) async fn run(self, stop: CancellationToken) {
        // First what this node's own crash may have left.
        loop {
            let look = async {
                let from = self.start_point().await?;
                self.sweep(from, Utc::now()).await
            };
            match look.await {
                Ok(repaired) => {
                    self.report(repaired, "when this node started");
                    break;
                }
                Err(e) => {
                    tracing::debug!(error = %chain(&e), "the audit log's repair could not look; trying again")
                }
            }
            tokio::select! {
                () = stop.cancelled() => return,
                () = tokio::time::sleep(RETRY) => {}
            }
        }
        // Then what other center nodes leave when they stop sending heartbeats.
        let mut peers = Peers::default();
        loop {
            tokio::select! {
                () = stop.cancelled() => return,
                () = tokio::time::sleep(CHECK_EVERY) => {}
            }
            let nodes = self.registry.nodes(0);
            let centers = nodes.iter().filter(|n| n.node_type == "center" && n.node_id != self.node_id);
            for (node, last_heard) in peers.went_silent(centers, Utc::now()) {
                let window = (last_heard - SETTLED, last_heard + DOWN_AFTER);
                match self.sweep(window.0, window.1).await {
                    Ok(repaired) => self.report(repaired, &format!("after {node} went silent")),
                    Err(e) => {
                        tracing::warn!(node, error = %chain(&e), "the audit log's repair could not look; trying again");
                        peers.retry(&node);
                    }
                }
            }
        }
    }

    fn report(&self, repaired: usize, when: &str) {
        if repaired > 0 {
            tracing::warn!(repaired, when, "events a crash left out of the audit log were stored");
        }
    }

    /// Where the first look starts: shortly before the newest event or record the streams hold,
    /// whichever is older.
    async fn start_point(&self) -> Result<DateTime<Utc>, RepairError> {
        let event = self.events.last_stored_at().await?;
        let record = self.store.head().await?.last_written_at;
        let newest = [event, record].into_iter().flatten().min().unwrap_or_else(Utc::now);
        Ok(newest.min(Utc::now()) - SETTLED)
    }

    /// Stores the missing events of the records written from `from` to `to`: how many.
    async fn sweep(&self, from: DateTime<Utc>, to: DateTime<Utc>) -> Result<usize, RepairError> {
        let written = self.store.written_since(from).await?;
        let records = written.into_iter().filter(|c| c.stored_at <= to).filter_map(|change| {
            let user = UserId::parse(change.user()?).ok()?;
            Some(Written {
                user,
                revision: change.revision,
                at: change.stored_at,
                record: change.presence()?,
            })
        });
        let repaired = futures::stream::iter(records)
            .map(|written| self.check(written))
            .buffer_unordered(CONCURRENCY)
            .try_fold(0, |sum, repaired| async move { Ok(sum + usize::from(repaired)) })
            .await?;
        Ok(repaired)
    }

    /// Stores the event of `written` if the audit log misses it: true if it did.
    async fn check(&self, written: Written) -> Result<bool, RepairError> {
        let Written { user, revision, at, record } = written;
        let latest = self.events.latest(&user).await?;
        if latest.as_ref().is_some_and(|e| e.revision >= revision) {
            return Ok(false);
        }
        let presence = CompactPresence::from(&record);
        let view = presence.view(&user, at);
        if latest.as_ref().is_some_and(|e| e.presence == view) {
            // To others nothing changed since the newest event: a write with no event of its own.
            return Ok(false);
        }
        let (kind, actor, name) = match expired(&record, at) {
            true => (EventKind::Expire, SYSTEM_ACTOR, "expire"),
            false => (EventKind::Update, user.as_str(), "update"),
        };
        let event = PresenceEvent {
            kind,
            user_id: user.to_string(),
            presence: view.into_owned(),
            previous_status: latest.map(|e| e.presence.status),
            revision,
            node_id: record.node_id.clone(),
            actor: actor.to_string(),
            timestamp: at,
        };
        let id = format!("{name}-{user}-{revision}");
        if self.events.publish_unless_erased(&event, id, (&user, &self.store)).await.is_some() {
            self.metrics.events_repaired.inc();
            tracing::info!(user = %user, revision, "an event missing from the audit log was stored");
        }
        Ok(true)
    }
}

/// The other center nodes as the repair follows them: those whose present silence was looked
/// after (a node heard again is looked after anew when it next goes silent).
#[derive(Default)]
struct Peers {
    looked_after: HashSet<String>,
}

impl Peers {
    /// The center nodes whose silence began long enough ago to look at what they left (each
    /// once per silence), with when they were last heard.
    fn went_silent<'a>(
        &mut self,
        centers: impl Iterator<Item = &'a NodeStatus>,
        now: DateTime<Utc>,
    ) -> Vec<(String, DateTime<Utc>)> {
        let mut due = Vec::new();
        for node in centers {
            if node.up {
                self.looked_after.remove(&node.node_id);
            } else if now >= node.last_heartbeat + DOWN_AFTER + SETTLED
                && self.looked_after.insert(node.node_id.clone())
            {
                due.push((node.node_id.clone(), node.last_heartbeat));
            }
        }
        due
    }

    /// Looks again at `node` next time.
    fn retry(&mut self, node: &str) {
        self.looked_after.remove(node);
    }
}

/// A record as the bucket holds it, and when it was written.
struct Written {
    user: UserId,
    revision: u64,
    at: DateTime<Utc>,
    record: StoredPresence,
}

/// Whether `record`, written at `at`, is an expiry's transition (a client's `offline` write
/// expires after its ttl, never at or before the moment it was written).
fn expired(record: &StoredPresence, at: DateTime<Utc>) -> bool {
    record.status == Status::Offline && record.expires_at <= at
}
