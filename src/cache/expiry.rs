//! When entries leave the cache by themselves: a live presence at its own expiry (the next read
//! loads the final `offline` record), a "nothing here" entry after the negative ttl.

use std::time::{Duration, Instant};

use chrono::Utc;
use moka::Expiry;

use super::Entry;
use crate::{config::CacheConfig, model::Record};

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

/// Expires a live presence's entry when the presence expires, and a "nothing here" entry after
/// the negative ttl.
pub(super) struct UntilPresenceExpires {
    pub negative_ttl: Duration,
}

impl UntilPresenceExpires {
    fn remaining(&self, value: &Record) -> Option<Duration> {
        let Some(p) = value.presence.as_ref() else { return Some(self.negative_ttl) };
        if !p.status.expires() {
            return None;
        }
        // Already expired: the entry holds the final state and may stay.
        (p.expires_at() - Utc::now()).to_std().ok()
    }
}

impl Expiry<String, Entry> for UntilPresenceExpires {
    fn expire_after_create(&self, _: &String, value: &Entry, _: Instant) -> Option<Duration> {
        self.remaining(value)
    }

    fn expire_after_update(
        &self,
        _: &String,
        value: &Entry,
        _: Instant,
        _: Option<Duration>,
    ) -> Option<Duration> {
        self.remaining(value)
    }
}
