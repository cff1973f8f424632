//! One room as this node knows it: its members (every node's), who is typing, who watches it,
//! and the changes since its last message, sent out together at most once per batch window.

use std::{
    collections::{BTreeMap, HashMap, HashSet, VecDeque},
    sync::Arc,
    time::{Duration, Instant},
};

use super::member::Member;
use crate::live::Subscriber;

/// Public messages a room keeps for streams that resume (`Last-Event-ID`), at most this many bytes.
const LOG_BYTES: usize = 64 * 1024;
/// Count-only watchers (a badge, the members of a large room) hear the count at most this often:
/// a change sent to every member of a room of 10,000 is 10,000 messages.
pub(super) const COUNT_EVERY: Duration = Duration::from_secs(1);
/// A room with more watchers of its members than this batches over a longer window: the batch
/// window times its watchers / this (200 watchers: two windows), at most [`LONGEST_WINDOW`]. A
/// change costs a message per watcher; this keeps what a busy room sends per second bounded.
pub(super) const WATCHERS_PER_WINDOW: usize = 100;
/// The longest a room's window grows.
pub(super) const LONGEST_WINDOW: Duration = Duration::from_secs(1);

/// A connection watching a room.
pub(super) struct Watcher {
    pub subscriber: Arc<Subscriber>,
    /// The user of the connection's session: they see their own devices while invisible.
    pub viewer: Option<Arc<str>>,
    /// False: the count only.
    pub members: bool,
    /// For a watcher that came in the middle of a batch: the users the batch had changed by
    /// then, as its snapshot showed them (its first message starts from there).
    baseline: Option<HashMap<Arc<str>, Before>>,
    /// The count and connections this watcher was last told.
    told: (usize, usize),
}

/// A user's devices in the room when the room's current batch began.
pub(super) struct Before {
    pub members: Vec<Member>,
    pub hidden: bool,
}

#[derive(Default)]
pub(super) struct Room {
    /// user → their devices in the room, by device id.
    pub members: BTreeMap<Arc<str>, Vec<Member>>,
    /// Members hidden from everyone but themselves (invisible).
    pub hidden: HashSet<Arc<str>>,
    /// Devices in the room, and those of hidden members.
    pub connections: usize,
    pub hidden_connections: usize,
    /// Typing users, until when.
    pub typing: HashMap<Arc<str>, Instant>,
    pub watchers: Vec<Watcher>,
    /// How many of them watch the members (not the count only).
    listing: usize,
    /// Users changed since the last message, as they were before.
    pub pending: HashMap<Arc<str>, Before>,
    pub typing_changed: bool,
    /// When count-only watchers were last told the count, and whether a change waits for
    /// [`COUNT_EVERY`] to pass since.
    counts_at: Option<Instant>,
    pub counts_owed: bool,
    pub last_sent: Option<Instant>,
    /// The last public message's number, and the newest public messages (number, JSON).
    pub seq: u64,
    pub log: VecDeque<(u64, Arc<str>)>,
    log_bytes: usize,
}

impl Room {
    /// Whether the room can be forgotten: nobody in it, watching it, or waiting to hear of it.
    pub(super) fn is_idle(&self) -> bool {
        self.members.is_empty()
            && self.watchers.is_empty()
            && self.pending.is_empty()
            && self.typing.is_empty()
    }

    pub(super) fn is_dirty(&self) -> bool {
        !self.pending.is_empty() || self.typing_changed
    }

    /// `user`'s devices in the room are now `devices` (none: they left), hidden or not.
    pub(super) fn set(&mut self, user: &Arc<str>, devices: Vec<Member>, hidden: bool) {
        let was_hidden = self.hidden.contains(user);
        let before = self.members.get(user);
        if before.is_none_or(|b| b.is_empty()) && devices.is_empty() {
            return;
        }
        if before.is_some_and(|b| *b == devices) && was_hidden == hidden {
            return;
        }
        let old = before.cloned().unwrap_or_default();
        self.connections -= old.len();
        if was_hidden {
            self.hidden_connections -= old.len();
        }
        self.pending.entry(user.clone()).or_insert(Before { members: old, hidden: was_hidden });
        self.connections += devices.len();
        if devices.is_empty() {
            self.members.remove(user);
            self.hidden.remove(user);
            if self.typing.remove(user).is_some() {
                self.typing_changed = true;
            }
            return;
        }
        if hidden {
            self.hidden_connections += devices.len();
            self.hidden.insert(user.clone());
        } else {
            self.hidden.remove(user);
        }
        self.members.insert(user.clone(), devices);
    }

    /// `user` is typing (until `until`), or stopped (`None`). Only members type.
    pub(super) fn set_typing(&mut self, user: &str, until: Option<Instant>) {
        let Some((user, _)) = self.members.get_key_value(user) else { return };
        let changed = match until {
            Some(until) => self.typing.insert(user.clone(), until).is_none(),
            None => self.typing.remove(user).is_some(),
        };
        self.typing_changed |= changed;
    }

    /// Ends the typing signals not renewed in time.
    pub(super) fn expire_typing(&mut self, now: Instant) {
        let before = self.typing.len();
        self.typing.retain(|_, until| *until > now);
        self.typing_changed |= self.typing.len() != before;
    }

