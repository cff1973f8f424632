//! Who is in which room as the records say, for the webhooks (docs/webhooks.md, "Room events"):
//! on a center with an endpoint that hears rooms, the watcher hands every change here in the
//! bucket's order, and each user's first device in a room, last device out, a room's first user
//! and its last, become notices (`room.joined`, `room.left`, `room.occupied`, `room.vacated`).
//!
//! Only records count, never this node's sessions (which run ahead of them): so every center node
//! sees the same changes in the same order and makes the same notices with the same ids, which
//! the notices stream stores once. An invisible user is in no room here, as others see it; an
//! erased user's leaving is told of only as a room that emptied (nothing names them any more).
//! The changes the watcher replays at start are where things stand, not news: they tell nothing.

use std::{
    collections::{BTreeSet, HashMap},
    sync::{Arc, Mutex},
};

use bytes::Bytes;
use chrono::Utc;
use serde_json::json;
use tokio::sync::mpsc;

use crate::{
    lifecycle::{room_notice, user_notice},
    model::{CompactPresence, Record, Status, millis},
};

/// One notice to store: subject, id, body.
pub(crate) type Notice = (String, String, Bytes);

/// The center's view of who is in which room.
pub(crate) struct Occupancy {
    state: Mutex<State>,
    out: mpsc::UnboundedSender<Notice>,
}

#[derive(Default)]
struct State {
    users: HashMap<Arc<str>, BTreeSet<Arc<str>>>,
    counts: HashMap<Arc<str>, usize>,
}

/// What one change is: the user's record at its revision, whether it erased them, and whether
/// it is news (not replayed at start).
pub(crate) struct Change<'a> {
    pub user: &'a str,
    pub record: &'a Record,
    pub erased: bool,
    pub news: bool,
}

impl Occupancy {
    /// The view, and where its notices go.
    pub(crate) fn new() -> (Arc<Self>, mpsc::UnboundedReceiver<Notice>) {
        let (out, notices) = mpsc::unbounded_channel();
        (Arc::new(Self { state: Mutex::default(), out }), notices)
    }

    /// The bucket was replaced: its records are replayed from nothing.
    pub(crate) fn reset(&self) {
        *self.state.lock().expect("occupancy lock") = State::default();
    }

    pub(crate) fn observe(&self, change: &Change<'_>) {
        let presence = change.record.presence.as_ref();
        let now: BTreeSet<Arc<str>> = presence.filter(|p| !hidden(p)).map(rooms_of).unwrap_or_default();
        let at = presence.map_or_else(Utc::now, |p| p.updated_at);
        let mut state = self.state.lock().expect("occupancy lock");
        let State { users, counts } = &mut *state;
        let before = match now.is_empty() {
            true => users.remove(change.user).unwrap_or_default(),
            false => users.insert(Arc::from(change.user), now.clone()).unwrap_or_default(),
        };
        let revision = change.record.revision;
        let tell = |kind: &str, room: &str, count: usize, user: Option<&str>| {
            if !change.news {
                return;
            }
            let notice = match user {
                Some(user) => (
                    user_notice(user),
                    format!("room-{kind}.{room}.{user}.{revision}"),
                    json!({"room_id": room, "user_id": user, "count": count, "revision": revision}),
                ),
                None => (
                    room_notice(room),
                    format!("room-{kind}.{room}.{revision}"),
                    json!({"room_id": room, "count": count, "revision": revision}),
                ),
            };
            let body = json!({"type": format!("room.{kind}"), "timestamp": millis(&at), "data": notice.2});
            let _ = self.out.send((notice.0, notice.1, Bytes::from(body.to_string())));
        };
        let named = (!change.erased).then_some(change.user);
        for room in before.difference(&now) {
            let count = counts.get_mut(room).map_or(0, |c| {
                *c = c.saturating_sub(1);
                *c
            });
            if named.is_some() {
                tell("left", room, count, named);
            }
            if count == 0 {
                counts.remove(room);
                tell("vacated", room, 0, None);
            }
        }
        for room in now.difference(&before) {
            let count = counts.entry(room.clone()).or_default();
            *count += 1;
            let count = *count;
            if count == 1 {
                tell("occupied", room, 1, None);
            }
            tell("joined", room, count, Some(change.user));
        }
    }
}

