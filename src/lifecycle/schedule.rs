//! The expiry schedule: KV revisions of live presences, bucketed by expiry time (about 16 bytes a
//! presence). Writers (this node's PUTs, the watcher) add each user's new revision and take out
//! the one it supersedes, so the schedule holds one entry per live user, not one per write; the
//! expiry job takes what is due. (A superseded revision the writer could not name, because the
//! cache had let the user go, leaves when it comes due: the job finds it gone and does nothing.)

use std::{
    collections::{BTreeMap, HashSet},
    sync::Mutex,
    time::Duration,
};

use chrono::{DateTime, Utc};
use tokio::sync::Notify;

use crate::model::{CompactPresence, Record};

/// Granularity of the schedule.
pub(crate) const TICK: Duration = Duration::from_millis(100);

/// Revisions to check, bucketed by expiry time.
#[derive(Debug, Default)]
pub(crate) struct ExpiryQueue {
    buckets: Mutex<BTreeMap<i64, HashSet<u64>>>,
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

    /// A user's record moved from `previous` (what this node knew, if anything) to `revision`
    /// holding `presence`: the new revision is scheduled if it is live, the previous one is taken
    /// out.
    pub(crate) fn replace(
        &self,
        previous: Option<&Record>,
        revision: u64,
        presence: Option<&CompactPresence>,
    ) {
        if let Some(old) = previous.filter(|old| old.revision < revision)
            && let Some(p) = old.presence.as_ref().filter(|p| p.status.expires())
        {
            self.unschedule(old.revision, p.expires_at());
        }
        if let Some(p) = presence.filter(|p| p.status.expires()) {
            self.schedule_at(revision, p.expires_at());
        }
    }

    fn unschedule(&self, revision: u64, at: DateTime<Utc>) {
        let mut buckets = self.buckets.lock().expect("expiry queue lock");
        let bucket = bucket_of(at);
        if let Some(revisions) = buckets.get_mut(&bucket) {
            revisions.remove(&revision);
            if revisions.is_empty() {
                buckets.remove(&bucket);
            }
        }
    }

