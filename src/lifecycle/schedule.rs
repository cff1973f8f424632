//! The expiry schedule: KV revisions of live presences, bucketed by expiry time (8 bytes a
//! presence). Writers (this node's PUTs, the watcher) add to it; the expiry job takes what is
//! due.

use std::{collections::BTreeMap, sync::Mutex, time::Duration};

use chrono::{DateTime, Utc};
use tokio::sync::Notify;

use crate::model::{CompactPresence, Status};

/// Granularity of the schedule.
pub(crate) const TICK: Duration = Duration::from_millis(100);

/// Revisions to check, bucketed by expiry time.
#[derive(Debug, Default)]
pub(crate) struct ExpiryQueue {
    buckets: Mutex<BTreeMap<i64, Vec<u64>>>,
    wake: Notify,
}

fn bucket_of(at: DateTime<Utc>) -> i64 {
    // Round up, so that a bucket is never due before every expiry in it.
    let tick = TICK.as_millis() as i64;
    (at.timestamp_millis() + tick - 1).div_euclid(tick)
}

impl ExpiryQueue {
    pub(crate) fn new() -> std::sync::Arc<Self> {
        std::sync::Arc::default()
    }

    /// Remembers that `revision` of a presence expires when the presence does (only live
    /// statuses expire).
    pub(crate) fn schedule(&self, revision: u64, presence: &CompactPresence) {
        if presence.status != Status::Offline {
            self.schedule_at(revision, presence.expires_at);
        }
    }

    /// Remembers to look at `revision` again at `at`.
    pub(crate) fn schedule_at(&self, revision: u64, at: DateTime<Utc>) {
        let bucket = bucket_of(at);
        let mut buckets = self.buckets.lock().expect("expiry queue lock");
        let earliest = buckets.first_key_value().is_none_or(|(first, _)| bucket < *first);
        buckets.entry(bucket).or_default().push(revision);
        drop(buckets);
        if earliest {
            self.wake.notify_one();
        }
    }

    /// Up to `max` revisions due at `now`.
    pub(crate) fn take_due(&self, now: DateTime<Utc>, max: usize) -> Vec<u64> {
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
    pub(crate) fn next_due_in(&self, now: DateTime<Utc>) -> Option<Duration> {
        let buckets = self.buckets.lock().expect("expiry queue lock");
        let (first, _) = buckets.first_key_value()?;
        let at = first * TICK.as_millis() as i64;
        Some(Duration::from_millis((at - now.timestamp_millis()).max(0) as u64))
    }

    /// Completes when an expiry earlier than all others was scheduled.
    pub(crate) async fn earlier_scheduled(&self) {
        self.wake.notified().await;
    }

    /// Revisions waiting (superseded ones included until they come due).
    pub(crate) fn len(&self) -> usize {
        self.buckets.lock().expect("expiry queue lock").values().map(Vec::len).sum()
    }

    #[cfg(test)]
    pub(crate) fn is_empty(&self) -> bool {
        self.len() == 0
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
