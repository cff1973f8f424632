//! Where a record lands on this node. Every path that learns of a user's record at a revision
//! (this node's writes and erasures, the watcher's changes) hands it to [`Landing::land`], which
//! tells the node's consumers in one order under one revision rule:
//!
//! 1. the expiry schedule (the revision it supersedes taken out, the new one timed),
//! 2. the cache,
//! 3. the live feed,
//! 4. the rooms (which keep their own order by revision).
//!
//! The rule: a record is scheduled and cached only if it is newer than what the cache holds, so a
//! late watcher change never replaces this node's own newer write, and a write the watcher
//! brought first is not scheduled twice. The live feed is told either way; it keeps its own
//! order per user (see [`crate::live::Hub::publish`]), and the watcher's changes fill its resume
//! buffer in revision order. A new consumer of "this node now holds revision R" is added here.

use std::sync::Arc;

use super::follow::{Follow, Followers};
use crate::{
    cache::{Entry, PresenceCache},
    lifecycle::ExpiryQueue,
    live::{Hub, Source},
    rooms::Rooms,
};

/// The node's consumers of records: a cheap `Clone` handle.
#[derive(Clone)]
pub(crate) struct Landing {
    cache: PresenceCache,
    expiry: Arc<ExpiryQueue>,
    hub: Arc<Hub>,
    rooms: Arc<Rooms>,
    /// Writes on their way, following their users' landings.
    followers: Arc<Followers>,
}

impl Landing {
    pub(crate) fn new(
        cache: PresenceCache,
        expiry: Arc<ExpiryQueue>,
        (hub, rooms): (Arc<Hub>, Arc<Rooms>),
    ) -> Self {
        Self { cache, expiry, hub, rooms, followers: Arc::default() }
    }

    /// Follows `user`'s landings from now until the [`Follow`] is dropped: a write takes one
    /// before it is sent, so that if its acknowledgement is lost it can still learn whether (and
    /// at which revision) it landed: every change reaches this node's watcher, even one
    /// overwritten before anyone looked at the bucket.
    pub(crate) fn follow(&self, user: &str) -> Follow {
        self.followers.follow(user)
    }

    /// `record` is `user`'s at its revision, as `source` learned it.
    pub(crate) async fn land(&self, user: &str, record: Entry, source: Source) {
        let previous = self.cache.peek(user).await;
        let before = previous.as_deref().filter(|p| p.revision < record.revision);
        if crate::planted::planted("stale-watcher") && source == Source::Watcher && before.is_none() {
            self.cache.force(user, record.clone()).await;
        }
        if previous.is_none() || before.is_some() {
            self.expiry.replace(before, record.revision, record.presence.as_ref());
            // The cache checks the revision again under its own lock: a concurrent newer record
            // that got there first stays.
            self.cache.upsert(user, record.clone()).await;
        }
        self.followers.landed(user, &record);
        self.rooms.landed(user, &record);
        self.hub.publish(user, before, record, source);
    }

    /// A record a cache miss loaded (the cache admitted it under the same rule): watchers of the
    /// user hear of it now, if it is newer than what they were told, rather than when the
    /// watcher brings it.
    pub(crate) fn loaded(&self, user: &str, entry: Entry) {
        self.hub.publish(user, None, entry, Source::Node);
    }

    /// About `records` are about to land (a start-up's replay): room is made for them at once.
    pub(crate) fn expect(&self, records: u64) {
        self.cache.reserve(records);
    }

    /// `records` of the node's snapshot landed, for `/health/cache` to say.
    pub(crate) fn restored(&self, records: u64) {
        self.cache.count_restored(records);
    }

    /// The bucket was replaced: nothing this node holds can be trusted.
    pub(crate) fn forget_all(&self) {
        self.cache.clear();
        self.hub.reset();
        self.rooms.forget_records();
    }
}
