//! The expiry job: turns each presence whose `ttl` ran out into `offline` in the KV, within about
//! [`TICK`] of its expiry time, and announces it once on `presence.expire.{user_id}`.
//!
//! The schedule holds only KV revisions, bucketed by expiry time (8 bytes a presence). With
//! history 1, a revision that was superseded (a refresh, a new status, an erasure) no longer
//! exists in the stream, so a due revision is checked by fetching that exact message: gone means
//! nothing to do. Otherwise the node writes the `offline` record with compare-and-set on that
//! revision; the one node whose write lands publishes the event. A node that starts rebuilds the
//! schedule from the watcher's history, so expiries that passed while it was down run at once.
//!
//! A storm (many presences expiring in the same moment) is worked off in batches of [`BATCH`]
//! with at most [`CONCURRENCY`] KV calls in flight, so that reads keep their share of the CPU.

use std::{
    collections::BTreeMap,
    sync::{
        Arc, Mutex,
        atomic::{AtomicUsize, Ordering::Relaxed},
    },
    time::Duration,
};

use async_nats::jetstream::{kv, stream};
use chrono::{DateTime, Utc};
use futures::StreamExt;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use super::events::{EventKind, Events, PresenceEvent, SYSTEM_ACTOR};
use crate::{
    cache::watcher::Coherence,
    model::{CompactPresence, Status, StoredPresence},
    telemetry::Metrics,
};

/// Granularity of the schedule.
pub const TICK: Duration = Duration::from_millis(100);
/// Due expiries handled per batch.
pub const BATCH: usize = 1000;
/// KV calls in flight while working off a batch.
pub const CONCURRENCY: usize = 64;

/// Revisions to check, bucketed by expiry time. Only writers and the expiry job touch it.
#[derive(Default)]
pub struct ExpiryQueue {
    buckets: Mutex<BTreeMap<i64, Vec<u64>>>,
    wake: Notify,
}

fn bucket_of(at: DateTime<Utc>) -> i64 {
    // Round up, so that a bucket is never due before every expiry in it.
    let tick = TICK.as_millis() as i64;
    (at.timestamp_millis() + tick - 1).div_euclid(tick)
}

impl ExpiryQueue {
    pub fn new() -> Arc<Self> {
        Arc::default()
    }

    /// Remembers that `revision` expires at `at` (only live statuses expire).
    pub fn schedule(&self, revision: u64, presence: &CompactPresence) {
        if presence.status == Status::Offline {
            return;
        }
        let bucket = bucket_of(presence.expires_at);
        let mut buckets = self.buckets.lock().expect("expiry queue lock");
        let earliest = buckets.first_key_value().is_none_or(|(first, _)| bucket < *first);
        buckets.entry(bucket).or_default().push(revision);
        drop(buckets);
        if earliest {
            self.wake.notify_one();
        }
    }

    /// Up to `max` revisions due at `now`.
    pub fn take_due(&self, now: DateTime<Utc>, max: usize) -> Vec<u64> {
        let now_bucket = now.timestamp_millis().div_euclid(TICK.as_millis() as i64);
        let mut buckets = self.buckets.lock().expect("expiry queue lock");
        let mut due = Vec::new();
        while due.len() < max {
            let Some(mut entry) = buckets.first_entry() else { break };
            if *entry.key() > now_bucket {
                break;
            }
            let revisions = entry.get_mut();
            let take = (max - due.len()).min(revisions.len());
            due.extend(revisions.drain(revisions.len() - take..));
            if revisions.is_empty() {
                entry.remove();
            }
        }
        due
    }

    /// How long until the next bucket is due, if any is scheduled.
    fn next_due_in(&self, now: DateTime<Utc>) -> Option<Duration> {
        let buckets = self.buckets.lock().expect("expiry queue lock");
        let (first, _) = buckets.first_key_value()?;
        let at = first * TICK.as_millis() as i64;
        Some(Duration::from_millis((at - now.timestamp_millis()).max(0) as u64))
    }

