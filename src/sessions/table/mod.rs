//! The sessions a node holds, and what a user's record should say of them ([`desired`]).

use std::{
    collections::{HashMap, HashSet, hash_map::Entry},
    sync::Arc,
    time::{Duration, Instant},
};

use chrono::{DateTime, Utc};
use tokio_util::sync::CancellationToken;

use crate::model::{DeviceKind, Held, Status, StoredDevice, StoredDevices, StoredPresence, StoredRoom};

mod rooms;

pub(crate) use rooms::JoinError;
use rooms::RoomSlot;

/// One device's session at this node.
struct Slot {
    kind: DeviceKind,
    /// Open connections for this device (a client may reconnect before its old connection is
    /// found dead).
    connections: u32,
    active_at: Instant,
    idle: bool,
    /// Set once the last connection dropped without a close frame: kept until then.
    grace_until: Option<Instant>,
    /// Cancelled when the user is erased: the device's connections close.
    ended: CancellationToken,
    /// The rooms the device is in, by room id.
    rooms: HashMap<Arc<str>, RoomSlot>,
}

/// The sessions, by user and device, and the users whose records must follow them.
#[derive(Default)]
pub(super) struct Table {
    users: HashMap<Arc<str>, HashMap<Arc<str>, Slot>>,
    /// Sessions held, in their grace too.
    count: usize,
    /// Users whose record may not say what the table says.
    pub(super) dirty: HashSet<Arc<str>>,
    /// Users whose sync failed: tried again a second later.
    pub(super) failed: HashSet<Arc<str>>,
    /// Users being synced now: not synced again until that is done.
    pub(super) syncing: HashSet<Arc<str>>,
    /// When each user's record was last written for their sessions here, while that is less
    /// than `sessions.write_interval` ago: the next write waits until then.
    pub(super) written: HashMap<Arc<str>, Instant>,
    /// Every session held since start-up, while the first grace lasts: the others the records
    /// name at this node are from before a restart.
    pub(super) seen: Option<HashSet<(Arc<str>, Arc<str>)>>,
}

impl Table {
    /// A table for a node that just started: it remembers which sessions it held for a grace.
    pub(super) fn starting() -> Self {
        Self { seen: Some(HashSet::new()), ..Self::default() }
    }

    /// Sessions held, in their grace too.
    pub(super) fn len(&self) -> usize {
        self.count
    }

    pub(super) fn users(&self) -> impl Iterator<Item = Arc<str>> + '_ {
        self.users.keys().cloned()
    }

    /// `user`'s devices other than `device`: those held here and those `elsewhere`.
    pub(super) fn devices_besides(&self, user: &str, device: &str, elsewhere: &[Box<str>]) -> usize {
        let here = self.users.get(user);
        let mut ids: HashSet<&str> = here.map(|d| d.keys().map(|k| &**k).collect()).unwrap_or_default();
        ids.extend(elsewhere.iter().map(|d| &**d));
        ids.remove(device);
        ids.len()
    }

    /// A connection for `device` said hello. Its user's record must say so (if it does
    /// already, as after a reconnect within the grace, syncing it writes nothing). The token is
    /// cancelled if the user is erased.
    pub(super) fn connect(
        &mut self,
        user: &Arc<str>,
        device: &Arc<str>,
        kind: DeviceKind,
        now: Instant,
    ) -> CancellationToken {
        let devices = self.users.entry(user.clone()).or_default();
        let ended = match devices.entry(device.clone()) {
            Entry::Occupied(mut held) => {
                let held = held.get_mut();
                held.connections += 1;
                held.grace_until = None;
                held.kind = kind;
                held.active_at = now;
                held.idle = false;
                held.ended.clone()
            }
            Entry::Vacant(slot) => {
                let ended = CancellationToken::new();
                let held = Slot {
                    kind,
                    connections: 1,
                    active_at: now,
                    idle: false,
                    grace_until: None,
                    ended,
                    rooms: HashMap::new(),
                };
                self.count += 1;
                slot.insert(held).ended.clone()
            }
        };
        if let Some(seen) = &mut self.seen {
            seen.insert((user.clone(), device.clone()));
        }
        ended
    }

    /// `user` was erased: every session of theirs here ends at once, their connections close,
    /// and nothing is left to write. The number of sessions ended.
    pub(super) fn erase(&mut self, user: &str) -> usize {
        let Some(devices) = self.users.remove(user) else { return 0 };
        for held in devices.values() {
            held.ended.cancel();
        }
        self.count -= devices.len();
        self.dirty.remove(user);
        self.failed.remove(user);
        devices.len()
    }

    /// The sessions `record` names at `node` that this run of the node never held: from before
    /// a restart. They are taken in as if their connections had just dropped: kept `until`
    /// (the end of the first grace), continued if their devices reconnect by then.
    pub(super) fn adopt(&mut self, user: &Arc<str>, record: &StoredPresence, node: &str, until: Instant) {
        let Some(seen) = &mut self.seen else { return };
        for (id, device) in record.devices.iter().filter(|(_, d)| d.node == node) {
            let id: Arc<str> = Arc::from(id.as_str());
            if !seen.insert((user.clone(), id.clone())) {
                continue;
            }
            let held = Slot {
                kind: device.kind,
                connections: 0,
                active_at: until,
                idle: device.idle,
                grace_until: Some(until),
                ended: CancellationToken::new(),
                rooms: RoomSlot::restarted(&device.rooms, until),
            };
            if self.users.entry(user.clone()).or_default().insert(id, held).is_none() {
                self.count += 1;
            }
        }
    }

    /// The person is active on `device`: true if it was idle.
    pub(super) fn activity(&mut self, user: &str, device: &str, now: Instant) -> bool {
        let Some(held) = self.users.get_mut(user).and_then(|d| d.get_mut(device)) else { return false };
        held.active_at = now;
        std::mem::replace(&mut held.idle, false)
    }

    /// Connection `conn` of `device` ended: cleanly (`until` none: the session ends with the
    /// last connection, and so do the rooms only this connection joined) or abruptly (the session
    /// and those rooms are kept `until`). True if the record must change.
    pub(super) fn disconnect(&mut self, user: &str, device: &str, conn: u64, until: Option<Instant>) -> bool {
        let Some(devices) = self.users.get_mut(user) else { return false };
        let Some(held) = devices.get_mut(device) else { return false };
        held.connections = held.connections.saturating_sub(1);
        let left = rooms::disconnect(&mut held.rooms, conn, until);
        if held.connections > 0 {
            return left;
        }
        match until {
            Some(until) => {
                held.grace_until = Some(until);
                false
            }
            None => {
                devices.remove(device);
                self.count -= 1;
                if devices.is_empty() {
                    self.users.remove(user);
                }
                true
            }
        }
    }

    /// Ends the sessions whose grace ran out and makes idle the devices without activity for
    /// `idle_after`: the users whose records must change.
    pub(super) fn timers(&mut self, now: Instant, idle_after: Duration) -> Vec<Arc<str>> {
        let mut changed = Vec::new();
        let mut ended = 0;
        self.users.retain(|user, devices| {
            let before = devices.len();
            devices.retain(|_, held| held.grace_until.is_none_or(|until| now < until));
            ended += before - devices.len();
            let mut change = devices.len() != before;
            for held in devices.values_mut() {
                change |= rooms::expire(&mut held.rooms, now);
                if held.connections > 0 && !held.idle && now.duration_since(held.active_at) >= idle_after {
                    held.idle = true;
                    change = true;
                }
            }
            if change {
                changed.push(user.clone());
            }
            !devices.is_empty()
        });
        self.count -= ended;
        changed
    }

    /// `user`'s sessions here.
    pub(super) fn held(&self, user: &str) -> Vec<Held> {
        let Some(devices) = self.users.get(user) else { return Vec::new() };
        let held = devices.iter().map(|(device, s)| Held {
            device: device.clone(),
            kind: s.kind,
            idle: s.idle,
            connected: s.connections > 0,
            rooms: rooms::joined(&s.rooms),
        });
        held.collect()
    }
}

