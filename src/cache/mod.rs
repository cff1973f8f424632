//! The in-memory cache of presences: moka (W-TinyLFU admission, like Ristretto's), bounded by
//! `cache.max_cost` bytes of approximate per-entry cost ([`cost`]).
//!
//! An entry is a [`Record`]: the KV revision it reflects and the presence, or `None` when the KV
//! has none for the user (a cached "never seen", so that unknown users cost no KV read either).
//! Writers (this node's PUTs and the KV watcher) only ever replace an entry with a newer
//! revision, so a late watcher event cannot undo a fresher write.
//!
//! An entry never outlives the presence's own expiry: a live presence leaves the cache at its
//! `expires_at`, and the next read fetches the expired record (which then stays, being final).
//! Expiry is still evaluated at read time by [`crate::model::CompactPresence::view`]. See
//! docs/architecture.md, "The cache".

mod cost;
mod expiry;
mod load;

use std::{
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering::Relaxed},
    },
    time::Duration,
};

use moka::{future::Cache, notification::RemovalCause};
use prometheus_client::metrics::counter::Counter;
use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;
use utoipa::ToSchema;

use crate::{
    model::{Record, UserId},
    telemetry::Metrics,
};

/// A cached record, shared with the readers that found it.
pub(crate) type Entry = Arc<Record>;
pub(crate) use cost::{ENTRY_OVERHEAD, cost};
pub(crate) use expiry::Negative;
use expiry::UntilPresenceExpires;

/// moka's housekeeping (evictions, expirations, counts), as a periodic cleanup.
pub(crate) const HOUSEKEEPING_EVERY: Duration = Duration::from_secs(30);

/// The cache's counters, as `/health/cache` reports them.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, ToSchema)]
pub(crate) struct CacheMetrics {
    pub hits: u64,
    pub misses: u64,
    pub keys_added: u64,
    pub keys_evicted: u64,
    pub cost_added: u64,
    pub cost_evicted: u64,
}

impl CacheMetrics {
    /// hits / (hits + misses); 0 before the first lookup.
    pub(crate) fn hit_ratio(&self) -> f64 {
        let lookups = self.hits + self.misses;
        if lookups == 0 { 0.0 } else { self.hits as f64 / lookups as f64 }
    }
}

/// Hits, misses and evictions are the Prometheus counters themselves (shared with [`Metrics`]).
#[derive(Default)]
struct Counters {
    hits: Counter,
    misses: Counter,
    keys_evicted: Counter,
    keys_added: AtomicU64,
    cost_added: AtomicU64,
    cost_evicted: AtomicU64,
    /// Entries that say "the bucket has nothing for this user".
    negative: AtomicU64,
}

/// The cache: a cheap `Clone` handle.
#[derive(Clone)]
pub(crate) struct PresenceCache {
    inner: Cache<String, Entry>,
    counters: Arc<Counters>,
    /// Serialise writers of one key (this node's PUTs and the watcher) so that the revision check
    /// and the insert are one step. Striped by key hash; readers never take them.
    stripes: Arc<[tokio::sync::Mutex<()>]>,
    hasher: std::hash::RandomState,
    loads: Arc<load::Loads>,
    negative: Negative,
}

const WRITE_STRIPES: usize = 256;

impl PresenceCache {
    /// A cache holding at most `max_cost` bytes of approximate entry cost.
    #[cfg(test)]
    pub(crate) fn new(max_cost: u64) -> Self {
        Self::with_counters(
            max_cost,
            Negative::from(&crate::config::CacheConfig::default()),
            Counters::default(),
        )
    }

    /// The same, with `negative`'s rules, counting hits, misses and evictions in `metrics`.
    pub(crate) fn with_metrics(max_cost: u64, negative: Negative, metrics: &Metrics) -> Self {
        let counters = Counters {
            hits: metrics.cache_hits.clone(),
            misses: metrics.cache_misses.clone(),
            keys_evicted: metrics.cache_evictions.clone(),
            ..Counters::default()
        };
        Self::with_counters(max_cost, negative, counters)
    }

