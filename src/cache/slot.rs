//! What the cache holds for a user: the record, what it costs (weighed once, when it goes in) and,
//! for a "nothing here" entry, when it is gone; and how quick_cache is told of both.

use std::sync::atomic::Ordering::Relaxed;

use quick_cache::{Lifecycle, Weighter};

use super::{Counters, Entry, cost};

/// The cache's key: the user id.
pub(super) type Key = Box<str>;

#[derive(Clone)]
pub(super) struct Slot {
    pub entry: Entry,
    /// [`cost`] of the entry under its key.
    pub cost: u32,
    /// For a "nothing here" entry, the [`super::expiry::Clock`] tick at which it is gone; else 0.
    pub until: u32,
}

impl Slot {
    pub(super) fn new(key: &str, entry: Entry, until: u32) -> Self {
        let until = if entry.presence.is_none() { until } else { 0 };
        Self { cost: cost(key, &entry), entry, until }
    }

    pub(super) fn is_negative(&self) -> bool {
        self.entry.presence.is_none()
    }

    /// Whether the entry is gone at tick `now`.
    pub(super) fn gone(&self, now: u32) -> bool {
        self.until != 0 && now >= self.until
    }
}

/// Weighs a slot by its cost.
#[derive(Clone)]
pub(super) struct ByCost;

impl Weighter<Key, Slot> for ByCost {
    fn weight(&self, _: &Key, slot: &Slot) -> u64 {
        u64::from(slot.cost)
    }
}

/// Hands back what an insert pushed out: quick_cache reports the entry an insert replaced (the
/// same key) the way it reports those it evicted to stay within `cache.max_cost`, so the inserter
/// tells them apart ([`super::PresenceCache`]'s `put`).
#[derive(Clone)]
pub(super) struct Collect;

impl Lifecycle<Key, Slot> for Collect {
    type RequestState = Vec<(Key, Slot)>;

    fn on_evict(&self, left: &mut Vec<(Key, Slot)>, key: Key, slot: Slot) {
        left.push((key, slot));
    }
}

impl Counters {
    /// `slot` left the cache: by eviction (counted as such), or expired or replaced.
    pub(super) fn left(&self, slot: &Slot, evicted: bool) {
        if slot.is_negative() {
            let _ = self.negative.fetch_update(Relaxed, Relaxed, |n| Some(n.saturating_sub(1)));
        }
        if evicted {
            self.keys_evicted.inc();
            self.cost_evicted.fetch_add(u64::from(slot.cost), Relaxed);
        }
    }
}
