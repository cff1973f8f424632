//! The rooms each device at this node is in: which of its connections joined each (a
//! connection that closes cleanly takes its rooms with it; one that breaks leaves them for the
//! grace, for a reconnect to join again with nobody seeing anything).

use std::{
    collections::{BTreeMap, HashMap},
    sync::Arc,
    time::Instant,
};

use chrono::{DateTime, Utc};

use super::Table;
use crate::model::{Joined, Meta, StoredRoom};

/// One room of one device.
pub(super) struct RoomSlot {
    meta: Meta,
    joined_at: DateTime<Utc>,
    /// The device's connections that joined it (usually one).
    connections: Vec<u64>,
    /// Set once no connection holds it any more after a break: it goes then.
    orphaned_until: Option<Instant>,
}

impl RoomSlot {
    /// A room of a device taken over from a record: kept `until`, for a connection to join it
    /// again.
    fn adopted(meta: &Meta, joined_at: DateTime<Utc>, until: Instant) -> Self {
        RoomSlot { meta: meta.clone(), joined_at, connections: Vec::new(), orphaned_until: Some(until) }
    }

    /// The rooms of a device the record names at this node, after a restart.
    pub(super) fn restarted(
        rooms: &BTreeMap<String, StoredRoom>,
        until: Instant,
    ) -> HashMap<Arc<str>, RoomSlot> {
        let slot = |r: &StoredRoom| RoomSlot::adopted(&r.meta, r.joined_at, until);
        rooms.iter().map(|(room, r)| (Arc::from(room.as_str()), slot(r))).collect()
    }
}

/// Why a join, a leave or a meta update was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum JoinError {
    #[error("too many rooms: at most {0} per device (rooms.max_rooms_per_device)")]
    TooManyRooms(usize),
    #[error("not in this room: join it first")]
    NotMember,
    #[error("this connection holds no session")]
    NoSession,
}

/// Connection `conn` ended: it no longer holds its rooms. Cleanly (`until` none): the rooms no
/// other connection holds go at once (true if any did); abruptly: they are kept `until`.
pub(super) fn disconnect(rooms: &mut HashMap<Arc<str>, RoomSlot>, conn: u64, until: Option<Instant>) -> bool {
    let mut left = false;
    rooms.retain(|_, slot| {
        let before = slot.connections.len();
        slot.connections.retain(|c| *c != conn);
        if before == 0 || !slot.connections.is_empty() {
            return true;
        }
        match until {
            Some(until) => {
                slot.orphaned_until = Some(until);
                true
            }
            None => {
                left = true;
                false
            }
        }
    });
    left
}

/// Drops the rooms whose connection broke longer than the grace ago: true if any went.
pub(super) fn expire(rooms: &mut HashMap<Arc<str>, RoomSlot>, now: Instant) -> bool {
    let before = rooms.len();
    rooms.retain(|_, slot| slot.orphaned_until.is_none_or(|until| now < until));
    rooms.len() != before
}

/// The rooms as the record should say them, by room id.
pub(super) fn joined(rooms: &HashMap<Arc<str>, RoomSlot>) -> Vec<Joined> {
    let mut joined: Vec<Joined> = rooms
        .iter()
        .map(|(room, s)| Joined { room: room.clone(), meta: s.meta.clone(), joined_at: s.joined_at })
        .collect();
    joined.sort_unstable_by(|a, b| a.room.cmp(&b.room));
    joined
}

impl Table {
    /// `device` came here from another node, where it was in `rooms`: they are kept for it
    /// `until` (the grace), for its connection to join them again.
    pub(crate) fn adopt_rooms(&mut self, user: &str, device: &str, rooms: &[Joined], until: Instant) {
        let Ok(held) = self.rooms_of(user, device) else { return };
        for joined in rooms {
            let slot = || RoomSlot::adopted(&joined.meta, joined.joined_at, until);
            held.entry(joined.room.clone()).or_insert_with(slot);
        }
    }

    fn rooms_of(&mut self, user: &str, device: &str) -> Result<&mut HashMap<Arc<str>, RoomSlot>, JoinError> {
        let held = self.users.get_mut(user).and_then(|d| d.get_mut(device));
        held.map(|h| &mut h.rooms).ok_or(JoinError::NoSession)
    }

    /// Connection `conn` of `device` joins `room` with `meta` (a join again sets the meta, and
    /// takes back a room whose connection broke), a member `since` then if it is new here. True
    /// if the record must change.
    pub(crate) fn join(
        &mut self,
        (user, device, conn): (&str, &str, u64),
        room: &Arc<str>,
        meta: Meta,
        since: DateTime<Utc>,
        max_rooms: usize,
    ) -> Result<bool, JoinError> {
        let rooms = self.rooms_of(user, device)?;
        let count = rooms.len();
        match rooms.get_mut(room) {
            Some(slot) => {
                if !slot.connections.contains(&conn) {
                    slot.connections.push(conn);
                }
                slot.orphaned_until = None;
                Ok(std::mem::replace(&mut slot.meta, meta.clone()) != meta)
            }
            None if count >= max_rooms => Err(JoinError::TooManyRooms(max_rooms)),
            None => {
                let since = DateTime::from_timestamp_millis(since.timestamp_millis()).unwrap_or(since);
                let slot = RoomSlot { meta, joined_at: since, connections: vec![conn], orphaned_until: None };
                rooms.insert(room.clone(), slot);
                Ok(true)
            }
        }
    }

