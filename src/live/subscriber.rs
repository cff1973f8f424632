//! One subscriber's side of the feed: what is waiting for it, coalesced per watched user, so
//! that a client that reads slowly costs memory bounded by its watch list, not by the write rate.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex, OnceLock},
    time::{Duration, Instant},
};

use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use super::change::{Change, ChangeKind};
use crate::model::Status;

/// The node's link as subscribers hear of it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum LinkEvent {
    /// The node lost NATS (or its watcher fell behind): what it sends may be behind.
    Stale,
    /// It is caught up again.
    Fresh,
}

/// Why the node ended a subscription.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Dropped {
    /// Changes waited longer than `stream.write_timeout` for the client to read them.
    Slow,
    /// The client stopped answering pings.
    Dead,
    /// The node is shutting down.
    Shutdown,
    /// The client sent more messages than its budget, a whole burst of them in a row.
    Flooding,
}

impl Dropped {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Dropped::Slow => "slow",
            Dropped::Dead => "dead",
            Dropped::Shutdown => "shutdown",
            Dropped::Flooding => "flooding",
        }
    }
}

/// What a subscriber takes in one go.
#[derive(Debug, Default)]
pub(crate) struct Batch {
    /// In feed order; at most one per user.
    pub changes: Vec<Arc<Change>>,
    pub link: Option<LinkEvent>,
    /// Room messages (JSON), in the order they came.
    pub rooms: Vec<Arc<str>>,
}

impl Batch {
    pub(crate) fn is_empty(&self) -> bool {
        self.changes.is_empty() && self.link.is_none() && self.rooms.is_empty()
    }

    /// The highest sequence number in the batch.
    pub(crate) fn last_seq(&self) -> Option<u64> {
        self.changes.iter().map(|c| c.seq).max()
    }
}

#[derive(Debug, Default)]
struct Pending {
    changes: HashMap<Arc<str>, Arc<Change>>,
    link: Option<LinkEvent>,
    rooms: Vec<Arc<str>>,
    /// When the oldest thing waiting arrived.
    since: Option<Instant>,
}

/// A subscriber, shared between the hub (which fills it) and its connection (which empties it).
#[derive(Debug)]
pub(crate) struct Subscriber {
    pub(crate) id: u64,
    pending: Mutex<Pending>,
    ready: Notify,
    closed: CancellationToken,
    dropped: OnceLock<Dropped>,
}

/// What the snapshot a client received says of one user, for [`Subscriber::prune`].
#[derive(Debug, Clone, Copy)]
pub(crate) struct Seen {
    pub revision: u64,
    pub status: Status,
}

impl Subscriber {
    /// `closed` is cancelled when the node drops a slow client: with the token of the client's
    /// connection, that closes it even while it is stuck writing.
    pub(super) fn new(id: u64, closed: CancellationToken) -> Self {
        Self { id, pending: Mutex::default(), ready: Notify::new(), closed, dropped: OnceLock::new() }
    }

    /// Queues `change`; returns true when it replaced an older change of the same user that the
    /// client had not taken yet.
    pub(super) fn push(&self, change: Arc<Change>) -> bool {
        let replaced = {
            let mut pending = self.pending.lock().expect("subscriber lock");
            pending.since.get_or_insert_with(Instant::now);
            pending.changes.insert(change.user.clone(), change).is_some()
        };
        self.ready.notify_one();
        replaced
    }

    pub(super) fn push_link(&self, event: LinkEvent) {
        {
            let mut pending = self.pending.lock().expect("subscriber lock");
            pending.since.get_or_insert_with(Instant::now);
            pending.link = Some(event);
        }
        self.ready.notify_one();
    }

    /// Queues a room message.
    pub(crate) fn push_room(&self, message: Arc<str>) {
        {
            let mut pending = self.pending.lock().expect("subscriber lock");
            pending.since.get_or_insert_with(Instant::now);
            pending.rooms.push(message);
        }
        self.ready.notify_one();
    }

    /// Forgets what was queued for users no longer watched.
    pub(super) fn retain(&self, watched: impl Fn(&str) -> bool) {
        let mut pending = self.pending.lock().expect("subscriber lock");
        pending.changes.retain(|user, _| watched(user));
        if pending.changes.is_empty() && pending.link.is_none() && pending.rooms.is_empty() {
            pending.since = None;
        }
    }

    /// Drops what the client's snapshot already shows: changes at an older revision, and at the
    /// same revision unless it is an expiry the snapshot did not show yet.
    pub(crate) fn prune(&self, seen: &HashMap<&str, Seen>) {
        let mut pending = self.pending.lock().expect("subscriber lock");
        pending.changes.retain(|user, change| match seen.get(&**user) {
            None => true,
            Some(s) if change.revision > s.revision => true,
            Some(s) if change.revision == s.revision => {
                change.kind == ChangeKind::Expire && s.status != Status::Offline
            }
            Some(_) => false,
        });
        if pending.changes.is_empty() && pending.link.is_none() && pending.rooms.is_empty() {
            pending.since = None;
        }
    }

    /// Everything queued, in feed order.
    pub(crate) fn take(&self) -> Batch {
        let mut pending = self.pending.lock().expect("subscriber lock");
        pending.since = None;
        let mut changes: Vec<_> = pending.changes.drain().map(|(_, c)| c).collect();
        changes.sort_unstable_by_key(|c| c.seq);
        Batch { changes, link: pending.link.take(), rooms: std::mem::take(&mut pending.rooms) }
    }

    /// Waits until something is queued (or the node ended the subscription).
    pub(crate) async fn ready(&self) {
        if self.dropped().is_none() {
            self.ready.notified().await;
        }
    }

    pub(crate) fn dropped(&self) -> Option<Dropped> {
        self.dropped.get().copied()
    }

    /// Ends the subscription for `reason` (the first reason stays). The stream says why and
    /// ends; a client too slow to read even that has its connection closed.
    pub(crate) fn drop_for(&self, reason: Dropped) {
        let _ = self.dropped.set(reason);
        self.ready.notify_one();
        if reason == Dropped::Slow {
            self.closed.cancel();
        }
    }

    /// True when something has waited longer than `limit` for the client.
    pub(super) fn overdue(&self, now: Instant, limit: Duration) -> bool {
        let pending = self.pending.lock().expect("subscriber lock");
        pending.since.is_some_and(|since| now.duration_since(since) > limit)
    }
}
