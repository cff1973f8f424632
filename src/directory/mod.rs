//! The read and write paths: cache first, the store behind it, and what happens when NATS is
//! away. See docs/architecture.md, "A read" and "A write".
//!
//! - A read is answered from the cache when it can. A miss costs one KV read, shared by all
//!   concurrent readers of that user (single flight). Multi-user reads answer the hits in one
//!   pass and fetch the misses concurrently, at most [`MISS_CONCURRENCY`] at a time.
//! - When NATS is unreachable (or the circuit breaker is open), cached entries are still served,
//!   marked stale while the watcher may have missed updates; misses are answered as degraded
//!   (`offline` at the edge) without waiting for a timeout.
//! - A leaf whose center is away reads a miss from its region's copy of the bucket.
//! - [`write`]: a write goes to the store and, once acknowledged, lands on this node (expiry
//!   schedule, cache, live feed) before the answer goes out (read-your-writes), and its update
//!   event is stored. While NATS is unreachable it fails at once. A leaf has a center node carry
//!   its writes out ([`forward`]): one round trip over the link.
//! - Erasure removes the KV record with its history, then the user's events from the audit log.
//!   Every write's event is stored before its 200, so nothing a client was told about outlives
//!   an erasure that came after.

use std::{sync::Arc, time::Duration};

use futures::{StreamExt, stream};

use crate::{
    cache::{Entry, PresenceCache},
    coherence::Landing,
    lifecycle::{EventError, Events, PresenceEvent},
    link::LinkState,
    model::{Record, UserId},
    store::{PresenceStore, StoreError},
    telemetry::{Metrics, chain},
};

pub(crate) mod forward;
mod write;

/// Concurrent KV reads one multi-user request may have in flight.
pub(crate) const MISS_CONCURRENCY: usize = 64;

/// What a read found out about one user.
#[derive(Debug, Clone)]
pub(crate) enum Lookup {
    /// The cache or the KV answered (the record may say "never seen").
    Known(Arc<Record>),
    /// Neither could: NATS is unreachable and the cache has no entry.
    Degraded,
}

/// A multi-user read after the cache pass: the hits, and where the misses are.
pub(crate) struct Partial {
    entries: Vec<(UserId, Lookup)>,
    misses: Vec<usize>,
}

impl Partial {
    /// Users the cache did not have: what completing the read costs in KV reads.
    pub(crate) fn misses(&self) -> usize {
        self.misses.len()
    }
}

/// The answer to a multi-user read, in request order.
pub(crate) struct ManyLookups {
    pub entries: Vec<(UserId, Lookup)>,
    pub degraded: bool,
}

#[derive(Debug, thiserror::Error)]
pub(crate) enum WriteError {
    #[error("NATS is unreachable")]
    Unavailable,
    /// The write went out, its acknowledgement never came back, and a look at the bucket could
    /// not tell either: it may or may not be stored. (If it was, its event follows.)
    #[error("the write's outcome is unknown")]
    Unconfirmed(#[source] crate::nats::CallError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Events(#[from] EventError),
    /// The center did not accept the user's token that a leaf handed on.
    #[error("the center refused the user's token")]
    Refused,
}

/// A leaf's way to the center's write path.
#[derive(Clone)]
pub(crate) struct Forwarding {
    client: async_nats::Client,
    /// How long a forwarded write may take: the center's KV write and its event, each bounded
    /// by `nats.request_timeout`.
    limit: Duration,
}

impl Forwarding {
    pub(crate) fn new(client: async_nats::Client, request_timeout: Duration) -> Self {
        Self { client, limit: request_timeout * 2 }
    }
}

/// Where the directory's records are kept: the bucket, a leaf's copy of it (read on a miss
/// while the center is away), and the audit log.
pub(crate) type Storage = (PresenceStore, Option<PresenceStore>, Events);

/// The read and write paths of one node: a cheap `Clone` handle.
#[derive(Clone)]
pub(crate) struct Directory {
    store: PresenceStore,
    region: Option<PresenceStore>,
    events: Events,
    cache: PresenceCache,
    landing: Landing,
    link: Arc<LinkState>,
    /// On a leaf: where its writes go to be carried out by the center.
    forward: Option<Forwarding>,
    metrics: Arc<Metrics>,
    node_id: String,
}

impl Directory {
    pub(crate) fn new(
        node_id: String,
        (store, region, events): Storage,
        (cache, landing, link): (PresenceCache, Landing, Arc<LinkState>),
        forward: Option<Forwarding>,
        metrics: Arc<Metrics>,
    ) -> Self {
        Self { store, region, events, cache, landing, link, forward, metrics, node_id }
    }