    fn with_counters(max_cost: u64, negative: Negative, counters: Counters) -> Self {
        let counters = Arc::new(counters);
        let evictions = counters.clone();
        let inner = Cache::builder()
            .max_capacity(max_cost)
            .weigher(|k: &String, v: &Entry| cost(k, v))
            .expire_after(UntilPresenceExpires { negative_ttl: negative.ttl })
            .eviction_listener(move |k: Arc<String>, v: Entry, cause| {
                if v.presence.is_none() {
                    let _ = evictions.negative.fetch_update(Relaxed, Relaxed, |n| Some(n.saturating_sub(1)));
                }
                if matches!(cause, RemovalCause::Size | RemovalCause::Expired) {
                    evictions.keys_evicted.inc();
                    evictions.cost_evicted.fetch_add(cost(&k, &v) as u64, Relaxed);
                }
            })
            .build();
        let stripes = (0..WRITE_STRIPES).map(|_| tokio::sync::Mutex::new(())).collect();
        Self { inner, counters, stripes, hasher: Default::default(), loads: Arc::default(), negative }
    }

    /// The entry for `user_id`, counting a hit or a miss.
    pub(crate) async fn get(&self, user_id: &str) -> Option<Entry> {
        let found = self.inner.get(user_id).await;
        let counter = if found.is_some() { &self.counters.hits } else { &self.counters.misses };
        counter.inc();
        found
    }

    /// The entries for `user_ids`, in order, in one pass.
    pub(crate) async fn get_multiple(&self, user_ids: &[UserId]) -> Vec<Option<Entry>> {
        let mut found = Vec::with_capacity(user_ids.len());
        for user_id in user_ids {
            found.push(self.get(user_id).await);
        }
        found
    }

    /// The entry for `user_id`, without counting a lookup.
    pub(crate) async fn peek(&self, user_id: &str) -> Option<Entry> {
        self.inner.get(user_id).await
    }

    /// Puts `value` in, whatever the cache holds: only for a planted bug ([`crate::planted`]).
    pub(crate) async fn force(&self, user_id: &str, value: Entry) {
        self.inner.insert(user_id.to_string(), value).await;
    }

    /// Stores `value` unless the cache already holds the same or a newer revision; returns the
    /// entry the cache holds for the user afterwards (or `value`, if the cache declined to admit
    /// it).
    pub(crate) async fn upsert(&self, user_id: &str, value: impl Into<Entry>) -> Entry {
        let value: Entry = value.into();
        let stripe = &self.stripes
            [std::hash::BuildHasher::hash_one(&self.hasher, user_id) as usize % self.stripes.len()];
        let _serialised = stripe.lock().await;
        match self.inner.get(user_id).await {
            Some(existing) if existing.revision >= value.revision => return existing,
            Some(_) => {}
            // A user the cache knew nothing of, whom the bucket does not know either: remembered
            // only while there is room for such entries.
            None if value.presence.is_none() && self.counters.negative.load(Relaxed) >= self.negative.max => {
                return value;
            }
            None => {
                self.counters.keys_added.fetch_add(1, Relaxed);
            }
        }
        if value.presence.is_none() {
            self.counters.negative.fetch_add(1, Relaxed);
        }
        self.counters.cost_added.fetch_add(cost(user_id, &value) as u64, Relaxed);
        self.inner.insert(user_id.to_string(), value.clone()).await;
        value
    }

    /// Drops every entry.
    pub(crate) fn clear(&self) {
        self.inner.invalidate_all();
    }

    /// Runs moka's housekeeping now: evictions, expirations, listener calls.
    pub(crate) async fn cleanup(&self) {
        self.inner.run_pending_tasks().await;
    }

    /// Runs the housekeeping every [`HOUSEKEEPING_EVERY`] until `stop`.
    pub(crate) async fn housekeeping(self, stop: CancellationToken) {
        let mut every = tokio::time::interval(HOUSEKEEPING_EVERY);
        loop {
            tokio::select! {
                () = stop.cancelled() => return,
                _ = every.tick() => self.cleanup().await,
            }
        }
    }

    pub(crate) fn metrics(&self) -> CacheMetrics {
        let c = &self.counters;
        CacheMetrics {
            hits: c.hits.get(),
            misses: c.misses.get(),
            keys_added: c.keys_added.load(Relaxed),
            keys_evicted: c.keys_evicted.get(),
            cost_added: c.cost_added.load(Relaxed),
            cost_evicted: c.cost_evicted.load(Relaxed),
        }
    }

    pub(crate) fn entry_count(&self) -> u64 {
        self.inner.entry_count()
    }

