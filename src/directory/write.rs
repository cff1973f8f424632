//! The write side of the directory: a client's write, a session's change and a leaf's write
//! carried out here all end the same way. Once JetStream acknowledged the record, it lands on
//! this node (expiry schedule, cache, live feed: [`crate::coherence::Landing`]) and its update
//! event is stored in the audit log, both before the answer goes out. Erasure removes the record
//! with its history, then the user's events.

use std::{sync::Arc, time::Duration};

use chrono::Utc;

use super::{
    Directory, WriteError,
    forward::{self, Forwarded},
};
use crate::{
    cache::Entry,
    coherence::Follow,
    lifecycle::{EventKind, PresenceEvent, events::RETRY_FOR},
    live::Source,
    model::{CompactPresence, PresenceUpdate, Record, StoredPresence, UserId, same_view},
    nats::retry_for,
    store::StoreError,
    telemetry::{chain, metrics::OutcomeLabels},
};

/// How long a write whose outcome was unknown is followed up, to publish its event if it landed.
const SETTLE_FOR: Duration = Duration::from_secs(30);
/// How long a write's follow-up, finding the key overwritten, waits for this node's watcher to
/// say whether the write landed before that.
const LANDED_WITHIN: Duration = Duration::from_secs(5);
/// When an erasure looks once more for events stored late: after the background retries of an
/// event's store have given up.
const SWEEP_AFTER: Duration = Duration::from_secs(RETRY_FOR.as_secs() + 10);
/// How long a write's erasure check waits for this node's watcher before asking the leader.
const WATCHER_WAIT: Duration = Duration::from_millis(500);

/// A write as stored, at its revision, and as this node now holds it.
pub(crate) struct Written {
    pub stored: StoredPresence,
    pub revision: u64,
    pub presence: CompactPresence,
}

/// Who made a change, and at which node.
type Made<'a> = (&'a str, &'a str);