    /// `device` leaves `room` (whichever of its connections joined it). True if it was in it.
    pub(crate) fn leave(&mut self, user: &str, device: &str, room: &str) -> Result<bool, JoinError> {
        Ok(self.rooms_of(user, device)?.remove(room).is_some())
    }

    /// `device` sets its meta in `room`. True if it changed.
    pub(crate) fn set_meta(
        &mut self,
        user: &str,
        device: &str,
        room: &str,
        meta: Meta,
    ) -> Result<bool, JoinError> {
        let slot = self.rooms_of(user, device)?.get_mut(room).ok_or(JoinError::NotMember)?;
        Ok(std::mem::replace(&mut slot.meta, meta.clone()) != meta)
    }

    /// Whether `device` is in `room`.
    pub(crate) fn is_member(&self, user: &str, device: &str, room: &str) -> bool {
        self.users.get(user).and_then(|d| d.get(device)).is_some_and(|h| h.rooms.contains_key(room))
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::model::DeviceKind;

    fn meta(text: &str) -> Meta {
        Meta::parse(serde_json::from_str(text).unwrap(), 1024).unwrap()
    }

    fn rooms(table: &Table) -> Vec<(String, String)> {
        let held = table.held("u");
        let joined = held.iter().flat_map(|h| h.rooms.iter());
        joined.map(|j| (j.room.to_string(), j.meta.json().to_string())).collect()
    }

    #[test]
    fn rooms_follow_joins_leaves_and_the_connections_that_joined_them() {
        let mut table = Table::default();
        let now = Instant::now();
        let (user, device) = (Arc::from("u"), Arc::from("d"));
        table.connect(&user, &device, DeviceKind::Web, now);
        let room = |r: &str| Arc::from(r);
        let at = Utc::now();
        assert!(
            table.join(("u", "d", 1), &room("a"), meta("{}"), at, 2).unwrap(),
            "a join changes the record"
        );
        assert!(
            !table.join(("u", "d", 1), &room("a"), meta("{}"), at, 2).unwrap(),
            "the same again: nothing"
        );
        assert!(table.join(("u", "d", 1), &room("a"), meta(r#"{"x":1}"#), at, 2).unwrap(), "a new meta");
        assert!(table.set_meta("u", "d", "a", meta(r#"{"x":2}"#)).unwrap());
        assert_eq!(table.set_meta("u", "d", "b", meta("{}")), Err(JoinError::NotMember));
        assert!(table.join(("u", "d", 1), &room("b"), meta("{}"), at, 2).unwrap());
        assert_eq!(table.join(("u", "d", 1), &room("c"), meta("{}"), at, 2), Err(JoinError::TooManyRooms(2)));
        assert_eq!(table.join(("u", "x", 1), &room("c"), meta("{}"), at, 2), Err(JoinError::NoSession));
        assert_eq!(rooms(&table), [("a".into(), r#"{"x":2}"#.into()), ("b".into(), "{}".into())]);
        assert!(table.leave("u", "d", "b").unwrap() && !table.leave("u", "d", "b").unwrap());

        // A second connection of the device; the first breaks: its rooms stay for the grace.
        table.connect(&user, &device, DeviceKind::Web, now);
        let grace = now + Duration::from_secs(15);
        assert!(!table.disconnect("u", "d", 1, Some(grace)), "kept for the grace");
        assert!(!table.timers(now + Duration::from_secs(1), Duration::from_secs(600)).contains(&user));
        // The second connection joins it again in time: it stays.
        assert!(!table.join(("u", "d", 2), &room("a"), meta(r#"{"x":2}"#), at, 2).unwrap());
        assert!(table.timers(now + Duration::from_secs(20), Duration::from_secs(600)).is_empty());
        assert_eq!(rooms(&table).len(), 1);
        // A room only a broken connection held goes when its grace ends.
        table.connect(&user, &device, DeviceKind::Web, now);
        assert!(table.join(("u", "d", 3), &room("z"), meta("{}"), at, 2).unwrap());
        assert!(!table.disconnect("u", "d", 3, Some(now + Duration::from_secs(30))));
        assert!(table.timers(now + Duration::from_secs(31), Duration::from_secs(600)).contains(&user));
        assert_eq!(rooms(&table), [("a".into(), r#"{"x":2}"#.into())]);
        // A clean close takes the rooms only it held at once, even with another connection open.
        table.connect(&user, &device, DeviceKind::Web, now);
        assert!(table.join(("u", "d", 4), &room("q"), meta("{}"), at, 2).unwrap());
        assert!(table.disconnect("u", "d", 4, None), "q left at once");
        assert_eq!(rooms(&table), [("a".into(), r#"{"x":2}"#.into())]);
    }
}
