//! The read and write paths: cache first, the store behind it, and what happens when NATS is
//! away. See docs/architecture.md, "A read" and "A write".
//!
//! - A read is answered from the cache when it can. A miss costs one KV read, shared by all
//!   concurrent readers of that user (single flight). Multi-user reads answer the hits in one
//!   pass and fetch the misses concurrently, at most [`MISS_CONCURRENCY`] at a time.
//! - When NATS is unreachable (or the circuit breaker is open), cached entries are still served,
//!   marked stale while the watcher may have missed updates; misses are answered as degraded
//!   (`offline` at the edge) without waiting for a timeout.
//! - A write goes to the store and, once acknowledged, into this node's cache and expiry schedule
//!   before the answer goes out (read-your-writes), and its update event is published. While NATS
//!   is unreachable it fails at once. A leaf has a center node carry its writes out
//!   ([`forward`]): one round trip over the link.
//! - A leaf whose center is away reads a miss from its region's copy of the bucket.
//! - Erasure removes the KV record with its history, then the user's events from the audit log.
//!   Every write's event is stored before its 200, so nothing a client was told about outlives
//!   an erasure that came after.

use std::{sync::Arc, time::Duration};

use chrono::Utc;
use forward::Forwarded;
use futures::{StreamExt, stream};

use crate::{
    cache::PresenceCache,
    lifecycle::{EventError, EventKind, Events, ExpiryQueue, PresenceEvent},
    link::LinkState,
    live::{Hub, Source},
    model::{CompactPresence, PresenceUpdate, Record, StoredPresence, UserId, same_view},
    nats::retry_for,
    store::{PresenceStore, StoreError},
    telemetry::{Metrics, chain, metrics::OutcomeLabels},
};

pub(crate) mod forward;

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
}

/// How long a write whose outcome was unknown is followed up, to publish its event if it landed.
const SETTLE_FOR: Duration = Duration::from_secs(30);

/// A write as stored, at its revision, and as this node now holds it.
pub(crate) struct Written {
    pub stored: StoredPresence,
    pub revision: u64,
    pub presence: CompactPresence,
}

/// A leaf's way to the center's write path.
#[derive(Clone)]
pub(crate) struct Forwarding {
    pub client: async_nats::Client,
    /// How long a forwarded write may take: the center's KV write and its event, each bounded
    /// by `nats.request_timeout`.
    pub limit: Duration,
}

/// The read and write paths of one node: a cheap `Clone` handle.
#[derive(Clone)]
pub(crate) struct Directory {
    pub store: PresenceStore,
    /// A leaf's copy of the bucket, read on a miss while the center is away.
    pub region: Option<PresenceStore>,
    /// On a leaf: where its writes go to be carried out by the center.
    pub forward: Option<Forwarding>,
    pub cache: PresenceCache,
    pub link: Arc<LinkState>,
    pub events: Events,
    pub expiry: Arc<ExpiryQueue>,
    pub hub: Arc<Hub>,
    pub metrics: Arc<Metrics>,
    pub node_id: String,
}

impl Directory {
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
                self.hub.publish(user, None, entry.clone(), Source::Node);
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

    /// Stores `update` by `actor` and returns what was stored, once JetStream acknowledged it.
    /// A leaf has the center carry it out (one round trip over the link instead of two; see
    /// [`forward`]), and writes through the link itself when no center node takes it.
    pub(crate) async fn write(
        &self,
        user: &UserId,
        update: PresenceUpdate,
        actor: &str,
    ) -> Result<CompactPresence, WriteError> {
        self.guard()?;
        if let Some(to) = &self.forward {
            let previous = self.cache.peek(user).await;
            let sent = forward::send(&to.client, to.limit, (user, &update, actor, &self.node_id)).await;
            let outcome = match &sent {
                Ok(Forwarded::Stored(..)) => "stored",
                Ok(Forwarded::NoCenter) => "no_center",
                Err(_) => "failed",
            };
            self.metrics.writes_forwarded.get_or_create(&OutcomeLabels { outcome }).inc();
            match sent
                .inspect_err(|e| tracing::warn!(user = %user, error = %chain(e), "forwarded write failed"))?
            {
                Forwarded::Stored(stored, revision) => {
                    self.metrics.updates.inc();
                    return Ok(self.remember(user, &stored, revision, previous).await);
                }
                Forwarded::NoCenter => {}
            }
        }
        let written = self.apply(user, update, actor, &self.node_id).await?;
        self.metrics.updates.inc();
        Ok(written.presence)
    }

    /// A change of `user`'s record made by this node on behalf of `actor` (a session's
    /// transition, the sessions of a dead node ended): `change` makes the new record from the
    /// current one (`None`: nothing to write; then no KV call is made if the cache is current).
    /// What follows a write follows: cache, live feed, and an event if others see a change.
    /// True if something was written.
    pub(crate) async fn modify(
        &self,
        user: &UserId,
        actor: &str,
        change: impl FnMut(Option<&StoredPresence>) -> Option<StoredPresence>,
    ) -> Result<bool, WriteError> {
        self.guard()?;
        let previous = self.cache.peek(user).await;
        let Some((stored, revision)) = self.store.modify(user, previous.as_deref(), change).await? else {
            return Ok(false);
        };
        self.stored(user, &stored, revision, previous, (actor, &self.node_id)).await;
        Ok(true)
    }