impl Directory {
    /// Stores `user`'s own `update` (`token` is theirs, checked already) and returns what was
    /// stored, once JetStream acknowledged it. A leaf has the center carry it out (one round trip
    /// over the link instead of two; the center checks the token again; see [`forward`]), and
    /// writes through the link itself when no center node takes it.
    pub(crate) async fn write(
        &self,
        user: &UserId,
        update: PresenceUpdate,
        token: &str,
    ) -> Result<CompactPresence, WriteError> {
        self.guard()?;
        if let Some(to) = &self.forward {
            let sent = forward::send(&to.client, to.limit, (user, &update, token, &self.node_id)).await;
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
                    // The center announced it; this node only holds it (read-your-writes).
                    let presence = CompactPresence::from(&stored);
                    let record = Arc::new(Record { revision, presence: Some(presence.clone()) });
                    self.landing.land(user, record, Source::Node).await;
                    return Ok(presence);
                }
                Forwarded::NoCenter => {}
            }
        }
        let written = self.carry_out(user, update, user, &self.node_id).await?;
        self.metrics.updates.inc();
        Ok(written.presence)
    }

    /// A change of `user`'s record made by this node on behalf of `actor` (a session's
    /// transition, the sessions of a dead node ended): `change` makes the new record from the
    /// current one (`None`: nothing to write; then no KV call is made if the cache is current).
    /// What follows a write follows. True if something was written.
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
        self.finish(user, &stored, revision, previous, (actor, &self.node_id)).await;
        Ok(true)
    }

    /// Writes `update` by `actor`, made at `node_id` (this node, or a leaf whose write a center
    /// node carries out), and stores its event: what was written, once JetStream acknowledged
    /// both.
    ///
    /// A write whose acknowledgement was lost is looked up once: if the bucket holds it, it
    /// succeeded. Otherwise its outcome is unknown (the answer says so; repeating it is safe),
    /// and it is followed up in the background so that, if it did land, its event is published.
    pub(super) async fn carry_out(
        &self,
        user: &UserId,
        update: PresenceUpdate,
        actor: &str,
        node_id: &str,
    ) -> Result<Written, WriteError> {
        self.guard()?;
        let previous = self.cache.peek(user).await;
        // From before the write is sent: it may land unacknowledged, and be overwritten at once.
        let follow = self.landing.follow(user);
        let (stored, revision) = match self.store.write(user, update, node_id, previous.as_deref()).await {
            Ok(done) => done,
            Err(StoreError::Unconfirmed { record, .. }) if crate::planted::planted("unconfirmed-200") => {
                let presence = CompactPresence::from(&*record);
                return Ok(Written { stored: *record, revision: 0, presence });
            }
            Err(StoreError::Unconfirmed { record, source }) => match self.store.holds(user, &record).await {
                Ok(Some(revision)) => (*record, revision),
                _ => {
                    tracing::warn!(user = %user, error = %chain(&source), "write not acknowledged; its outcome is unknown");
                    let made = (actor.to_string(), node_id.to_string());
                    tokio::spawn(self.clone().settle(user.clone(), *record, (previous, follow), made));
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
        drop(follow);
        let presence = self.finish(user, &stored, revision, previous, (actor, node_id)).await;
        Ok(Written { stored, revision, presence })
    }

    /// What follows a write JetStream holds: the record lands on this node, and its update event
    /// is stored in the audit log. `previous` is the record the write was made from.
    async fn finish(
        &self,
        user: &UserId,
        stored: &StoredPresence,
        revision: u64,
        previous: Option<Entry>,
        (actor, node_id): Made<'_>,
    ) -> CompactPresence {
        let presence = CompactPresence::from(stored);
        let record = Arc::new(Record { revision, presence: Some(presence.clone()) });
        if !crate::planted::planted("no-cache-before-200") {
            self.landing.land(user, record, Source::Node).await;
        }
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
        // (An erasure that purged the record after this write may have swept the audit log before
        // this event was stored: then the event goes too, the erasure came after the write.)
        let id = format!("update-{user}-{revision}");
        self.events.publish_unless(&event, id, user, async || self.erased_since(user, revision).await).await;
        presence
    }

    /// Whether `user`'s record was purged or deleted after `revision`, as the bucket stands at a
    /// moment after now: this node's watcher, once it applied a revision the stream's leader gave
    /// after now (one request for the writes that ask meanwhile), has the record's latest change
    /// in the cache, which the write's own landing put there. Asked of the leader itself when the
    /// cache cannot say (the entry evicted, the watcher slow or rebuilding, no answer).
    async fn erased_since(&self, user: &UserId, revision: u64) -> bool {
        if let Some(after_now) = self.store.revision_after_now().await
            && self.link.applied_reaches(after_now, WATCHER_WAIT).await
            && let Some(latest) = self.cache.peek(user).await
            && latest.revision >= revision
        {
            return latest.revision > revision && latest.presence.is_none();
        }
        self.store.erased_since(user, revision).await.unwrap_or(false)
    }

    /// Follows up a write whose outcome was unknown until the bucket says whether it holds it
    /// (at most [`SETTLE_FOR`]). If it does, the write is completed as if acknowledged: the event
    /// and the pair (KV record, event) stay consistent. If the key holds something else, the
    /// write never landed or was overwritten since, and there is nothing to announce.
    async fn settle(
        self,
        user: UserId,
        record: StoredPresence,
        (previous, follow): (Option<Entry>, Follow),
        (actor, node_id): (String, String),
    ) {
        let revision = match retry_for(SETTLE_FOR, || self.store.holds(&user, &record)).await {
            Some(Some(revision)) => revision,
            // The key holds something else: the write never landed, or it landed and was
            // overwritten before this looked. This node's watcher sees every change: if it saw
            // the write land since it was sent (or does within a moment: it may be behind the
            // bucket), it landed.
            Some(None) => match follow.landed(&CompactPresence::from(&record), LANDED_WITHIN).await {
                Some(revision) => revision,
                None => return,
            },
            None => {
                tracing::warn!(user = %user, "the outcome of an unacknowledged write never became known");
                return;
            }
        };
        tracing::info!(user = %user, revision, "a write whose acknowledgement was lost did land");
        self.metrics.updates.inc();
        self.finish(&user, &record, revision, previous, (&actor, &node_id)).await;
    }

    /// Erases `user` (`token` is theirs, checked already): the KV record with its history, then
    /// their events in the audit log. A leaf has a center node carry it out, which checks the
    /// token again (see [`forward`]).
    pub(crate) async fn erase(&self, user: &UserId, token: &str) -> Result<(), WriteError> {
        self.guard()?;
        let revision = match &self.forward {
            Some(to) => forward::send_erasure(&to.client, to.limit, user, token).await,
            None => self.erase_here(user).await,
        }
        .inspect_err(|e| tracing::warn!(user = %user, error = %chain(e), "erasure failed"))?;
        // A tombstone at the purge's revision: no older load or watched change can bring the
        // user back into this node's cache.
        self.landing.land(user, Arc::new(Record { revision, presence: None }), Source::Node).await;
        Ok(())
    }

    /// Erases `user` through this node's own link: the revision of the bucket's tombstone.
    ///
    /// A write racing the erasure ends wholly before it (record and event both gone) or wholly
    /// after it (both kept), never half of each: (1) the audit log's last sequence `S`, before
    /// anything is removed; (2) the purge of the record, a marker at revision `k`; (3) the
    /// erasure's marker in the audit log; (4) the user's events up to `S`, every one of a change
    /// older than `k`; (5) the user's events after `S` of changes older than `k` (a write that
    /// landed before the purge and stored its event after step 1). A write's event sent after
    /// step 3 is refused (it was sent on condition of no marker), stored without the condition,
    /// and then the write finds the purge and removes its event itself ([`Directory::finish`]);
    /// an event whose store was retried in the background is caught by step 5 run once more,
    /// [`SWEEP_AFTER`] later.
    pub(super) async fn erase_here(&self, user: &UserId) -> Result<u64, WriteError> {
        self.guard()?;
        // A start-up landing its cache's snapshot lands it first (coherence::restore).
        self.link.restored().await;
        let before = self.events.last_sequence().await?;
        let revision = self.store.purge(user).await?;
        if !crate::planted::planted("erasure-unmarked") {
            self.events.mark(user, revision).await?;
        }
        let mut events = self.events.erase_through(user, before).await?;
        events += self.events.erase_older(user, before, revision).await?;
        events += self.events.erase_notices(user).await?;
        tokio::spawn(self.clone().sweep_later(user.clone(), before, revision));
        let (subject, id, body) = crate::lifecycle::erased_notice(user, revision, &self.node_id);
        let notices = self.events.clone();
        tokio::spawn(async move { notices.notice(subject, id, body).await });
        tracing::info!(user = %user, events, "erased");
        Ok(revision)
    }

    /// Step 5 of an erasure once more, for events stored late.
    async fn sweep_later(self, user: UserId, after: u64, revision: u64) {
        tokio::time::sleep(SWEEP_AFTER).await;
        match retry_for(SETTLE_FOR, || self.events.erase_older(&user, after, revision)).await {
            Some(0) => {}
            Some(late) => tracing::info!(user = %user, late, "late events of an erased user removed"),
            None => tracing::warn!(user = %user, "events stored late for an erased user may remain"),
        }
    }
}
