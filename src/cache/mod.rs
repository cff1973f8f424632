//! The in-memory cache of presences: quick_cache (a CLOCK-PRO/S3-FIFO policy, scan resistant,
//! with hit ratios near W-TinyLFU's at about 21 bytes of bookkeeping per entry), bounded by
//! `cache.max_cost` bytes of approximate per-entry cost ([`cost`]).
//!
//! An entry is a [`Record`]: the KV revision it reflects and the presence, or `None` when the KV
//! has none for the user (a cached "never seen", so that unknown users cost no KV read either).
//! Writers (this node's PUTs and the KV watcher) only ever replace an entry with a newer
//! revision, so a late watcher event cannot undo a fresher write.
//!
//! A "nothing here" entry lives `cache.negative_ttl`; a live presence stays until its `offline`
//! record replaces it ([`expiry`]), expiry being evaluated at read time by
//! [`crate::model::CompactPresence::view`]. See docs/architecture.md, "The cache".

mod cost;
mod expiry;
mod load;
mod slot;

use std::{
    sync::{
        Arc, Mutex,
        atomic::{AtomicU64, Ordering::Relaxed},
    },
    time::Duration,
};

use prometheus_client::metrics::counter::Counter;
use quick_cache::{DefaultHashBuilder, OptionsBuilder, sync::Cache};
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
use expiry::{Clock, Due};
use slot::{ByCost, Collect, Key, Slot};

/// The cache's housekeeping (the "nothing here" entries whose time is up), as a periodic cleanup.
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
    /// Records the start-up landed from the node's snapshot.
    restored: AtomicU64,
}

type Inner = Cache<Key, Slot, ByCost, DefaultHashBuilder, Collect>;

