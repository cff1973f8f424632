//! The sessions a node holds, and what a user's record should say of them ([`desired`]).

use std::{
    collections::{HashMap, HashSet, hash_map::Entry},
    sync::Arc,
    time::{Duration, Instant},
};

use chrono::{DateTime, Utc};

use crate::model::{DeviceKind, Status, StoredDevice, StoredDevices, StoredPresence};

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
}

/// A session as [`desired`] needs it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Held {
    pub(crate) device: Arc<str>,
    pub kind: DeviceKind,
    pub idle: bool,
    /// False while the session is in its grace.
    pub connected: bool,
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
    /// already, as after a reconnect within the grace, syncing it writes nothing).
    pub(super) fn connect(&mut self, user: &Arc<str>, device: &Arc<str>, kind: DeviceKind, now: Instant) {
        let devices = self.users.entry(user.clone()).or_default();
        match devices.entry(device.clone()) {
            Entry::Occupied(mut held) => {
                let held = held.get_mut();
                held.connections += 1;
                held.grace_until = None;
                held.kind = kind;
                held.active_at = now;
                held.idle = false;
            }
            Entry::Vacant(slot) => {
                slot.insert(Slot { kind, connections: 1, active_at: now, idle: false, grace_until: None });
                self.count += 1;
            }
        }
        if let Some(seen) = &mut self.seen {
            seen.insert((user.clone(), device.clone()));
        }
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

    /// A connection for `device` ended: cleanly (`until` none: the session ends with the last
    /// connection) or abruptly (the session is kept `until`). True if the record must change.
    pub(super) fn disconnect(&mut self, user: &str, device: &str, until: Option<Instant>) -> bool {
        let Some(devices) = self.users.get_mut(user) else { return false };
        let Some(held) = devices.get_mut(device) else { return false };
        held.connections = held.connections.saturating_sub(1);
        if held.connections > 0 {
            return false;
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
        let mine = StoredDevice { kind: h.kind, node: node.to_string(), idle: h.idle };
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
mod tests {
    use super::*;

    fn held(device: &str, idle: bool, connected: bool) -> Held {
        Held { device: Arc::from(device), kind: DeviceKind::Web, idle, connected }
    }

    const ALIVE: &dyn Fn(&str) -> bool = &|_| false;

    #[test]
    fn the_table_follows_connections_idleness_and_graces() {
        let (user, phone, laptop): (Arc<str>, Arc<str>, Arc<str>) =
            ("u".into(), "phone".into(), "laptop".into());
        let t0 = Instant::now();
        let minute = Duration::from_secs(60);
        let mut table = Table::starting();
        table.connect(&user, &phone, DeviceKind::Mobile, t0);
        table.connect(&user, &phone, DeviceKind::Mobile, t0); // a second connection of the device
        table.connect(&user, &laptop, DeviceKind::Desktop, t0);
        assert_eq!((table.len(), table.users().collect::<Vec<_>>()), (2, vec![user.clone()]));
        assert_eq!(table.devices_besides("u", "phone", &[]), 1);
        assert_eq!(table.devices_besides("u", "tablet", &["tv".into(), "laptop".into()]), 3);
        assert_eq!(table.devices_besides("v", "phone", &[]), 0);

        // Idle after `idle_after` without activity; activity makes it active again (once).
        assert!(table.timers(t0 + minute - Duration::from_millis(1), minute).is_empty(), "not yet");
        assert!(!table.activity("u", "laptop", t0 + Duration::from_secs(30)), "active already: no change");
        assert_eq!(table.timers(t0 + minute, minute), std::slice::from_ref(&user), "the phone went idle");
        let idle =
            |table: &Table, device: &str| table.held("u").iter().find(|h| &*h.device == device).unwrap().idle;
        assert!(idle(&table, "phone") && !idle(&table, "laptop"));
        assert!(table.timers(t0 + minute, minute).is_empty(), "idle once");
        assert!(table.activity("u", "phone", t0 + minute), "active again: the record must say so");
        assert!(!table.activity("u", "phone", t0 + minute), "already active: nothing to write");
        assert!(!table.activity("u", "nobody", t0), "no such session");

        // One of the phone's two connections drops: nothing changes. The other drops abruptly:
        // kept for the grace, still in the table, no longer connected.
        let grace = t0 + 2 * minute;
        assert!(!table.disconnect("u", "phone", None), "another connection holds it");
        assert!(!table.disconnect("u", "phone", Some(grace)), "kept for its grace");
        let phone_held = |table: &Table| table.held("u").into_iter().find(|h| &*h.device == "phone");
        assert_eq!(phone_held(&table).map(|h| h.connected), Some(false));
        assert!(table.held("u").iter().any(|h| &*h.device == "laptop" && h.connected));
        assert!(table.timers(grace - Duration::from_millis(1), Duration::from_secs(1)).contains(&user));
        assert_eq!(phone_held(&table).map(|h| h.idle), Some(false), "no idleness in the grace: no flicker");
        assert_eq!(table.len(), 2);
        table.activity("u", "laptop", grace);
        assert!(table.timers(grace - Duration::from_millis(1), 10 * minute).is_empty());
        assert_eq!(table.timers(grace, 10 * minute), std::slice::from_ref(&user), "its grace ran out");
        assert_eq!((phone_held(&table), table.len()), (None, 1));
        // A clean close ends the laptop's session at once.
        assert!(table.disconnect("u", "laptop", None));
        assert_eq!((table.len(), table.users().count()), (0, 0));
        assert!(!table.disconnect("u", "laptop", None), "nothing left to end");
    }

    #[test]
    fn an_invisible_user_is_not_seen_by_their_sessions_until_it_ran_out() {
        let t0 = Utc::now();
        let mut hidden = desired("u", None, &[held("d1", false, true)], "a", ALIVE, t0).unwrap();
        let seen = hidden.last_seen;
        hidden.status = Status::Invisible;
        hidden.expires_at = t0 + chrono::Duration::seconds(60);
        let t1 = t0 + chrono::Duration::seconds(10);
        let both = [held("d1", false, true), held("d2", false, true)];
        let written = desired("u", Some(&hidden), &both, "a", ALIVE, t1).unwrap();
        assert_eq!(written.last_seen, seen, "invisible: last_seen does not advance");
        let t2 = t0 + chrono::Duration::seconds(61);
        let later = desired("u", Some(&hidden), &both, "a", ALIVE, t2).unwrap();
        assert_ne!(later.last_seen, seen, "its ttl ran out: seen again");
    }

    #[test]
    fn a_record_follows_the_sessions_and_only_writes_on_a_change() {
        let t0 = Utc::now();
        assert_eq!(desired("u", None, &[], "a", ALIVE, t0), None, "nothing to say");
        let first = desired("u", None, &[held("d1", false, true)], "a", ALIVE, t0).unwrap();
        assert_eq!(first.status, Status::Offline, "no status set: the devices decide");
        assert_eq!(
            first.devices["d1"],
            StoredDevice { kind: DeviceKind::Web, node: "a".into(), idle: false }
        );
        assert!(first.last_seen.is_some());
        let again = desired("u", Some(&first), &[held("d1", false, true)], "a", ALIVE, t0);
        assert_eq!(again, None, "steady: no write");
        let in_grace = desired("u", Some(&first), &[held("d1", false, false)], "a", ALIVE, t0);
        assert_eq!(in_grace, None, "an abrupt drop changes nothing during the grace");
        let t1 = t0 + chrono::Duration::seconds(5);
        let idle = desired("u", Some(&first), &[held("d1", true, true)], "a", ALIVE, t1).unwrap();
        assert!(idle.devices["d1"].idle);
        let ended = desired("u", Some(&idle), &[], "a", ALIVE, t1).unwrap();
        assert!(ended.devices.is_empty());
        assert_eq!(ended.last_seen.map(|t| t.timestamp_millis()), Some(t1.timestamp_millis()));
    }

    #[test]
    fn a_device_that_moved_keeps_its_place_and_nobody_sees_it() {
        let t0 = Utc::now();
        let at_a = desired("u", None, &[held("d1", false, true)], "a", ALIVE, t0).unwrap();
        let t1 = t0 + chrono::Duration::seconds(3);
        let at_b = desired("u", Some(&at_a), &[held("d1", false, true)], "b", ALIVE, t1).unwrap();
        assert_eq!(at_b.devices["d1"].node, "b");
        assert_eq!(at_b.last_seen, at_a.last_seen, "only the node changed: last_seen stays");
        // A's grace runs out later: it does not take the device back, nor remove it.
        assert_eq!(desired("u", Some(&at_b), &[held("d1", false, false)], "a", ALIVE, t1), None);
        assert_eq!(desired("u", Some(&at_b), &[], "a", ALIVE, t1), None);
    }

    #[test]
    fn a_restarted_node_keeps_its_old_sessions_for_a_grace_and_dead_nodes_lose_theirs() {
        let t0 = Utc::now();
        let mut record = desired("u", None, &[held("d1", false, true)], "a", ALIVE, t0).unwrap();
        record
            .devices
            .insert("d2".into(), StoredDevice { kind: DeviceKind::Mobile, node: "b".into(), idle: false });
        // Node a restarted: it takes d1 in for the grace, as if its connection had just dropped.
        let mut table = Table::starting();
        let user: Arc<str> = Arc::from("u");
        let until = Instant::now() + Duration::from_secs(15);
        table.adopt(&user, &record, "a", until);
        assert_eq!(table.held("u"), [held("d1", false, false)]);
        assert_eq!(
            desired("u", Some(&record), &table.held("u"), "a", ALIVE, t0),
            None,
            "may still reconnect"
        );
        assert_eq!(
            table.timers(until, Duration::from_secs(600)),
            std::slice::from_ref(&user),
            "its grace ran out"
        );
        let cleaned = desired("u", Some(&record), &table.held("u"), "a", ALIVE, t0).unwrap();
        assert_eq!(cleaned.devices.keys().collect::<Vec<_>>(), ["d2"]);
        // A device held in this run and closed is not taken in again from an older record.
        table.connect(&user, &Arc::from("d3"), DeviceKind::Web, Instant::now());
        table.disconnect("u", "d3", None);
        record
            .devices
            .insert("d3".into(), StoredDevice { kind: DeviceKind::Web, node: "a".into(), idle: false });
        table.adopt(&user, &record, "a", until);
        assert!(table.held("u").is_empty());

        let b_dead: &dyn Fn(&str) -> bool = &|n| n == "b";
        let t1 = t0 + chrono::Duration::seconds(60);
        let reaped = desired("u", Some(&cleaned), &[], "c", b_dead, t1).unwrap();
        assert!(reaped.devices.is_empty());
        assert_eq!(reaped.last_seen, cleaned.last_seen, "when a dead node's device went is unknown");
    }
}