    /// Writes `update` by `actor`, made at `node_id`, and stores its event: what was written,
    /// once JetStream acknowledged both.
    ///
    /// A write whose acknowledgement was lost is looked up once: if the bucket holds it, it
    /// succeeded. Otherwise its outcome is unknown (the answer says so; repeating it is safe),
    /// and it is followed up in the background so that, if it did land, its event is published.
    pub(crate) async fn apply(
        &self,
        user: &UserId,
        update: PresenceUpdate,
        actor: &str,
        node_id: &str,
    ) -> Result<Written, WriteError> {
        self.guard()?;
        let previous = self.cache.peek(user).await;
        let (stored, revision) = match self.store.write(user, update, node_id, previous.as_deref()).await {
            Ok(done) => done,
            Err(StoreError::Unconfirmed { record, source }) => match self.store.holds(user, &record).await {
                Ok(Some(revision)) => (*record, revision),
                _ => {
                    tracing::warn!(user = %user, error = %chain(&source), "write not acknowledged; its outcome is unknown");
                    let made = (actor.to_string(), node_id.to_string());
                    tokio::spawn(self.clone().settle(user.clone(), *record, previous, made));
                    return Err(WriteError::Unconfirmed(source));
                }
            },
            Err(e) => {
                if !e.refused() {
                    tracing::warn!(user = %user, error = %chain(&e), "write failed");
                }
                return Err(e.into());
            }
        };
        let presence = self.stored(user, &stored, revision, previous, (actor, node_id)).await;
        Ok(Written { stored, revision, presence })
    }

    /// What follows a write JetStream holds: this node's cache and expiry schedule, and the
    /// update event, stored in the audit log.
    async fn stored(
        &self,
        user: &UserId,
        stored: &StoredPresence,
        revision: u64,
        previous: Option<Arc<Record>>,
        (actor, node_id): (&str, &str),
    ) -> CompactPresence {
        let presence = self.remember(user, stored, revision, previous.clone()).await;
        let now = Utc::now();
        let before = previous.as_ref().map(|e| e.presence.as_ref());
        if before.is_some_and(|before| same_view(user, before, Some(&presence), now)) {
            // To everyone but the user nothing changed (a write while invisible): no event.
            return presence;
        }
        let previous_status = before.flatten().map(|p| p.shown_status(now));
        let event = PresenceEvent {
            kind: EventKind::Update,
            user_id: user.to_string(),
            presence: presence.view(user, now).into_owned(),
            previous_status,
            revision,
            node_id: node_id.to_string(),
            actor: actor.to_string(),
            timestamp: now,
        };
        // Stored before the answer goes out: a 200 means the record and its event are both in
        // JetStream, so an erasure that follows finds and removes both.
        self.events.publish(&event, format!("update-{user}-{revision}")).await;
        presence
    }

    /// A stored write into this node's expiry schedule, cache and live feed (read-your-writes).
    async fn remember(
        &self,
        user: &UserId,
        stored: &StoredPresence,
        revision: u64,
        previous: Option<Arc<Record>>,
    ) -> CompactPresence {
        let presence = CompactPresence::from(stored);
        self.expiry.replace(previous.as_deref(), revision, Some(&presence));
        let entry = self.cache.upsert(user, Record { revision, presence: Some(presence.clone()) }).await;
        self.hub.publish(user, previous.as_deref(), entry, Source::Node);
        presence
    }

    /// Follows up a write whose outcome was unknown until the bucket says whether it holds it
    /// (at most [`SETTLE_FOR`]). If it does, the write is completed as if acknowledged: the event
    /// and the pair (KV record, event) stay consistent. If the key holds something else, the
    /// write never landed or was overwritten since, and there is nothing to announce.
    async fn settle(
        self,
        user: UserId,
        record: StoredPresence,
        previous: Option<Arc<Record>>,
        (actor, node_id): (String, String),
    ) {
        match retry_for(SETTLE_FOR, || self.store.holds(&user, &record)).await {
            Some(Some(revision)) => {
                tracing::info!(user = %user, revision, "a write whose acknowledgement was lost did land");
                self.metrics.updates.inc();
                self.stored(&user, &record, revision, previous, (&actor, &node_id)).await;
            }
            // The key holds something else: the write never landed, or was overwritten since.
            Some(None) => {}
            None => tracing::warn!(user = %user, "the outcome of an unacknowledged write never became known"),
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

    /// Erases `user`: the KV record with its history, then their events in the audit log.
    pub(crate) async fn erase(&self, user: &UserId) -> Result<(), WriteError> {
        self.guard()?;
        let erased = async {
            // The record first: from then on no node serves the user, then the audit log.
            self.store.purge(user).await?;
            let events = self.events.erase(user).await?;
            // A tombstone at the purge's revision: no older load or watched change can bring the
            // user back into this node's cache.
            let previous = self.cache.peek(user).await;
            let tombstone = self.store.get(user).await?;
            self.expiry.replace(previous.as_deref(), tombstone.revision, tombstone.presence.as_ref());
            let entry = self.cache.upsert(user, tombstone).await;
            self.hub.publish(user, previous.as_deref(), entry, Source::Node);
            Ok::<_, WriteError>(events)
        };
        let events = erased.await.inspect_err(|e| {
            tracing::warn!(user = %user, error = %chain(e), "erasure failed");
        })?;
        tracing::info!(user = %user, events, "erased");
        Ok(())
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