/// The cache: a cheap `Clone` handle.
#[derive(Clone)]
pub(crate) struct PresenceCache {
    inner: Arc<Inner>,
    counters: Arc<Counters>,
    /// Serialise writers of one key (this node's PUTs and the watcher) so that the revision check
    /// and the insert are one step. Striped by key hash; readers never take them, and no await
    /// happens while one is held.
    stripes: Arc<[Mutex<()>]>,
    hasher: std::hash::RandomState,
    loads: Arc<load::Loads>,
    negative: Negative,
    clock: Clock,
    /// The "nothing here" entries, in the order their time is up.
    due: Arc<Due>,
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
        // The tables grow with what they hold; the estimate only sets how many shards there are
        // (a small cache gets fewer, each able to hold a few dozen) and how many recently evicted
        // keys are remembered (the policy's "ghosts").
        let options = OptionsBuilder::new()
            .estimated_items_capacity((max_cost / ENTRY_OVERHEAD).max(1) as usize)
            .weight_capacity(max_cost)
            .build()
            .expect("valid cache options");
        let inner = Cache::with_options(options, ByCost, DefaultHashBuilder::default(), Collect);
        let stripes = (0..WRITE_STRIPES).map(|_| Mutex::new(())).collect();
        Self {
            inner: Arc::new(inner),
            counters,
            stripes,
            hasher: Default::default(),
            loads: Arc::default(),
            negative,
            clock: Clock::new(),
            due: Arc::default(),
        }
    }

    /// The entry for `user_id`, counting a hit or a miss.
    pub(crate) async fn get(&self, user_id: &str) -> Option<Entry> {
        let found = self.unexpired(user_id, self.inner.get(user_id)).map(|slot| slot.entry);
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
        self.unexpired(user_id, self.inner.peek(user_id)).map(|slot| slot.entry)
    }

    /// `slot`, what the cache holds for `user_id`, unless its time is up: then it leaves now,
    /// counted. (Only a "nothing here" entry has a time: a presence's read asks no clock.)
    fn unexpired(&self, user_id: &str, slot: Option<Slot>) -> Option<Slot> {
        let slot = slot?;
        if slot.until == 0 {
            return Some(slot);
        }
        let now = self.clock.now();
        if !slot.gone(now) {
            return Some(slot);
        }
        if let Some((_, gone)) = self.inner.remove_if(user_id, |s| s.gone(now)) {
            self.counters.left(&gone, true);
        }
        None
    }

    /// Puts `value` in, whatever the cache holds: only for a planted bug ([`crate::planted`]).
    pub(crate) async fn force(&self, user_id: &str, value: Entry) {
        let slot = Slot::new(user_id, value, self.clock.after(self.negative.ttl));
        if slot.is_negative() {
            self.due.push(slot.until, user_id);
        }
        self.put(user_id, slot);
    }

    /// Stores `value` unless the cache already holds the same or a newer revision; returns the
    /// entry the cache holds for the user afterwards (or `value`, if the cache declined to admit
    /// it).
    pub(crate) async fn upsert(&self, user_id: &str, value: impl Into<Entry>) -> Entry {
        let value: Entry = value.into();
        let stripe = &self.stripes
            [std::hash::BuildHasher::hash_one(&self.hasher, user_id) as usize % self.stripes.len()];
        let _serialised = stripe.lock().expect("cache stripe lock");
        // An entry whose time is up leaves first (counted), rather than be replaced unseen.
        match self.unexpired(user_id, self.inner.peek(user_id)) {
            Some(existing) if existing.entry.revision >= value.revision => return existing.entry,
            Some(existing) => self.counters.left(&existing, false),
            // A user the cache knew nothing of, whom the bucket does not know either: remembered
            // only while there is room for such entries.
            None if value.presence.is_none() && self.counters.negative.load(Relaxed) >= self.negative.max => {
                return value;
            }
            None => {
                self.counters.keys_added.fetch_add(1, Relaxed);
            }
        }
        let slot = Slot::new(user_id, value.clone(), self.clock.after(self.negative.ttl));
        if slot.is_negative() {
            self.counters.negative.fetch_add(1, Relaxed);
            self.due.push(slot.until, user_id);
        }
        self.counters.cost_added.fetch_add(u64::from(slot.cost), Relaxed);
        self.put(user_id, slot);
        value
    }

    /// Inserts `slot` for `user_id`, counting what left the cache for it: entries evicted to make
    /// room, or `slot` itself if it could not be admitted (heavier than a shard holds). What it
    /// replaced under the same key the caller has accounted for.
    fn put(&self, user_id: &str, slot: Slot) {
        let inserted = slot.entry.clone();
        let mut left = Vec::new();
        self.inner.insert_with_lifecycle(user_id.into(), slot, &mut left);
        for (key, slot) in left {
            let replaced = &*key == user_id && !Arc::ptr_eq(&slot.entry, &inserted);
            if !replaced {
                self.counters.left(&slot, true);
            }
        }
    }

    /// Makes room for `records` more entries at once (as many as `cache.max_cost` holds, at
    /// most), so that a start-up's replay does not grow the tables step by step.
    pub(crate) fn reserve(&self, records: u64) {
        let fits = self.inner.capacity() / ENTRY_OVERHEAD;
        self.inner.reserve(records.min(fits) as usize);
    }

    /// Every presence the cache holds, with its key ("nothing here" entries and tombstones left
    /// out): what a snapshot keeps.
    pub(crate) fn presences(&self) -> impl Iterator<Item = (Box<str>, Entry)> + '_ {
        self.inner.iter().filter(|(_, slot)| !slot.is_negative()).map(|(key, slot)| (key, slot.entry))
    }

    /// Drops every entry.
    pub(crate) fn clear(&self) {
        self.inner.clear();
        self.due.clear();
        self.counters.negative.store(0, Relaxed);
    }

    /// Runs the housekeeping now: the "nothing here" entries whose time is up leave (only those
    /// are visited, however many presences the cache holds).
    pub(crate) async fn cleanup(&self) {
        let now = self.clock.now();
        for key in self.due.take(now) {
            if let Some((_, gone)) = self.inner.remove_if(&*key, |slot| slot.gone(now)) {
                self.counters.left(&gone, true);
            }
        }
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

    /// `records` of the snapshot landed (see [`crate::coherence`]).
    pub(crate) fn count_restored(&self, records: u64) {
        self.counters.restored.fetch_add(records, Relaxed);
    }

    /// Records the start-up landed from the node's snapshot (0: it read the bucket).
    pub(crate) fn restored(&self) -> u64 {
        self.counters.restored.load(Relaxed)
    }

    pub(crate) fn entry_count(&self) -> u64 {
        self.inner.len() as u64
    }

    pub(crate) fn weighted_size(&self) -> u64 {
        self.inner.weight()
    }
}

#[cfg(test)]
mod tests;