/// The record `user` should have, given the current one (`previous`), the sessions `held` at
/// `node`, and which nodes are `dead`; `None` when the current one says that already.
///
/// - A device connected here is in the record, as held here (even if another node had it).
/// - A device in its grace keeps its place, but does not take it back from another node.
/// - Any other device of this node is removed.
/// - The devices of dead nodes are removed.
///
/// `last_seen` moves when the devices or their idleness change (not when only a device's node
/// does), unless the user is `invisible`. The rest of the record, the status a client set, is
/// kept. A user without a record gets one: `offline` as set status, with no ttl.
pub(crate) fn desired(
    user: &str,
    previous: Option<&StoredPresence>,
    held: &[Held],
    node: &str,
    dead: &dyn Fn(&str) -> bool,
    now: DateTime<Utc>,
) -> Option<StoredPresence> {
    let empty = StoredDevices::new();
    let before = previous.map_or(&empty, |p| &p.devices);
    let mut devices = before.clone();
    devices.retain(
        |id, d| {
            if d.node == node { held.iter().any(|h| *h.device == **id) } else { !dead(&d.node) }
        },
    );
    for h in held {
        let rooms = h
            .rooms
            .iter()
            .map(|j| (j.room.to_string(), StoredRoom { meta: j.meta.clone(), joined_at: j.joined_at }));
        let mine =
            StoredDevice { kind: h.kind, node: node.to_string(), idle: h.idle, rooms: rooms.collect() };
        if h.connected {
            devices.insert(h.device.to_string(), mine);
        } else if let Some(d) = devices.get_mut(&*h.device).filter(|d| d.node == node) {
            *d = mine;
        }
    }
    if devices == *before {
        return None;
    }
    let now = DateTime::from_timestamp_millis(now.timestamp_millis()).unwrap_or(now);
    let mut record = previous.cloned().unwrap_or_else(|| StoredPresence {
        user_id: user.to_string(),
        status: Status::Offline,
        message: None,
        last_seen: None,
        updated_at: now,
        node_id: node.to_string(),
        ttl: 0,
        expires_at: now,
        devices: StoredDevices::new(),
    });
    // The devices of a dead node went at some moment nobody knows: that moves nothing.
    let shown = |d: &StoredDevices| {
        let alive = d.iter().filter(|(_, d)| d.node == node || !dead(&d.node));
        alive.map(|(id, d)| (id.clone(), d.kind, d.idle)).collect::<Vec<_>>()
    };
    let hidden = record.status == Status::Invisible && now < record.expires_at;
    if shown(before) != shown(&devices) && !hidden {
        record.last_seen = Some(now);
    }
    record.devices = devices;
    Some(record)
}

#[cfg(test)]
mod tests;
