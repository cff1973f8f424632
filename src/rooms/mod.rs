//! Rooms: who is in a room right now, on which devices, with what `meta`, and who is typing
//! (docs/rooms.md, "Rooms"; docs/architecture.md, "Rooms").
//!
//! A membership is part of a device's session: the sessions table keeps which rooms each
//! device joined, and the user's record carries them (`devices.{device}.rooms`) to every node.
//! So a room needs no storage of its own, and its members come and go by the sessions' rules:
//! a close frame leaves at once, a broken connection after the grace, a dead node's devices when
//! it is taken for dead, and a reconnect within the grace shows nobody anything.
//!
//! This index is each node's view of every room, fed from two sides: each user's record as it
//! lands ([`Rooms::landed`]: the devices at other nodes), and this node's sessions
//! ([`Rooms::local`]: its own devices, ahead of their record, so that a join shows here at once
//! and a leaf cut off from its center keeps its rooms working). A room's changes go to its
//! watchers (live subscribers) together, at most once per `stream.batch_window`: the first
//! change of a quiet room at once. Typing is a signal, never stored: NATS core messages on
//! `presence.typing.{room}`, each node ending a signal not renewed within `rooms.typing_ttl`.

mod member;
mod occupancy;
mod render;
mod room;
mod typing;
mod watch;

use std::{
    collections::{HashMap, HashSet},
    sync::{Arc, Mutex, MutexGuard},
    time::{Duration, Instant},
};

use chrono::Utc;
use tokio::sync::mpsc;

use member::{Memberships, in_any_room, memberships};
pub(crate) use occupancy::{Change, Notice, Occupancy};
use room::Room;
pub(crate) use typing::Signal;

use crate::{
    config::RoomsConfig,
    model::{Held, Record, Status, room_matches},
    telemetry::{Metrics, metrics::KindLabels},
};

/// The rooms this node knows of: one per node.
pub(crate) struct Rooms {
    state: Mutex<State>,
    node: Arc<str>,
    settings: RoomsConfig,
    window: Duration,
    /// Names this run of the node in stream cursors.
    epoch: String,
    metrics: Arc<Metrics>,
    /// Typing signals of this node's clients, for the other nodes.
    signals: mpsc::UnboundedSender<Signal>,
    outgoing: Mutex<Option<mpsc::UnboundedReceiver<Signal>>>,
}

#[derive(Default)]
struct State {
    users: HashMap<Arc<str>, UserState>,
    rooms: HashMap<Arc<str>, Room>,
    /// Rooms whose changes wait for their batch window.
    due: HashSet<Arc<str>>,
    /// Rooms that owe their count-only watchers the count.
    counting: HashSet<Arc<str>>,
}

/// What the index knows of a user in any room: their record, the sessions held here.
#[derive(Default)]
struct UserState {
    record: Option<Arc<Record>>,
    local: Vec<Held>,
}

impl UserState {
    fn hidden(&self) -> bool {
        let presence = self.record.as_ref().and_then(|r| r.presence.as_ref());
        presence.is_some_and(|p| p.status == Status::Invisible && !p.is_expired(Utc::now()))
    }

    fn memberships(&self, me: &str) -> Memberships {
        memberships(self.record.as_ref().and_then(|r| r.presence.as_ref()), &self.local, me)
    }

    /// Whether it is worth keeping: any room, here or in the record.
    fn in_any_room(&self) -> bool {
        self.local.iter().any(|h| !h.rooms.is_empty())
            || in_any_room(self.record.as_ref().and_then(|r| r.presence.as_ref()))
    }
}

/// A stream's watch of a room: unwatched when dropped.
pub(crate) struct Watching {
    pub rooms: Arc<Rooms>,
    pub room: String,
    pub subscriber: u64,
}

impl Watching {
    /// The room's stream cursor now.
    pub(crate) fn cursor(&self) -> String {
        self.rooms.cursor(&self.room)
    }
}

