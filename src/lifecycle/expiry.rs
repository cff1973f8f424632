//! The expiry job: turns each presence whose `ttl` ran out into `offline` in the KV, within about
//! [`TICK`] of its expiry time, and announces it once on `presence.expire.{user_id}`.
//!
//! A due revision is checked in the store at that exact revision: gone (superseded by a refresh,
//! a new status, an erasure) means nothing to do. Otherwise the node writes the `offline` record
//! with compare-and-set on that revision; the one node whose write lands publishes the event, so
//! there is exactly one however many nodes run the job. A node that starts rebuilds the schedule
//! from the watcher's history, so expiries that passed while it was down run at once.
//!
//! A storm (many presences expiring in the same moment) is worked off in batches of [`BATCH`]
//! with at most [`CONCURRENCY`] KV calls in flight, so that reads keep their share of the CPU.
//! See docs/architecture.md, "Expiry".

use std::{
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering::Relaxed},
    },
    time::Duration,
};

use chrono::Utc;
use futures::StreamExt;
use tokio_util::sync::CancellationToken;

use super::{
    events::{EventKind, Events, PresenceEvent, SYSTEM_ACTOR},
    schedule::{ExpiryQueue, TICK},
};
use crate::{
    link::LinkState,
    model::CompactPresence,
    store::{PresenceStore, StoreError},
    telemetry::Metrics,
};

/// Due expiries handled per batch.
pub(crate) const BATCH: usize = 1000;
/// KV calls in flight while working off a batch.
pub(crate) const CONCURRENCY: usize = 64;
/// How long a transition that failed waits before it is tried again.
const RETRY_AFTER: chrono::Duration = chrono::Duration::seconds(1);

/// What the expiry job needs.
pub(crate) struct Expirer {
    pub queue: Arc<ExpiryQueue>,
    pub store: PresenceStore,
    pub events: Events,
    pub metrics: Arc<Metrics>,
    pub link: Arc<LinkState>,
    pub node_id: String,
}

impl Expirer {
    /// Runs until `stop` is cancelled.
    pub(crate) async fn run(self, stop: CancellationToken) {
        loop {
            // While NATS is away nothing can be expired; what comes due waits in the schedule.
            if !self.link.reachable() {
                tokio::select! {
                    () = stop.cancelled() => return,
                    () = tokio::time::sleep(TICK) => continue,
                }
            }
            let batch = self.queue.take_due(Utc::now(), BATCH);
            if !batch.is_empty() {
                self.work_off(batch).await;
                tokio::task::yield_now().await;
                continue;
            }
            let wait = self.queue.next_due_in(Utc::now()).unwrap_or(Duration::from_secs(60));
            tokio::select! {
                () = stop.cancelled() => return,
                () = self.queue.earlier_scheduled() => {}
                () = tokio::time::sleep(wait) => {}
            }
        }
    }

    /// Expires a batch of due revisions; those that fail are tried again a second later.
    async fn work_off(&self, batch: Vec<u64>) {
        let failed = &AtomicUsize::new(0);
        futures::stream::iter(batch)
            .for_each_concurrent(CONCURRENCY, |revision| async move {
                if let Err(e) = self.expire(revision).await {
                    if failed.fetch_add(1, Relaxed) == 0 {
                        tracing::warn!(error = %crate::telemetry::chain(&e), "expiry transitions failed; retrying them in a second");
                    }
                    self.queue.schedule_at(revision, Utc::now() + RETRY_AFTER);
                }
            })
            .await;
    }

    /// Expires `revision` if it is still the latest revision of its key and still live.
    async fn expire(&self, revision: u64) -> Result<(), StoreError> {
        let Some(held) = self.store.live_at(revision).await? else { return Ok(()) };
        let now = Utc::now();
        if held.presence.expires_at > now {
            // Scheduled early (clock change): look again at its time.
            self.queue.schedule_at(revision, held.presence.expires_at);
            return Ok(());
        }
        let record = held.presence.expired();
        // Another node expired it, or a refresh landed first: either way, not ours.
        let Some(new_revision) = self.store.compare_and_set(&held.user, &record, revision).await? else {
            return Ok(());
        };
        self.metrics.expired.inc();
        let (before, after) = (CompactPresence::from(&held.presence), CompactPresence::from(&record));
        let until = held.presence.expires_at - chrono::Duration::milliseconds(1);
        let shown = before.view(&held.user, until);
        if shown == after.view(&held.user, now) {
            // To others nothing changed (an `invisible` user without a session): no event.
            return Ok(());
        }
        let event = PresenceEvent {
            kind: EventKind::Expire,
            presence: after.view(&held.user, now).into_owned(),
            user_id: held.user.clone(),
            previous_status: Some(shown.status),
            revision: new_revision,
            node_id: self.node_id.clone(),
            actor: SYSTEM_ACTOR.into(),
            timestamp: now,
        };
        // Named by the revision it made, as the audit log's repair names it.
        let id = format!("expire-{}-{new_revision}", held.user);
        self.events.publish_unless_erased(&event, id, (&held.user, &self.store)).await;
        Ok(())
    }
}
