//! A room's members as this node knows them, and where they come from: each user's record (the
//! devices at other nodes) and this node's own sessions (its devices, ahead of their record).

use std::{collections::BTreeMap, sync::Arc};

use chrono::{DateTime, Utc};
use serde::Serialize;

use crate::model::{CompactPresence, DeviceKind, Held, Joined, Meta, rfc3339_millis};

/// One device in a room, as clients see it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub(crate) struct Member {
    #[serde(serialize_with = "shared_str")]
    pub device: Arc<str>,
    pub kind: DeviceKind,
    pub meta: Meta,
    #[serde(serialize_with = "rfc3339_millis")]
    pub joined_at: DateTime<Utc>,
}

fn shared_str<S: serde::Serializer>(text: &Arc<str>, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(text)
}

impl Member {
    fn of(device: &Arc<str>, kind: DeviceKind, joined: &Joined) -> Self {
        Self { device: device.clone(), kind, meta: joined.meta.clone(), joined_at: joined.joined_at }
    }
}

/// A user's rooms: room → their devices in it, by device id.
pub(super) type Memberships = BTreeMap<Arc<str>, Vec<Member>>;

/// The rooms `record` and the sessions `local` to node `me` put a user in. The devices at other
/// nodes come from the record; this node's own from its sessions (ahead of the record, which
/// follows them), by the rule the record follows too: a device connected here is as held here;
/// one in its grace here yields to another node that has it now; a device the record names at
/// this node that the sessions no longer hold is gone.
pub(super) fn memberships(record: Option<&CompactPresence>, local: &[Held], me: &str) -> Memberships {
    let remote = record.map_or(&[][..], |p| p.devices());
    let mut rooms = Memberships::new();
    let mut add = |device: Arc<str>, kind: DeviceKind, joined: &[Joined]| {
        for j in joined {
            rooms.entry(j.room.clone()).or_default().push(Member::of(&device, kind, j));
        }
    };
    for h in local {
        let elsewhere = remote.iter().any(|d| *d.id == *h.device && &*d.node != me);
        if h.connected || !elsewhere {
            add(h.device.clone(), h.kind, &h.rooms);
        }
    }
    for d in remote.iter().filter(|d| &*d.node != me && !d.rooms.is_empty()) {
        if local.iter().any(|h| h.connected && *h.device == *d.id) {
            continue;
        }
        add(Arc::from(&*d.id), d.kind, &d.rooms);
    }
    for devices in rooms.values_mut() {
        devices.sort_unstable_by(|a, b| a.device.cmp(&b.device));
    }
    rooms
}

/// Whether any device in `record` is in a room.
pub(super) fn in_any_room(record: Option<&CompactPresence>) -> bool {
    record.is_some_and(|p| p.devices().iter().any(|d| !d.rooms.is_empty()))
}

/// What a device's entries in one room became between two moments: joins, updates (meta), leaves.
pub(super) fn diff<'a>(
    before: &'a [Member],
    after: &'a [Member],
    (joins, updates, leaves): (&mut Vec<&'a Member>, &mut Vec<&'a Member>, &mut Vec<&'a Member>),
) {
    for a in after {
        match before.iter().find(|b| b.device == a.device) {
            None => joins.push(a),
            Some(b) if b != a => updates.push(a),
            Some(_) => {}
        }
    }
    leaves.extend(before.iter().filter(|b| !after.iter().any(|a| a.device == b.device)));
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;
    use crate::model::{Status, StoredDevice, StoredPresence, StoredRoom};

    fn joined(room: &str) -> Joined {
        Joined { room: Arc::from(room), meta: Meta::empty(), joined_at: DateTime::UNIX_EPOCH }
    }

    fn held(device: &str, connected: bool, rooms: &[&str]) -> Held {
        let rooms = rooms.iter().map(|r| joined(r)).collect();
        Held { device: Arc::from(device), kind: DeviceKind::Web, idle: false, connected, rooms }
    }

    pub(in crate::rooms) fn record(devices: &[(&str, &str, &[&str])]) -> CompactPresence {
        let mut stored = StoredPresence {
            user_id: "u".into(),
            status: Status::Offline,
            message: None,
            last_seen: None,
            updated_at: DateTime::UNIX_EPOCH,
            node_id: "a".into(),
            ttl: 0,
            expires_at: DateTime::UNIX_EPOCH,
            devices: Default::default(),
        };
        for (id, node, rooms) in devices {
            let mut d = StoredDevice::new(DeviceKind::Mobile, node.to_string(), false);
            for r in *rooms {
                d.rooms.insert(
                    r.to_string(),
                    StoredRoom { meta: Meta::empty(), joined_at: DateTime::UNIX_EPOCH },
                );
            }
            stored.devices.insert(id.to_string(), d);
        }
        CompactPresence::from(&stored)
    }

    fn devices(m: &Memberships, room: &str) -> Vec<String> {
        m.get(room).map(|d| d.iter().map(|d| d.device.to_string()).collect()).unwrap_or_default()
    }

    #[test]
    fn this_nodes_sessions_lead_and_other_nodes_come_from_the_record() {
        // The record is behind: it still names d1 here in `x`, and d2 at node b in `y`.
        let rec = record(&[("d1", "me", &["x"]), ("d2", "b", &["y"]), ("d3", "b", &["x"])]);
        // Here, d1 moved to room `z`; d2 reconnected here (connected) and is in `z` too.
        let local = [held("d1", true, &["z"]), held("d2", true, &["z"])];
        let m = memberships(Some(&rec), &local, "me");
        assert_eq!(devices(&m, "x"), ["d3"], "d1 left x here; d3 at b is as its record says");
        assert_eq!(
            devices(&m, "y"),
            Vec::<String>::new(),
            "d2 is connected here: the record's copy is behind"
        );
        assert_eq!(devices(&m, "z"), ["d1", "d2"]);
        // d2 in its grace here while node b has it again: b's record wins.
        let local = [held("d2", false, &["z"])];
        let m = memberships(Some(&rec), &local, "me");
        assert_eq!(devices(&m, "y"), ["d2"]);
        assert_eq!(devices(&m, "z"), Vec::<String>::new());
        // A device the record names here that the sessions no longer hold is gone.
        let m = memberships(Some(&rec), &[], "me");
        assert_eq!(devices(&m, "x"), ["d3"]);
        assert!(in_any_room(Some(&rec)) && !in_any_room(Some(&record(&[("d", "b", &[])]))));
    }
}