impl Drop for Watching {
    fn drop(&mut self) {
        self.rooms.unwatch(&self.room, self.subscriber);
    }
}

/// Who may read or join rooms.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Access {
    Join,
    Read,
}

impl Rooms {
    pub(crate) fn new(
        node: &str,
        settings: RoomsConfig,
        window: Duration,
        metrics: Arc<Metrics>,
    ) -> Arc<Self> {
        let (signals, outgoing) = mpsc::unbounded_channel();
        Arc::new(Self {
            state: Mutex::default(),
            node: Arc::from(node),
            settings,
            window,
            epoch: format!("{:08x}", rand::random::<u32>()),
            metrics,
            signals,
            outgoing: Mutex::new(Some(outgoing)),
        })
    }

    pub(crate) fn settings(&self) -> &RoomsConfig {
        &self.settings
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().expect("rooms lock")
    }

    /// Whether a caller whose token's `rooms` claim is `granted` (none: no token) may `access`
    /// `room`: a public room is anyone's to read; `rooms.open` lets any token in; otherwise
    /// a pattern of the claim must match.
    pub(crate) fn allows(&self, room: &str, granted: Option<&[String]>, access: Access) -> bool {
        if access == Access::Read && self.settings.public.iter().any(|p| room_matches(p, room)) {
            return true;
        }
        match granted {
            None => false,
            Some(_) if self.settings.open => true,
            Some(patterns) => patterns.iter().any(|p| room_matches(p, room)),
        }
    }

    /// `record` is `user`'s at its revision (the landing's, and a join's look at the cache).
    pub(crate) fn landed(&self, user: &str, record: &Arc<Record>) {
        let mut state = self.lock();
        let known = state.users.get(user);
        if known.is_none() && !in_any_room(record.presence.as_ref()) {
            return;
        }
        if known.and_then(|u| u.record.as_ref()).is_some_and(|r| r.revision >= record.revision) {
            return;
        }
        self.update(&mut state, user, |u| u.record = Some(record.clone()));
    }

    /// `held` are the sessions of `user` this node holds now (their rooms included).
    pub(crate) fn local(&self, user: &str, held: Vec<Held>) {
        let mut state = self.lock();
        if !state.users.contains_key(user) && held.iter().all(|h| h.rooms.is_empty()) {
            return;
        }
        self.update(&mut state, user, |u| u.local = held);
    }

    /// The bucket was replaced: every record goes, the sessions here stay; the watcher brings
    /// the records back.
    pub(crate) fn forget_records(&self) {
        let mut state = self.lock();
        let users: Vec<Arc<str>> = state.users.keys().cloned().collect();
        for user in users {
            self.update(&mut state, &user, |u| u.record = None);
        }
    }

    /// Applies `change` to `user`'s state, and the difference it makes to their rooms.
    fn update(&self, state: &mut State, user: &str, change: impl FnOnce(&mut UserState)) {
        let key = state.users.get_key_value(user).map_or_else(|| Arc::from(user), |(k, _)| k.clone());
        let entry = state.users.entry(key.clone()).or_default();
        let (before, was_hidden) = (entry.memberships(&self.node), entry.hidden());
        change(entry);
        let (mut after, hidden) = (entry.memberships(&self.node), entry.hidden());
        if !entry.in_any_room() {
            state.users.remove(&key);
        }
        if before.is_empty() && after.is_empty() {
            return;
        }
        let now = Instant::now();
        let rooms: HashSet<Arc<str>> = before.keys().chain(after.keys()).cloned().collect();
        for name in rooms {
            let devices = after.remove(&name).unwrap_or_default();
            if before.get(&name) == Some(&devices) && was_hidden == hidden {
                continue;
            }
            let key = state.rooms.get_key_value(&name).map_or(name, |(k, _)| k.clone());
            state.rooms.entry(key.clone()).or_default().set(&user.into(), devices, hidden);
            self.schedule(state, &key, now);
        }
    }

