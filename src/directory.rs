//! The read and write paths: cache first, the KV bucket behind it, and what happens when NATS is
//! away (design document section 12.2, DECISIONS section 4).
//!
//! - A read is answered from the cache when it can. A miss costs one KV read, shared by all
//!   concurrent readers of that user (single flight). Multi-user reads answer the hits in one
//!   pass and fetch the misses concurrently, at most [`MISS_CONCURRENCY`] at a time.
//! - When NATS is unreachable (or the circuit breaker is open), cached entries are still served,
//!   marked stale while the watcher may have missed updates; misses are answered as degraded
//!   (`offline` at the edge) without waiting for a timeout.
//! - A write goes to the KV and, once acknowledged, into this node's cache before the answer goes
//!   out (read-your-writes). While NATS is unreachable it fails at once.

use std::sync::Arc;

use futures::{StreamExt, stream};

use crate::{
    cache::{Cached, Entry, PresenceCache, watcher::Coherence},
    model::{CompactPresence, PresenceUpdate, UserId},
    store::{PresenceStore, StoreError, breaker::Breaker},
    telemetry::Metrics,
};

/// Concurrent KV reads one multi-user request may have in flight.
pub const MISS_CONCURRENCY: usize = 64;

/// What a read found out about one user.
#[derive(Debug, Clone)]
pub enum Lookup {
    /// The cache or the KV answered (the entry may say "never seen").
    Known(Entry),
    /// Neither could: NATS is unreachable and the cache has no entry.
    Degraded,
}

/// The answer to a multi-user read, in request order.
pub struct ManyLookups {
    pub entries: Vec<(UserId, Lookup)>,
    pub degraded: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum WriteError {
    #[error("NATS is unreachable")]
    Unavailable,
    #[error(transparent)]
    Store(#[from] StoreError),
}

pub struct Directory {
    store: PresenceStore,
    cache: PresenceCache,
    coherence: Arc<Coherence>,
    breaker: Breaker,
    metrics: Arc<Metrics>,
    node_id: String,
}

impl Directory {
    pub fn new(
        store: PresenceStore,
        cache: PresenceCache,
        coherence: Arc<Coherence>,
        breaker: Breaker,
        metrics: Arc<Metrics>,
        node_id: String,
    ) -> Self {
        Self { store, cache, coherence, breaker, metrics, node_id }
    }

    pub fn cache(&self) -> &PresenceCache {
        &self.cache
    }

    pub fn coherence(&self) -> &Coherence {
        &self.coherence
    }

    pub fn breaker(&self) -> &Breaker {
        &self.breaker
    }

    pub fn node_id(&self) -> &str {
        &self.node_id
    }

    /// True when answers from the cache may miss recent updates.
    pub fn stale(&self) -> bool {
        self.coherence.stale()
    }

    pub async fn read(&self, user: &UserId) -> Lookup {
        match self.cache.get(user).await {
            Some(entry) => Lookup::Known(entry),
            None => self.load(user).await,
        }
    }

    pub async fn read_many(&self, users: Vec<UserId>) -> ManyLookups {
        let mut entries = Vec::with_capacity(users.len());
        let mut misses = Vec::new();
        for (i, user) in users.into_iter().enumerate() {
            match self.cache.get(&user).await {
                Some(entry) => entries.push((user, Lookup::Known(entry))),
                None => {
                    misses.push((i, user.clone()));
                    entries.push((user, Lookup::Degraded));
                }
            }
        }
        let loaded: Vec<(usize, Lookup)> = stream::iter(misses)
            .map(|(i, user)| async move { (i, self.load(&user).await) })
            .buffer_unordered(MISS_CONCURRENCY)
            .collect()
            .await;
        let mut degraded = false;
        for (i, lookup) in loaded {
            degraded |= matches!(lookup, Lookup::Degraded);
            entries[i].1 = lookup;
        }
        ManyLookups { entries, degraded }
    }

    /// A cache miss: one KV read shared by concurrent callers, unless NATS is known to be away.
    async fn load(&self, user: &UserId) -> Lookup {
        if !self.coherence.nats_connected() || !self.breaker.allow() {
            return Lookup::Degraded;
        }
        match self.cache.get_or_load(user, self.store.load(user)).await {
            Ok(entry) => {
                self.breaker.record_success();
                Lookup::Known(entry)
            }
            Err(e) => {
                tracing::warn!(user = %user, error = %e, "KV read failed; answering degraded");
                self.breaker.record_failure();
                Lookup::Degraded
            }
        }
    }

    /// Stores `update` and returns what was stored, once JetStream acknowledged it.
    pub async fn write(&self, user: &UserId, update: PresenceUpdate) -> Result<CompactPresence, WriteError> {
        if !self.coherence.nats_connected() || !self.breaker.allow() {
            return Err(WriteError::Unavailable);
        }
        match self.store.write(user, update, &self.node_id).await {
            Ok((stored, revision)) => {
                self.breaker.record_success();
                self.metrics.updates.inc();
                let presence = CompactPresence::from(&stored);
                self.cache.upsert(user, Cached { revision, presence: Some(presence.clone()) }).await;
                Ok(presence)
            }
            Err(StoreError::Contention) => Err(StoreError::Contention.into()),
            Err(e) => {
                self.breaker.record_failure();
                Err(e.into())
            }
        }
    }
}