    pub(crate) fn weighted_size(&self) -> u64 {
        self.inner.weighted_size()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Instant;

    use chrono::Utc;

    use super::cost::{DEVICE_OVERHEAD, ROOM_OVERHEAD};
    use crate::model::{CompactPresence, Meta, PresenceUpdate, Status, StoredPresence, StoredRoom};

    fn presence(status: &str, ttl: i64) -> CompactPresence {
        let update = PresenceUpdate::new(status, None, Some(ttl), Duration::from_secs(60)).unwrap();
        let stored = StoredPresence::from_update(&UserId::parse("u").unwrap(), update, None, "n", Utc::now());
        CompactPresence::from(&stored)
    }

    #[tokio::test]
    async fn an_entry_costs_its_overhead_key_message_and_devices() {
        let cache = PresenceCache::new(1 << 20);
        let user = UserId::parse("costly").unwrap();
        let update =
            PresenceUpdate::new("busy", Some("in a meeting".into()), Some(60), Duration::from_secs(60))
                .unwrap();
        let mut stored = StoredPresence::from_update(&user, update, None, "n", Utc::now());
        let mut device = crate::model::StoredDevice::new(crate::model::DeviceKind::Web, "n".into(), false);
        let meta = Meta::parse(serde_json::json!({"a": 1}), 1024).unwrap();
        device.rooms.insert("doc-1".into(), StoredRoom { meta, joined_at: Utc::now() });
        stored.devices.insert("tab-1".into(), device);
        let record = Record { revision: 1, presence: Some(CompactPresence::from(&stored)) };
        let room = ROOM_OVERHEAD + "doc-1".len() as u64 + r#"{"a":1}"#.len() as u64;
        let devices = DEVICE_OVERHEAD + "tab-1".len() as u64 + room;
        let expected = ENTRY_OVERHEAD + "costly".len() as u64 + "in a meeting".len() as u64 + devices;
        assert_eq!(u64::from(cost("costly", &record)), expected);
        cache.upsert(&user, record).await;
        cache.cleanup().await;
        assert_eq!(cache.weighted_size(), expected, "what /health/cache and the bound count");
    }

    #[tokio::test]
    async fn an_older_revision_never_replaces_a_newer_one() {
        let cache = PresenceCache::new(1 << 20);
        cache.upsert("u", Record { revision: 5, presence: Some(presence("busy", 60)) }).await;
        cache.upsert("u", Record { revision: 4, presence: Some(presence("away", 60)) }).await;
        assert_eq!(cache.get("u").await.unwrap().presence.as_ref().unwrap().status, Status::Busy);
        cache.upsert("u", Record { revision: 6, presence: None }).await;
        assert_eq!(cache.get("u").await.unwrap().presence, None);
        let m = cache.metrics();
        assert_eq!((m.hits, m.misses, m.keys_added), (2, 0, 1));
    }

    #[tokio::test]
    async fn a_live_entry_leaves_when_its_presence_expires() {
        let cache = PresenceCache::new(1 << 20);
        let written = Utc::now() - chrono::Duration::milliseconds(2);
        cache.upsert("u", Record { revision: 1, presence: Some(presence("online", 1)) }).await;
        assert!(cache.get("u").await.is_some());
        let deadline = Instant::now() + Duration::from_secs(3);
        while cache.get("u").await.is_some() {
            assert!(Instant::now() < deadline, "the entry outlived its presence");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert!(Utc::now() >= written + chrono::Duration::seconds(1), "not before the presence expired");
        // moka's timer wheel hands the expired entry to housekeeping within about a second.
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            cache.cleanup().await;
            if cache.metrics().keys_evicted == 1 {
                break;
            }
            assert!(Instant::now() < deadline, "the expiry was never counted as an eviction");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    #[tokio::test]
    async fn nothing_here_entries_are_capped_and_short_lived_but_erasures_always_land() {
        let cache = PresenceCache::with_counters(
            1 << 20,
            Negative { ttl: Duration::from_secs(1), max: 3 },
            Counters::default(),
        );
        for i in 0..10 {
            cache.upsert(&format!("nobody{i}"), Record::NEVER_SEEN).await;
        }
        cache.cleanup().await;
        assert_eq!(cache.entry_count(), 3, "at most 3 entries for users nobody knows");
        cache.upsert("real", Record { revision: 1, presence: Some(presence("online", 60)) }).await;
        cache.upsert("real", Record { revision: 2, presence: None }).await;
        assert_eq!(cache.peek("real").await.unwrap().revision, 2, "an erasure replaces, cap or not");
        let deadline = Instant::now() + Duration::from_secs(5);
        while cache.peek("nobody0").await.is_some() {
            assert!(Instant::now() < deadline, "a nothing-here entry outlived its ttl");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        // moka hands expired entries to its housekeeping within about a second; then there is room.
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            cache.cleanup().await;
            cache.upsert("nobody-new", Record::NEVER_SEEN).await;
            if cache.peek("nobody-new").await.is_some() {
                break;
            }
            assert!(Instant::now() < deadline, "no room again after the old ones left");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}
