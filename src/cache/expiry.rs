//! When an entry leaves the cache by itself: a "nothing here" entry after the negative ttl, on the
//! cache's own clock. A live presence stays until its own `offline` record replaces it (the expiry
//! job writes that record within about a tick of `expires_at`; a read in between computes the
//! expiry itself, [`crate::model::CompactPresence::view`]), so a presence entry carries no timer.

use std::time::{Duration, Instant};

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