    /// Remembers to look at `revision` again at `at`.
    pub(crate) fn schedule_at(&self, revision: u64, at: DateTime<Utc>) {
        let bucket = bucket_of(at);
        let mut buckets = self.buckets.lock().expect("expiry queue lock");
        let earliest = buckets.first_key_value().is_none_or(|(first, _)| bucket < *first);
        buckets.entry(bucket).or_default().insert(revision);
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
            let taken: Vec<u64> = revisions.iter().take(max - due.len()).copied().collect();
            for revision in &taken {
                revisions.remove(revision);
            }
            due.extend(taken);
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

    /// Revisions due more than `grace` before `now` and not yet taken: the expiry job's backlog.
    pub(crate) fn overdue(&self, now: DateTime<Utc>, grace: Duration) -> usize {
        let tick = TICK.as_millis() as i64;
        let limit = (now.timestamp_millis() - grace.as_millis() as i64).div_euclid(tick);
        let buckets = self.buckets.lock().expect("expiry queue lock");
        buckets.range(..=limit).map(|(_, revisions)| revisions.len()).sum()
    }

    /// Revisions waiting (superseded ones included until they come due).
    pub(crate) fn len(&self) -> usize {
        self.buckets.lock().expect("expiry queue lock").values().map(HashSet::len).sum()
    }

    #[cfg(test)]
    pub(crate) fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Status;

    fn live(at: DateTime<Utc>) -> CompactPresence {
        CompactPresence {
            status: Status::Online,
            message: None,
            last_seen: None,
            updated_at: at - chrono::Duration::seconds(1),
            node_id: "n".into(),
            ttl: 1,
            devices: None,
        }
    }

    fn record(revision: u64, presence: CompactPresence) -> Record {
        Record { revision, presence: Some(presence) }
    }

    #[test]
    fn due_revisions_come_out_in_time_order_and_bounded() {
        let q = ExpiryQueue::default();
        let t0 = Utc::now();
        q.replace(None, 1, Some(&live(t0 + chrono::Duration::seconds(2))));
        q.replace(None, 2, Some(&live(t0)));
        q.replace(None, 3, Some(&live(t0)));
        let mut offline = live(t0);
        offline.status = Status::Offline;
        q.replace(None, 4, Some(&offline));
        assert_eq!(q.len(), 3, "offline presences do not expire");
        assert!(q.take_due(t0 - chrono::Duration::seconds(1), 10).is_empty(), "never early");
        let mut due = q.take_due(t0 + chrono::Duration::milliseconds(200), 1);
        assert_eq!(due.len(), 1, "at most max at a time");
        due.extend(q.take_due(t0 + chrono::Duration::milliseconds(200), 10));
        due.sort();
        assert_eq!(due, vec![2, 3]);
        assert_eq!(q.take_due(t0 + chrono::Duration::seconds(3), 10), vec![1]);
        assert!(q.is_empty());
    }

    /// A time on a tick boundary, so that bucket arithmetic is exact.
    fn aligned() -> DateTime<Utc> {
        DateTime::from_timestamp_millis(1_795_000_000_000).unwrap()
    }

    #[test]
    fn an_expiry_is_due_at_its_time_never_before() {
        let t = aligned();
        let ms = chrono::Duration::milliseconds;
        for (revision, at) in [(1, t), (2, t + ms(1)), (3, t + ms(99)), (4, t + ms(100))] {
            let q = ExpiryQueue::default();
            q.schedule_at(revision, at);
            assert!(q.take_due(at - ms(1), 10).is_empty(), "revision {revision} due before its time");
            // Due within one tick after its time, at the latest.
            assert_eq!(q.take_due(at + ms(99), 10), vec![revision], "revision {revision} late");
        }
        let q = ExpiryQueue::default();
        q.schedule_at(5, t);
        assert_eq!(q.take_due(t, 10), vec![5], "an expiry on a tick boundary is due at that very time");
    }

    #[test]
    fn a_batch_takes_at_most_max() {
        let q = ExpiryQueue::default();
        let t = aligned();
        for revision in 1..=5 {
            q.schedule_at(revision, t);
        }
        assert_eq!(q.take_due(t, 2).len(), 2);
        assert_eq!(q.take_due(t, 2).len(), 2);
        assert_eq!(q.take_due(t, 2).len(), 1);
        // Across buckets too: one due in an earlier bucket, five in a later one.
        q.schedule_at(6, t);
        for revision in 7..=11 {
            q.schedule_at(revision, t + chrono::Duration::seconds(1));
        }
        assert_eq!(q.take_due(t + chrono::Duration::seconds(1), 3).len(), 3);
    }

    #[test]
    fn the_job_knows_how_long_to_sleep() {
        let q = ExpiryQueue::default();
        let t = aligned();
        assert_eq!(q.next_due_in(t), None, "nothing scheduled");
        q.schedule_at(1, t + chrono::Duration::milliseconds(2000));
        q.schedule_at(2, t + chrono::Duration::milliseconds(5000));
        assert_eq!(q.next_due_in(t), Some(Duration::from_millis(2000)));
        assert_eq!(q.next_due_in(t + chrono::Duration::milliseconds(1500)), Some(Duration::from_millis(500)));
        assert_eq!(q.next_due_in(t + chrono::Duration::seconds(3)), Some(Duration::ZERO), "overdue: now");
    }

    #[test]
    fn an_earlier_expiry_wakes_the_job_and_a_later_one_does_not() {
        use futures::FutureExt;
        let q = ExpiryQueue::default();
        let t = aligned();
        q.schedule_at(1, t + chrono::Duration::seconds(10));
        assert!(q.earlier_scheduled().now_or_never().is_some(), "the first expiry wakes the job");
        q.schedule_at(2, t + chrono::Duration::seconds(20));
        assert!(q.earlier_scheduled().now_or_never().is_none(), "a later expiry changes nothing");
        q.schedule_at(3, t + chrono::Duration::seconds(1));
        assert!(q.earlier_scheduled().now_or_never().is_some(), "an earlier one must wake it");
    }

    #[test]
    fn overdue_counts_what_the_job_has_not_taken_past_the_grace() {
        let q = ExpiryQueue::default();
        let t0 = Utc::now();
        q.replace(None, 1, Some(&live(t0)));
        q.replace(None, 2, Some(&live(t0 + chrono::Duration::seconds(10))));
        let grace = Duration::from_secs(1);
        assert_eq!(q.overdue(t0, grace), 0, "not yet due");
        assert_eq!(q.overdue(t0 + chrono::Duration::milliseconds(500), grace), 0, "within the grace");
        assert_eq!(q.overdue(t0 + chrono::Duration::seconds(2), grace), 1);
        assert_eq!(q.overdue(t0 + chrono::Duration::seconds(20), grace), 2);
        q.take_due(t0 + chrono::Duration::seconds(20), 10);
        assert_eq!(q.overdue(t0 + chrono::Duration::seconds(20), grace), 0, "taken is not overdue");
    }

    #[test]
    fn one_entry_per_user_however_often_they_write() {
        let q = ExpiryQueue::default();
        let t0 = Utc::now();
        let mut previous: Option<Record> = None;
        for revision in 1..=3000 {
            let presence = live(t0 + chrono::Duration::milliseconds(revision as i64 * 7));
            q.replace(previous.as_ref(), revision, Some(&presence));
            previous = Some(record(revision, presence));
        }
        assert_eq!(q.len(), 1);
        let mut offline = live(t0);
        offline.status = Status::Offline;
        q.replace(previous.as_ref(), 3001, Some(&offline));
        assert!(q.is_empty(), "an offline write leaves nothing to expire");
        q.replace(Some(&record(9, live(t0))), 5, Some(&live(t0)));
        assert_eq!(q.len(), 1, "an older revision never takes out a newer one");
    }
}