    /// Revisions waiting (superseded ones included until they come due).
    pub fn len(&self) -> usize {
        self.buckets.lock().expect("expiry queue lock").values().map(Vec::len).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// What the expiry job needs.
pub struct Expirer {
    pub queue: Arc<ExpiryQueue>,
    pub kv: kv::Store,
    pub events: Events,
    pub metrics: Arc<Metrics>,
    pub coherence: Arc<Coherence>,
    pub node_id: String,
}

impl Expirer {
    /// Runs until `stop` is cancelled.
    pub async fn run(self, stop: CancellationToken) {
        loop {
            // While NATS is away nothing can be expired; what comes due waits in the schedule.
            if !self.coherence.nats_connected() {
                tokio::select! {
                    () = stop.cancelled() => return,
                    () = tokio::time::sleep(TICK) => continue,
                }
            }
            let batch = self.queue.take_due(Utc::now(), BATCH);
            if !batch.is_empty() {
                let failed = &AtomicUsize::new(0);
                let this = &self;
                futures::stream::iter(batch)
                    .for_each_concurrent(CONCURRENCY, |revision| async move {
                        if let Err(e) = this.expire(revision).await {
                            if failed.fetch_add(1, Relaxed) == 0 {
                                tracing::warn!(error = %e, "expiry transitions failed; retrying them in a second");
                            }
                            this.retry_later(revision);
                        }
                    })
                    .await;
                tokio::task::yield_now().await;
                continue;
            }
            let wait = self.queue.next_due_in(Utc::now()).unwrap_or(Duration::from_secs(60));
            tokio::select! {
                () = stop.cancelled() => return,
                () = self.queue.wake.notified() => {}
                () = tokio::time::sleep(wait) => {}
            }
        }
    }

    /// Expires `revision` if it is still the latest revision of its key and still live. An error
    /// means NATS did not answer; the caller retries.
    async fn expire(&self, revision: u64) -> Result<(), String> {
        let message = match self.kv.stream.direct_get(revision).await {
            Ok(m) => m,
            // Superseded or erased: the refresh (or whatever came later) wins.
            Err(e) if e.kind() == stream::DirectGetErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(e.to_string()),
        };
        let Some(key) = message.subject.as_str().strip_prefix(&format!("$KV.{}.", self.kv.name)) else {
            return Ok(());
        };
        let Some(user) = key.strip_prefix("user.") else { return Ok(()) };
        let Ok(stored) = serde_json::from_slice::<StoredPresence>(&message.payload) else { return Ok(()) };
        if stored.status == Status::Offline {
            return Ok(());
        }
        let now = Utc::now();
        if stored.expires_at > now {
            // Scheduled early (clock change): look again at its time.
            self.queue.schedule(revision, &CompactPresence::from(&stored));
            return Ok(());
        }
        let record = stored.expired();
        let value = serde_json::to_vec(&record).expect("presence serializes");
        match self.kv.update(key, value.into(), revision).await {
            Ok(new_revision) => {
                self.metrics.expired.inc();
                let compact = CompactPresence::from(&record);
                let event = PresenceEvent {
                    kind: EventKind::Expire,
                    user_id: user.to_string(),
                    presence: compact.view(user, now).into_owned(),
                    previous_status: Some(stored.status),
                    revision: new_revision,
                    node_id: self.node_id.clone(),
                    actor: SYSTEM_ACTOR.into(),
                    timestamp: now,
                };
                let dedup = format!("expire-{user}-{revision}");
                self.events.publish(&event, Some(dedup), true, &self.metrics).await;
                Ok(())
            }
            // Another node expired it, or a refresh landed first: either way, not ours.
            Err(e) if e.kind() == kv::UpdateErrorKind::WrongLastRevision => Ok(()),
            Err(e) => Err(e.to_string()),
        }
    }

    fn retry_later(&self, revision: u64) {
        let mut buckets = self.queue.buckets.lock().expect("expiry queue lock");
        buckets.entry(bucket_of(Utc::now() + chrono::Duration::seconds(1))).or_default().push(revision);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn live(at: DateTime<Utc>) -> CompactPresence {
        CompactPresence {
            status: Status::Online,
            message: None,
            last_seen: None,
            updated_at: at,
            node_id: "n".into(),
            ttl: 1,
            expires_at: at,
        }
    }

    #[test]
    fn due_revisions_come_out_in_time_order_and_bounded() {
        let q = ExpiryQueue::default();
        let t0 = Utc::now();
        q.schedule(1, &live(t0 + chrono::Duration::seconds(2)));
        q.schedule(2, &live(t0));
        q.schedule(3, &live(t0));
        let mut offline = live(t0);
        offline.status = Status::Offline;
        q.schedule(4, &offline);
        assert_eq!(q.len(), 3, "offline presences do not expire");
        assert!(q.take_due(t0 - chrono::Duration::seconds(1), 10).is_empty(), "never early");
        let mut due = q.take_due(t0 + chrono::Duration::milliseconds(200), 1);
        due.extend(q.take_due(t0 + chrono::Duration::milliseconds(200), 10));
        due.sort();
        assert_eq!(due, vec![2, 3]);
        assert_eq!(q.take_due(t0 + chrono::Duration::seconds(3), 10), vec![1]);
        assert!(q.is_empty());
    }
}
