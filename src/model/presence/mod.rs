//! A presence as the KV stores it ([`StoredPresence`], JSON), as a node holds it in memory
//! ([`CompactPresence`]: no user id, which is the cache key, and a shared node id), and as a
//! reader sees it ([`Presence`], borrowing from the compact form).
//!
//! Expiry is evaluated when a compact presence is turned into a view, at read time: a presence
//! whose `ttl` ran out reads as `offline` with its message cleared and `last_seen` kept, whatever
//! a background job has or has not done yet.

mod compact;
mod json;
mod status;
mod stored;
mod time;
mod view;

pub(crate) use compact::{CompactPresence, same_view};
pub(crate) use json::string as json_string;
pub(crate) use status::Status;
pub(crate) use stored::StoredPresence;
pub(crate) use time::{millis, rfc3339_millis};
pub(crate) use view::Presence;

#[cfg(test)]
mod tests;