/// Whether others see the user as offline whatever their rooms.
fn hidden(presence: &CompactPresence) -> bool {
    presence.status == Status::Invisible && !presence.is_expired(Utc::now())
}

/// Every room any of the user's devices is in.
fn rooms_of(presence: &CompactPresence) -> BTreeSet<Arc<str>> {
    presence.devices().iter().flat_map(|d| d.rooms.iter().map(|j| j.room.clone())).collect()
}

#[cfg(test)]
mod tests {
    use serde_json::Value;

    use super::*;
    use crate::rooms::member::tests::record;

    fn change(occupancy: &Occupancy, user: &str, revision: u64, rooms: &[&str], news: bool) {
        let presence = Some(record(&[("d1", "n1", rooms), ("d2", "n2", rooms)]));
        let record = Record { revision, presence };
        occupancy.observe(&Change { user, record: &record, erased: false, news });
    }

    fn told(notices: &mut mpsc::UnboundedReceiver<Notice>) -> Vec<(String, String, Value)> {
        std::iter::from_fn(|| notices.try_recv().ok())
            .map(|(_, id, body)| {
                let body: Value = serde_json::from_slice(&body).unwrap();
                (body["type"].as_str().unwrap().to_string(), id, body["data"].clone())
            })
            .collect()
    }

    #[test]
    fn the_first_user_in_and_the_last_out_are_told_once_with_ids_of_their_change() {
        let (occupancy, mut notices) = Occupancy::new();
        change(&occupancy, "ann", 1, &["a"], false);
        assert!(told(&mut notices).is_empty(), "a replay tells nothing");
        change(&occupancy, "bob", 2, &["a", "b"], true);
        let kinds: Vec<(String, String)> = told(&mut notices).into_iter().map(|(k, id, _)| (k, id)).collect();
        assert_eq!(
            kinds,
            [
                ("room.joined".into(), "room-joined.a.bob.2".into()),
                ("room.occupied".into(), "room-occupied.b.2".into()),
                ("room.joined".into(), "room-joined.b.bob.2".into()),
            ]
        );
        // Two devices in `a`: one leaving is no news; the same rooms again neither.
        change(&occupancy, "bob", 3, &["a", "b"], true);
        assert!(told(&mut notices).is_empty());
        change(&occupancy, "ann", 4, &[], true);
        let left = told(&mut notices);
        assert_eq!(left.len(), 1);
        assert_eq!(left[0].2, json!({"room_id": "a", "user_id": "ann", "count": 1, "revision": 4}));
        change(&occupancy, "bob", 5, &[], true);
        let kinds: Vec<String> = told(&mut notices).into_iter().map(|(k, _, _)| k).collect();
        assert_eq!(kinds, ["room.left", "room.vacated", "room.left", "room.vacated"]);
    }

    #[test]
    fn an_invisible_user_is_in_no_room_and_an_erased_one_is_not_named() {
        let (occupancy, mut notices) = Occupancy::new();
        change(&occupancy, "ann", 1, &["a"], true);
        assert_eq!(told(&mut notices).len(), 2);
        let mut hidden = record(&[("d1", "n1", &["a"])]);
        hidden.status = Status::Invisible;
        (hidden.updated_at, hidden.ttl) = (Utc::now(), 3600);
        let record = Record { revision: 2, presence: Some(hidden) };
        occupancy.observe(&Change { user: "ann", record: &record, erased: false, news: true });
        let kinds: Vec<String> = told(&mut notices).into_iter().map(|(k, _, _)| k).collect();
        assert_eq!(kinds, ["room.left", "room.vacated"]);
        change(&occupancy, "bob", 3, &["a"], true);
        told(&mut notices);
        let gone = Record { revision: 4, presence: None };
        occupancy.observe(&Change { user: "bob", record: &gone, erased: true, news: true });
        let told = told(&mut notices);
        assert_eq!(told.len(), 1);
        assert_eq!(
            (told[0].0.as_str(), &told[0].2),
            ("room.vacated", &json!({"room_id": "a", "count": 0, "revision": 4}))
        );
    }
}