    /// Adds a watcher, which is about to be shown the room as it is now (`snapshot`), or has
    /// seen every message up to the last one (a stream that resumes).
    pub(super) fn watch(
        &mut self,
        subscriber: &Arc<Subscriber>,
        viewer: Option<Arc<str>>,
        members: bool,
        snapshot: bool,
    ) {
        self.watchers.retain(|w| w.subscriber.id != subscriber.id);
        let baseline = (snapshot && !self.pending.is_empty()).then(|| {
            let now = |user: &Arc<str>| Before {
                members: self.members.get(user).cloned().unwrap_or_default(),
                hidden: self.hidden.contains(user),
            };
            self.pending.keys().map(|user| (user.clone(), now(user))).collect()
        });
        let told = self.counts(viewer.as_deref());
        self.watchers.push(Watcher { subscriber: subscriber.clone(), viewer, members, baseline, told });
        self.listing = self.watchers.iter().filter(|w| w.members).count();
    }

    /// Takes watchers off: `subscriber`'s, and those of connections the node dropped.
    pub(super) fn unwatch(&mut self, subscriber: Option<u64>) {
        self.watchers.retain(|w| Some(w.subscriber.id) != subscriber && w.subscriber.dropped().is_none());
        self.listing = self.watchers.iter().filter(|w| w.members).count();
    }

    /// This room's batch window, given the node's: longer for a room watched by many.
    pub(super) fn window(&self, base: Duration) -> Duration {
        let windows = self.listing.div_ceil(WATCHERS_PER_WINDOW).max(1);
        (base * u32::try_from(windows).unwrap_or(u32::MAX)).min(LONGEST_WINDOW.max(base))
    }

    /// Sends the batch to the watchers and starts the next one: the number of messages queued.
    pub(super) fn flush(&mut self, room: &str, now: Instant) -> usize {
        if !self.is_dirty() {
            return 0;
        }
        let public: Option<Arc<str>> = self.change(room, None, None).map(Arc::from);
        if let Some(message) = &public {
            self.seq += 1;
            self.log_bytes += message.len();
            self.log.push_back((self.seq, message.clone()));
            while self.log_bytes > LOG_BYTES
                && let Some((_, old)) = self.log.pop_front()
            {
                self.log_bytes -= old.len();
            }
        }
        let mut sent = 0;
        self.unwatch(None);
        for watcher in self.watchers.iter().filter(|w| w.members) {
            let viewer = watcher.viewer.as_deref();
            let hidden = viewer
                .is_some_and(|v| self.hidden.contains(v) || self.pending.get(v).is_some_and(|b| b.hidden));
            let message = match hidden || watcher.baseline.is_some() {
                true => self.change(room, viewer, watcher.baseline.as_ref()).map(Arc::from),
                false => public.clone(),
            };
            if let Some(message) = message {
                watcher.subscriber.push_room(message);
                sent += 1;
            }
        }
        for watcher in &mut self.watchers {
            watcher.baseline = None;
        }
        sent += self.tell_counts(room, now);
        self.pending.clear();
        self.typing_changed = false;
        self.last_sent = Some(now);
        sent
    }

    /// Tells each count-only watcher the count, if it differs from what it was last told and
    /// [`COUNT_EVERY`] passed since the room last did; otherwise the room owes it (the
    /// ticker tells it then). The number of messages queued.
    pub(super) fn tell_counts(&mut self, room: &str, now: Instant) -> usize {
        let seen = |w: &Watcher| match w.viewer.as_deref().filter(|v| self.hidden.contains(*v)) {
            Some(viewer) => self.counts(Some(viewer)),
            None => self.counts(None),
        };
        let owed = self.watchers.iter().filter(|w| !w.members).any(|w| w.told != seen(w));
        if !owed || self.counts_at.is_some_and(|at| now < at + COUNT_EVERY) {
            self.counts_owed = owed;
            return 0;
        }
        let counts = self.counts(None);
        let message = |(count, connections): (usize, usize)| -> Arc<str> {
            let text =
                serde_json::json!({"type": "room", "room": room, "count": count, "connections": connections});
            Arc::from(text.to_string())
        };
        let shared = message(counts);
        let mut told = Vec::new();
        for (i, watcher) in self.watchers.iter().enumerate().filter(|(_, w)| !w.members) {
            let now_seen = seen(watcher);
            if now_seen != watcher.told {
                watcher.subscriber.push_room(if now_seen == counts {
                    shared.clone()
                } else {
                    message(now_seen)
                });
                told.push((i, now_seen));
            }
        }
        for &(i, now_seen) in &told {
            self.watchers[i].told = now_seen;
        }
        self.counts_at = Some(now);
        self.counts_owed = false;
        told.len()
    }

    /// When the counts owed may be told.
    pub(super) fn counts_due(&self) -> Option<Instant> {
        self.counts_owed.then(|| self.counts_at.map_or(Instant::now(), |at| at + COUNT_EVERY))
    }

    /// The public messages after `seq`, if the log still holds them all.
    pub(super) fn since(&self, seq: u64) -> Option<Vec<Arc<str>>> {
        let first = self.log.front().map_or(self.seq + 1, |(s, _)| *s);
        if seq > self.seq || seq + 1 < first {
            return None;
        }
        Some(self.log.iter().filter(|(s, _)| *s > seq).map(|(_, m)| m.clone()).collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_room_watched_by_many_batches_over_a_longer_window() {
        let base = Duration::from_millis(50);
        let window = |listing| Room { listing, ..Room::default() }.window(base);
        assert_eq!(window(0), base);
        assert_eq!(window(100), base, "up to 100 watchers: the node's window");
        assert_eq!(window(101), base * 2);
        assert_eq!(window(200), base * 2);
        assert_eq!(window(10_000), LONGEST_WINDOW, "at most a second");
        let slow = Room { listing: 1, ..Room::default() };
        assert_eq!(
            slow.window(Duration::from_secs(2)),
            Duration::from_secs(2),
            "never shorter than the node's"
        );
    }
}