    /// The node this directory writes as.
    pub(crate) fn node_id(&self) -> &str {
        &self.node_id
    }

    /// True while NATS answers: writes are taken.
    pub(crate) fn reachable(&self) -> bool {
        self.link.reachable()
    }

    /// What this node's cache holds for `user`, without counting a lookup.
    pub(crate) async fn peek(&self, user: &str) -> Option<Entry> {
        self.cache.peek(user).await
    }

    /// True when answers from the cache may miss recent updates.
    pub(crate) fn stale(&self) -> bool {
        self.link.stale()
    }

    pub(crate) async fn read(&self, user: &UserId) -> Lookup {
        match self.cache.get(user).await {
            Some(entry) => Lookup::Known(entry),
            // Boxed: the miss path's state (a KV read) is large, and kept inline it would be
            // copied with every cache hit's future too (measured: bench/instructions).
            None => Box::pin(self.load(user)).await,
        }
    }

    /// The first half of a multi-user read: every hit in one pass over the cache. The misses,
    /// which cost a KV read each, are loaded by [`Directory::complete`], once the caller has
    /// charged them to the client.
    pub(crate) async fn read_cached(&self, users: Vec<UserId>) -> Partial {
        let cached = self.cache.get_multiple(&users).await;
        let mut entries = Vec::with_capacity(users.len());
        let mut misses = Vec::new();
        for (i, (user, hit)) in users.into_iter().zip(cached).enumerate() {
            match hit {
                Some(entry) => entries.push((user, Lookup::Known(entry))),
                None => {
                    misses.push(i);
                    entries.push((user, Lookup::Degraded));
                }
            }
        }
        Partial { entries, misses }
    }

    /// The second half: the misses, loaded concurrently (at most [`MISS_CONCURRENCY`] at once).
    pub(crate) async fn complete(&self, partial: Partial) -> ManyLookups {
        let Partial { mut entries, misses } = partial;
        let wanted: Vec<(usize, UserId)> = misses.into_iter().map(|i| (i, entries[i].0.clone())).collect();
        let loaded: Vec<(usize, Lookup)> = stream::iter(wanted)
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
    /// Then a leaf looks in its region's copy (the answer is stale, as the link says); without
    /// one, the answer is degraded.
    async fn load(&self, user: &UserId) -> Lookup {
        if !self.link.reachable() {
            return match &self.region {
                Some(copy) => Box::pin(Self::recall(copy, user)).await,
                None => Lookup::Degraded,
            };
        }
        let (store, owned) = (self.store.clone(), user.clone());
        match self.cache.get_or_load(user, async move { store.get(&owned).await }).await {
            Ok(entry) => {
                // Newer than what this node's watchers of the user heard, if the watcher lags.
                self.landing.loaded(user, entry.clone());
                Lookup::Known(entry)
            }
            Err(e) => {
                if !e.downcast_ref::<StoreError>().is_some_and(StoreError::refused) {
                    tracing::warn!(user = %user, error = %chain(e.as_ref()), "KV read failed; answering degraded");
                }
                Lookup::Degraded
            }
        }
    }

    /// A read of the region's copy. Not cached: the watcher resumes from its own position, and
    /// the copy may be ahead of it or behind it.
    async fn recall(copy: &PresenceStore, user: &UserId) -> Lookup {
        match copy.get(user).await {
            // Never written here: the copy does not know the user, which is not "never seen".
            Ok(record) if record.revision == 0 => Lookup::Degraded,
            Ok(record) => Lookup::Known(Arc::new(record)),
            Err(e) => {
                if !e.refused() {
                    tracing::warn!(user = %user, error = %chain(&e), "region's copy read failed; answering degraded");
                }
                Lookup::Degraded
            }
        }
    }

    /// The newest `limit` events of `user`, newest first.
    pub(crate) async fn history(
        &self,
        user: &UserId,
        limit: usize,
    ) -> Result<Vec<PresenceEvent>, WriteError> {
        self.guard()?;
        let events = self.events.history(user, limit).await.inspect_err(|e| {
            tracing::warn!(user = %user, error = %chain(e), "history read failed");
        })?;
        Ok(events)
    }

    /// Refuses at once while NATS is known to be away. (The store's breaker refuses too, once
    /// calls keep failing.)
    fn guard(&self) -> Result<(), WriteError> {
        if !self.link.reachable() {
            return Err(WriteError::Unavailable);
        }
        Ok(())
    }
}
