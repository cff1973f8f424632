//! The domain: user ids, statuses, and a presence as stored, as held in memory and as shown.
//! Validation lives in the typed constructors, so that an invalid value cannot exist past the
//! HTTP edge. The bottom layer: it imports nothing else of the crate.

mod presence;
mod record;
mod user_id;

pub use presence::{
    CompactPresence, MAX_MESSAGE_CHARS, MAX_TTL, Presence, PresenceUpdate, Status, StoredPresence,
    UpdateError, rfc3339_millis,
};
pub use record::Record;
pub use user_id::{MAX_USER_ID_LEN, UserId, UserIdError, is_valid_token};
