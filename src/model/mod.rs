//! The domain: user ids, statuses, and a presence as stored and as shown. Validation lives in the
//! typed constructors, so that an invalid value cannot exist past the HTTP edge.

mod presence;
mod user_id;

pub use presence::{
    CompactPresence, Presence, PresenceUpdate, Status, StoredPresence, UpdateError, rfc3339_millis,
};
pub use user_id::{UserId, UserIdError, is_valid_token};
