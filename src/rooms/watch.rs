//! Reading rooms: watching one (the snapshot, then its changes), resuming a stream, a read,
//! counts.

use std::sync::Arc;

use super::{Rooms, room::Room};
use crate::{live::Subscriber, telemetry::metrics::KindLabels};

impl Rooms {
    /// `subscriber` watches `room` (as `viewer`; `members`: the members too, else the count):
    /// the snapshot it starts from, as a message of `kind` (`joined`, `room_snapshot`). Changes
    /// waiting for the window go to the other watchers first: what follows is after the snapshot.
    pub(crate) fn watch(
        &self,
        room: &str,
        (subscriber, viewer): (&Arc<Subscriber>, Option<&str>),
        members: bool,
        kind: Option<&'static str>,
    ) -> String {
        self.watch_from(room, (subscriber, viewer), members, kind).0
    }

    /// [`Rooms::watch`], and the stream cursor the snapshot stands at.
    pub(crate) fn watch_from(
        &self,
        room: &str,
        (subscriber, viewer): (&Arc<Subscriber>, Option<&str>),
        members: bool,
        kind: Option<&'static str>,
    ) -> (String, String) {
        let mut state = self.lock();
        let name = state.rooms.get_key_value(room).map_or_else(|| Arc::from(room), |(k, _)| k.clone());
        let entry = state.rooms.entry(name.clone()).or_default();
        let viewer = viewer.map(Arc::from);
        entry.watch(subscriber, viewer.clone(), members, true);
        self.metrics.rooms.messages.get_or_create(&KindLabels { kind: "snapshot" }).inc();
        let listed = (kind, members, self.settings.max_members_listed);
        let snapshot = entry.snapshot(&name, viewer.as_deref(), listed);
        let text = serde_json::to_string(&snapshot).expect("a snapshot serializes");
        (text, format!("{}-{}", self.epoch, entry.seq))
    }

    /// `subscriber` no longer watches `room`.
    pub(crate) fn unwatch(&self, room: &str, subscriber: u64) {
        let mut state = self.lock();
        let Some(entry) = state.rooms.get_mut(room) else { return };
        entry.unwatch(Some(subscriber));
        if entry.is_idle() {
            state.rooms.remove(room);
        }
    }

    /// A stream's cursor for `room` as of now (its last public message).
    pub(crate) fn cursor(&self, room: &str) -> String {
        let seq = self.lock().rooms.get(room).map_or(0, |r| r.seq);
        format!("{}-{seq}", self.epoch)
    }

    /// Resumes a stream from `cursor`: registers `subscriber` and queues the public messages since,
    /// or `None` (and nothing registered) if the cursor is from another run or too old.
    pub(crate) fn resume(&self, room: &str, subscriber: &Arc<Subscriber>, cursor: &str) -> Option<()> {
        let (epoch, seq) = cursor.rsplit_once('-')?;
        let seq: u64 = seq.parse().ok()?;
        if epoch != self.epoch {
            return None;
        }
        let mut state = self.lock();
        // What the log does not hold yet (the batch under way) comes to the new watcher with
        // everyone's: it starts where the log ends.
        let missed = state.rooms.get(room)?.since(seq)?;
        for message in missed {
            subscriber.push_room(message);
        }
        state.rooms.get_mut(room).expect("present").watch(subscriber, None, true, false);
        Some(())
    }

    /// The room as `viewer` sees it, as the REST read's `data`.
    pub(crate) fn read(&self, room: &str, viewer: Option<&str>) -> String {
        let state = self.lock();
        let empty = Room::default();
        let entry = state.rooms.get(room).unwrap_or(&empty);
        let listed = (None, true, self.settings.max_members_listed);
        serde_json::to_string(&entry.snapshot(room, viewer, listed)).expect("a snapshot serializes")
    }

    /// Each room's count and connections, as `viewer` sees them.
    pub(crate) fn counts(&self, rooms: &[String], viewer: Option<&str>) -> String {
        let state = self.lock();
        let empty = Room::default();
        let mut out = serde_json::Map::new();
        for room in rooms {
            let entry = state.rooms.get(room.as_str()).unwrap_or(&empty);
            let s = entry.snapshot(room, viewer, (None, false, 0));
            out.insert(room.clone(), serde_json::json!({"count": s.count, "connections": s.connections}));
        }
        serde_json::Value::Object(out).to_string()
    }
}
