//! When an entry leaves the cache by itself: a "nothing here" entry after the negative ttl, on the
//! cache's own clock. A live presence stays until its own `offline` record replaces it (the expiry
//! job writes that record within about a tick of `expires_at`; a read in between computes the
//! expiry itself, [`crate::model::CompactPresence::view`]), so a presence entry carries no timer.

use std::{
    collections::VecDeque,
    sync::Mutex,
    time::{Duration, Instant},
};

use crate::config::CacheConfig;

/// How the cache treats "the bucket has nothing for this user" (`cache.negative_ttl`,
/// `cache.max_negative_entries`).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Negative {
    pub ttl: Duration,
    pub max: u64,
}

impl From<&CacheConfig> for Negative {
    fn from(config: &CacheConfig) -> Self {
        Self { ttl: config.negative_ttl, max: config.max_negative_entries }
    }
}

/// The cache's clock: tenths of a second since the cache was made (32 bits last 13 years).
#[derive(Debug, Clone, Copy)]
pub(super) struct Clock(Instant);

/// A tick of [`Clock`].
const TICK_MS: u128 = 100;

impl Clock {
    pub(super) fn new() -> Self {
        Self(Instant::now())
    }

    /// Now, in ticks (at least 1: 0 means "never").
    pub(super) fn now(&self) -> u32 {
        (self.0.elapsed().as_millis() / TICK_MS).min(u128::from(u32::MAX - 1)) as u32 + 1
    }

    /// The tick at which something that lives `ttl` from now is gone (never sooner than `ttl`).
    pub(super) fn after(&self, ttl: Duration) -> u32 {
        let ticks = ttl.as_millis().div_ceil(TICK_MS).min(u128::from(u32::MAX)) as u32;
        self.now().saturating_add(ticks).saturating_add(1)
    }
}

/// The "nothing here" entries in the order they go, so that the housekeeping visits only those
/// whose time is up (they all live the same ttl, so the order they went in is the order they go).
#[derive(Default)]
pub(super) struct Due(Mutex<VecDeque<(u32, Box<str>)>>);

impl Due {
    /// An entry under `key` that is gone at tick `until`.
    pub(super) fn push(&self, until: u32, key: &str) {
        self.0.lock().expect("due lock").push_back((until, key.into()));
    }

    /// The keys whose entries went in with a time that is up at tick `now` (each may have been
    /// replaced since: the caller checks what the cache holds).
    pub(super) fn take(&self, now: u32) -> Vec<Box<str>> {
        let mut due = self.0.lock().expect("due lock");
        let up = due.iter().take_while(|(until, _)| *until <= now).count();
        due.drain(..up).map(|(_, key)| key).collect()
    }

    pub(super) fn clear(&self) {
        self.0.lock().expect("due lock").clear();
    }
}