    /// A changed room's batch goes now if its last went a window ago, else when the window ends.
    fn schedule(&self, state: &mut State, name: &Arc<str>, now: Instant) {
        let Some(room) = state.rooms.get_mut(name) else { return };
        if room.last_sent.is_none_or(|at| now >= at + room.window(self.window)) {
            self.flush(state, name, now);
        } else {
            state.due.insert(name.clone());
        }
    }

    fn flush(&self, state: &mut State, name: &Arc<str>, now: Instant) {
        let Some(room) = state.rooms.get_mut(name) else { return };
        let sent = room.flush(name, now);
        self.metrics.rooms.messages.get_or_create(&KindLabels { kind: "change" }).inc_by(sent as u64);
        if room.counts_owed {
            state.counting.insert(name.clone());
        }
        if room.is_idle() {
            state.rooms.remove(name);
        }
        state.due.remove(name);
    }

    /// The batches whose window ended, the counts owed; with `typing`, the typing signals not
    /// renewed; with `gauges`, the metrics' gauges. Called every few ms.
    fn tick(&self, now: Instant, (typing, gauges): (bool, bool)) {
        let mut state = self.lock();
        if typing {
            let names: Vec<Arc<str>> =
                state.rooms.iter().filter(|(_, r)| !r.typing.is_empty()).map(|(k, _)| k.clone()).collect();
            for name in names {
                if let Some(room) = state.rooms.get_mut(&name) {
                    room.expire_typing(now);
                    if room.is_dirty() {
                        self.schedule(&mut state, &name, now);
                    }
                }
            }
        }
        let counting: Vec<Arc<str>> = state.counting.iter().cloned().collect();
        for name in counting {
            let Some(room) = state.rooms.get_mut(&name) else {
                state.counting.remove(&name);
                continue;
            };
            if room.counts_due().is_some_and(|at| at <= now) {
                let sent = room.tell_counts(&name, now);
                self.metrics.rooms.messages.get_or_create(&KindLabels { kind: "change" }).inc_by(sent as u64);
            }
            if !room.counts_owed {
                state.counting.remove(&name);
            }
        }
        let due: Vec<Arc<str>> = state.due.iter().cloned().collect();
        for name in due {
            let ready = state
                .rooms
                .get(&name)
                .is_none_or(|r| r.last_sent.is_none_or(|at| now >= at + r.window(self.window)));
            if ready {
                self.flush(&mut state, &name, now);
            }
        }
        if !gauges {
            return;
        }
        let members: usize =
            state.rooms.values().map(|r| r.members.values().map(Vec::len).sum::<usize>()).sum();
        let occupied = state.rooms.values().filter(|r| !r.members.is_empty()).count();
        self.metrics.rooms.rooms.set(occupied as i64);
        self.metrics.rooms.members.set(members as i64);
    }

    /// `user` (a member of `room`, this node's client) is typing, or stopped: shown here at once,
    /// and sent to the other nodes.
    pub(crate) fn typing(&self, user: &str, room: &str, active: bool) {
        self.metrics.rooms.typing_signals.get_or_create(&KindLabels { kind: "local" }).inc();
        self.apply_typing(user, room, active);
        let signal = Signal { node: self.node.to_string(), user: user.into(), room: room.into(), active };
        let _ = self.signals.send(signal);
    }

    fn apply_typing(&self, user: &str, room: &str, active: bool) {
        let mut state = self.lock();
        let Some(name) = state.rooms.get_key_value(room).map(|(k, _)| k.clone()) else { return };
        let now = Instant::now();
        let entry = state.rooms.get_mut(&name).expect("present");
        entry.set_typing(user, active.then(|| now + self.settings.typing_ttl));
        if entry.is_dirty() {
            self.schedule(&mut state, &name, now);
        }
    }
}
