//! The audit log's repair: a node killed between a change's KV put and its event leaves a record
//! that watchers served and announced with no event in the audit log. Every center node looks
//! at the bucket's recent records and stores the events that are missing.
//!
//! At start-up it looks at everything written since shortly before the newest event (or record)
//! the streams hold: a crashed center's last writes. Then, every [`EVERY`], at what was written
//! since its last look, once the node that made each change has had its time to store the event
//! itself ([`SETTLED`]): a center node of a cluster that died and never came back. A record needs
//! an event when the user's newest event is of an older revision and shows them otherwise than
//! the record does (a write others see as no change has none). The repaired event carries the
//! message id the node that made the change would have used: JetStream stores one of the two
//! however they race, within its duplicate window. See docs/lifecycle.md, "Audit log".

use std::{sync::Arc, time::Duration};

use chrono::{DateTime, Utc};
use futures::{StreamExt, TryStreamExt};
use tokio_util::sync::CancellationToken;

use super::events::{EventError, EventKind, Events, PresenceEvent, RETRY_FOR, SYSTEM_ACTOR};
use crate::{
    model::{CompactPresence, Status, StoredPresence, UserId},
    store::{PresenceStore, StoreError},
    telemetry::{Metrics, chain},
};

/// How long after a change its event may still come from the node that made it: the background
/// retries of an event's store, and a request on top.
pub(crate) const SETTLED: Duration = Duration::from_secs(RETRY_FOR.as_secs() + 15);
/// How often a center node looks again.
const EVERY: Duration = Duration::from_secs(60);
/// How soon a look that failed is tried again.
const RETRY: Duration = Duration::from_secs(2);
/// How far each look reaches back over the last one (clocks, messages on their way).
const OVERLAP: Duration = Duration::from_secs(5);
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
}

impl Repair {
    /// Runs until `stop` is cancelled.
    pub(crate) async fn run(self, stop: CancellationToken) {
        let mut from = None;
        loop {
            let look = async {
                let start = match from {
                    Some(start) => start,
                    None => self.start_point().await?,
                };
                // The first look goes up to now: at start-up, the node that made the last
                // changes may be this one, killed.
                let to = if from.is_none() { Utc::now() } else { Utc::now() - SETTLED };
                if to <= start {
                    return Ok(start);
                }
                let repaired = self.sweep(start, to).await?;
                if repaired > 0 {
                    tracing::warn!(repaired, "events a crash left out of the audit log were stored");
                }
                Ok::<_, RepairError>(to - OVERLAP)
            };
            let wait = match look.await {
                Ok(next) => {
                    from = Some(next);
                    EVERY
                }
                Err(e) => {
                    tracing::debug!(error = %chain(&e), "the audit log's repair could not look; trying again");
                    RETRY
                }
            };
            tokio::select! {
                () = stop.cancelled() => return,
                () = tokio::time::sleep(wait) => {}
            }
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
