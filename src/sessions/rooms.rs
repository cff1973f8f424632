//! What a session does in rooms: join, leave, set its meta, type. The table changes at once (and
//! with it this node's rooms); the record follows like any change of the session.

use std::sync::Arc;

use chrono::Utc;

use super::{JoinError, Session};
use crate::model::Meta;

impl Session {
    /// This connection joins `room` with `meta` (again: the meta is set, nothing else changes).
    pub(crate) async fn join(&self, room: &str, meta: Meta) -> Result<(), JoinError> {
        let sessions = &self.sessions;
        // The user's record first: whether they are invisible decides who sees them; and a
        // device back from another node within its grace keeps the time it joined.
        let mut since = Utc::now();
        if let Some(record) = sessions.directory.peek(&self.user).await {
            sessions.rooms.landed(&self.user, &record);
            let devices = record.presence.as_ref().map_or(&[][..], |p| p.devices());
            let device = devices.iter().find(|d| *d.id == *self.device);
            if let Some(joined) = device.and_then(|d| d.rooms.iter().find(|j| *j.room == *room)) {
                since = joined.joined_at;
            }
        }
        let room: Arc<str> = Arc::from(room);
        let max = sessions.rooms.settings().max_rooms_per_device;
        let mut table = sessions.lock();
        let changed = table.join((&self.user, &self.device, self.conn), &room, meta, since, max)?;
        if changed {
            sessions.mark(&mut table, self.user.clone());
        }
        Ok(())
    }

    /// This device leaves `room`: true if it was in it.
    pub(crate) fn leave(&self, room: &str) -> Result<bool, JoinError> {
        let mut table = self.sessions.lock();
        let left = table.leave(&self.user, &self.device, room)?;
        if left {
            self.sessions.mark(&mut table, self.user.clone());
        }
        Ok(left)
    }

    /// This device's meta in `room` is now `meta`.
    pub(crate) fn set_meta(&self, room: &str, meta: Meta) -> Result<(), JoinError> {
        let mut table = self.sessions.lock();
        if table.set_meta(&self.user, &self.device, room, meta)? {
            self.sessions.mark(&mut table, self.user.clone());
        }
        Ok(())
    }

    /// The person is typing in `room` (a room this device is in), or stopped.
    pub(crate) fn typing(&self, room: &str, active: bool) -> Result<(), JoinError> {
        if !self.sessions.lock().is_member(&self.user, &self.device, room) {
            return Err(JoinError::NotMember);
        }
        self.sessions.rooms.typing(&self.user, room, active);
        Ok(())
    }
}
