//! What happens to a presence over time: the expiry schedule and job ([`schedule`],
//! [`expiry`]), and the update and expire events with the audit log that keeps them
//! ([`events`]).
//!
//! Expiry keeps `last_seen`: a presence is stored without a per-key TTL (an expired key would
//! vanish with its `last_seen`), and each node schedules the transition of every live presence it
//! learns of from the KV watcher or its own writes. At the expiry time a node compare-and-sets the
//! record to `offline` on the revision it scheduled; only the node whose write lands publishes the
//! expire event, so there is exactly one, however many nodes run the job, and a refresh that came
//! first makes the compare-and-set fail. See docs/architecture.md, "Expiry".
//!
//! A node killed between a change and its event leaves the audit log short of that event: the
//! center's [`repair`] finds such records and stores their events.

pub(crate) mod events;
pub(crate) mod expiry;
pub(crate) mod repair;
pub(crate) mod schedule;

pub(crate) use events::{
    EventError, EventKind, Events, NOTICE_SUBJECTS, PresenceEvent, erased_notice, notices_stream,
    room_notice, user_notice,
};
pub(crate) use expiry::Expirer;
pub(crate) use repair::Repair;
pub(crate) use schedule::ExpiryQueue;
