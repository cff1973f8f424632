//! The domain: user ids, statuses, and a presence as stored, as held in memory and as shown.
//! Validation lives in the typed constructors, so that an invalid value cannot exist past the
//! HTTP edge. The bottom layer: it imports nothing else of the crate.

mod device;
mod presence;
mod record;
mod room;
mod update;
mod user_id;

pub(crate) use device::{Device, DeviceKind, Held, StoredDevice, StoredDevices};
pub(crate) use presence::{
    CompactPresence, Presence, Status, StoredPresence, json_string, millis, rfc3339_millis, same_view,
};
pub(crate) use record::Record;
pub(crate) use room::{
    Joined, Meta, RoomError, StoredRoom, is_valid_room, is_valid_room_pattern, room_matches,
};
pub(crate) use update::{MAX_TTL, PresenceUpdate, UpdateError};
pub(crate) use user_id::{UserId, is_valid_token};
