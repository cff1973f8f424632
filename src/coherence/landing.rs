//! Where a record lands on this node. Every path that learns of a user's record at a revision
//! (this node's writes and erasures, the watcher's changes) hands it to [`Landing::land`], which
//! tells the node's consumers in one order under one revision rule:
//!
//! 1. the expiry schedule (the revision it supersedes taken out, the new one timed),
//! 2. the cache,
//! 3. the live feed.
//!
//! The rule: a record is scheduled and cached only if it is newer than what the cache holds, so a
//! late watcher change never replaces this node's own newer write, and a write the watcher
//! brought first is not scheduled twice. The live feed is told either way; it keeps its own
//! order per user (see [`crate::live::Hub::publish`]), and the watcher's changes fill its resume
//! buffer in revision order. A new consumer of "this node now holds revision R" is added here.

use std::sync::{
    Arc, Mutex,
    atomic::{AtomicUsize, Ordering::SeqCst},
};

use tokio::sync::oneshot;

use crate::{
    cache::{Entry, PresenceCache},
    lifecycle::ExpiryQueue,
    live::{Hub, Source},
    model::{CompactPresence, Record},
};

/// Writes whose outcome was unknown, waiting to be seen landing: the user, the presence written,
/// and who wants the revision it landed at.
type Awaited = Vec<(String, CompactPresence, oneshot::Sender<u64>)>;

/// The node's consumers of records: a cheap `Clone` handle.
#[derive(Clone)]
pub(crate) struct Landing {
    cache: PresenceCache,
    expiry: Arc<ExpiryQueue>,
    hub: Arc<Hub>,
    awaited: Arc<Mutex<Awaited>>,
    /// How many are awaited: a landing looks at the list only when there are some.
    awaiting: Arc<AtomicUsize>,
}

impl Landing {
    pub(crate) fn new(cache: PresenceCache, expiry: Arc<ExpiryQueue>, hub: Arc<Hub>) -> Self {
        Self { cache, expiry, hub, awaited: Arc::default(), awaiting: Arc::default() }
    }

    /// The revision `user`'s record lands at with `presence` (a write whose acknowledgement was
    /// lost), if this node sees it land: every change reaches its watcher, even one overwritten
    /// before anyone looked at the bucket.
    pub(crate) fn await_landing(&self, user: &str, presence: CompactPresence) -> oneshot::Receiver<u64> {
        let (tell, told) = oneshot::channel();
        let mut awaited = self.awaited.lock().expect("awaited lock");
        awaited.retain(|(_, _, tell)| !tell.is_closed());
        awaited.push((user.to_string(), presence, tell));
        self.awaiting.store(awaited.len(), SeqCst);
        told
    }

    /// Tells whoever awaited `record` that it landed.
    fn tell_awaiting(&self, user: &str, record: &Record) {
        let Some(presence) = &record.presence else { return };
        if self.awaiting.load(SeqCst) == 0 {
            return;
        }
        let mut awaited = self.awaited.lock().expect("awaited lock");
        if let Some(i) = awaited.iter().position(|(u, p, _)| u == user && p == presence) {
            let (_, _, tell) = awaited.swap_remove(i);
            let _ = tell.send(record.revision);
        }
        self.awaiting.store(awaited.len(), SeqCst);
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
        self.tell_awaiting(user, &record);
        self.hub.publish(user, before, record, source);
    }

    /// A record a cache miss loaded (the cache admitted it under the same rule): watchers of the
    /// user hear of it now, if it is newer than what they were told, rather than when the
    /// watcher brings it.
    pub(crate) fn loaded(&self, user: &str, entry: Entry) {
        self.hub.publish(user, None, entry, Source::Node);
    }

    /// The bucket was replaced: nothing this node holds can be trusted.
    pub(crate) fn forget_all(&self) {
        self.cache.clear();
        self.hub.reset();
    }
}
