//! One room as this node knows it: its members (every node's), who is typing, who watches it,
//! and the changes since its last message, sent out together at most once per batch window.

use std::{
    collections::{BTreeMap, HashMap, HashSet, VecDeque},
    sync::Arc,
    time::Instant,
};

use serde::Serialize;

use super::member::{Member, diff};
use crate::live::Subscriber;

/// Public messages a room keeps for streams that resume (`Last-Event-ID`), at most this many bytes.
const LOG_BYTES: usize = 64 * 1024;

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
struct Before {
    members: Vec<Member>,
    hidden: bool,
}

#[derive(Default)]
pub(super) struct Room {
    /// user → their devices in the room, by device id.
    pub members: BTreeMap<Arc<str>, Vec<Member>>,
    /// Members hidden from everyone but themselves (invisible).
    pub hidden: HashSet<Arc<str>>,
    /// Devices in the room, and those of hidden members.
    connections: usize,
    hidden_connections: usize,
    /// Typing users, until when.
    pub typing: HashMap<Arc<str>, Instant>,
    pub watchers: Vec<Watcher>,
    /// Users changed since the last message, as they were before.
    pending: HashMap<Arc<str>, Before>,
    typing_changed: bool,
    pub last_sent: Option<Instant>,
    /// The last public message's number, and the newest public messages (number, JSON).
    pub seq: u64,
    pub log: VecDeque<(u64, Arc<str>)>,
    log_bytes: usize,
}

/// What a viewer sees of one user across a batch: their devices before and after.
type Seen<'a> = (&'a [Member], &'a [Member]);

#[derive(Serialize)]
struct Change<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    room: &'a str,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    joins: BTreeMap<&'a str, Vec<&'a Member>>,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    updates: BTreeMap<&'a str, Vec<&'a Member>>,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    leaves: BTreeMap<&'a str, Vec<&'a Member>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    typing: Option<Vec<&'a str>>,
    count: usize,
    connections: usize,
}

#[derive(Serialize)]
pub(super) struct Snapshot<'a> {
    #[serde(rename = "type", skip_serializing_if = "Option::is_none")]
    pub kind: Option<&'static str>,
    pub room: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub members: Option<BTreeMap<&'a str, &'a [Member]>>,
    pub count: usize,
    pub connections: usize,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub truncated: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub typing: Option<Vec<&'a str>>,
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
    }

    /// Count and connections as `viewer` sees them: hidden members but themselves left out.
    fn counts(&self, viewer: Option<&str>) -> (usize, usize) {
        let (mut count, mut connections) =
            (self.members.len() - self.hidden.len(), self.connections - self.hidden_connections);
        if let Some(own) = viewer.filter(|v| self.hidden.contains(*v)).and_then(|v| self.members.get(v)) {
            count += 1;
            connections += own.len();
        }
        (count, connections)
    }

    fn visible(&self, user: &str, viewer: Option<&str>) -> bool {
        !self.hidden.contains(user) || viewer == Some(user)
    }

    fn typing_list(&self, viewer: Option<&str>) -> Vec<&str> {
        let mut list: Vec<&str> =
            self.typing.keys().map(|u| &**u).filter(|u| self.visible(u, viewer)).collect();
        list.sort_unstable();
        list
    }

    /// The room as `viewer` sees it now (`members`: listed, up to `max_listed` users).
    pub(super) fn snapshot<'a>(
        &'a self,
        room: &'a str,
        viewer: Option<&str>,
        (kind, members, max_listed): (Option<&'static str>, bool, usize),
    ) -> Snapshot<'a> {
        let (count, connections) = self.counts(viewer);
        let listed = members.then(|| {
            let visible = self.members.iter().filter(|(u, _)| self.visible(u, viewer));
            visible.take(max_listed).map(|(u, d)| (&**u, &d[..])).collect::<BTreeMap<_, _>>()
        });
        let truncated = listed.as_ref().map(|l| l.len() < count);
        let typing = members.then(|| self.typing_list(viewer));
        Snapshot { kind, room, members: listed, count, connections, truncated, typing }
    }

    /// The batch as `viewer` sees it (from `baseline` for the users in it), as a `room` message;
    /// `None` if it shows them nothing.
    fn change(
        &self,
        room: &str,
        viewer: Option<&str>,
        baseline: Option<&HashMap<Arc<str>, Before>>,
    ) -> Option<String> {
        let empty: &[Member] = &[];
        let mut message = Change {
            kind: "room",
            room,
            joins: BTreeMap::new(),
            updates: BTreeMap::new(),
            leaves: BTreeMap::new(),
            typing: self.typing_changed.then(|| self.typing_list(viewer)),
            count: 0,
            connections: 0,
        };
        for (user, before) in &self.pending {
            let before = baseline.and_then(|b| b.get(user)).unwrap_or(before);
            let own = viewer == Some(&**user);
            let after = self.members.get(user).map_or(empty, |m| &m[..]);
            let seen: Seen<'_> = (
                if before.hidden && !own { empty } else { &before.members },
                if self.hidden.contains(user) && !own { empty } else { after },
            );
            let (mut j, mut u, mut l) = (Vec::new(), Vec::new(), Vec::new());
            diff(seen.0, seen.1, (&mut j, &mut u, &mut l));
            for (group, list) in
                [(&mut message.joins, j), (&mut message.updates, u), (&mut message.leaves, l)]
            {
                if !list.is_empty() {
                    group.insert(&**user, list);
                }
            }
        }
        let quiet = message.joins.is_empty() && message.updates.is_empty() && message.leaves.is_empty();
        if quiet && message.typing.is_none() {
            return None;
        }
        (message.count, message.connections) = self.counts(viewer);
        Some(serde_json::to_string(&message).expect("a room change serializes"))
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
        let counts = self.counts(None);
        let counts_message = |(count, connections): (usize, usize)| -> Arc<str> {
            let text =
                serde_json::json!({"type": "room", "room": room, "count": count, "connections": connections});
            Arc::from(text.to_string())
        };
        let mut shared_counts: Option<Arc<str>> = None;
        let mut told = Vec::new();
        let mut sent = 0;
        self.watchers.retain(|w| w.subscriber.dropped().is_none());
        for (i, watcher) in self.watchers.iter().enumerate() {
            let viewer = watcher.viewer.as_deref();
            let hidden = viewer
                .is_some_and(|v| self.hidden.contains(v) || self.pending.get(v).is_some_and(|b| b.hidden));
            let message = match watcher.members {
                // The count only, when it differs from what this watcher was last told.
                false => {
                    let seen = if hidden { self.counts(viewer) } else { counts };
                    told.push((i, seen));
                    match (seen == watcher.told, seen == counts) {
                        (true, _) => None,
                        (false, true) => {
                            Some(shared_counts.get_or_insert_with(|| counts_message(counts)).clone())
                        }
                        (false, false) => Some(counts_message(seen)),
                    }
                }
                true if hidden || watcher.baseline.is_some() => {
                    self.change(room, viewer, watcher.baseline.as_ref()).map(Arc::from)
                }
                true => public.clone(),
            };
            if let Some(message) = message {
                watcher.subscriber.push_room(message);
                sent += 1;
            }
        }
        for watcher in &mut self.watchers {
            watcher.baseline = None;
        }
        for (i, seen) in told {
            self.watchers[i].told = seen;
        }
        self.pending.clear();
        self.typing_changed = false;
        self.last_sent = Some(now);
        sent
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
