//! A connection's rooms: what its token may join and read, the rooms it joined and watches
//! (unwatched when the connection ends), and its budget of `meta` and `typing` messages.

use std::{collections::HashSet, num::NonZeroU32, sync::Arc};

use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};

use crate::rooms::Rooms;

/// A connection's rooms: the token's claim, the rooms joined and watched (unwatched when the
/// connection ends), and its budget of `meta` and `typing` messages.
pub(super) struct RoomSide {
    rooms: Arc<Rooms>,
    subscriber: u64,
    /// The `rooms` claim of the token the session was started with.
    pub(super) grant: Option<Vec<String>>,
    pub(super) joined: HashSet<String>,
    pub(super) watched: HashSet<String>,
    pub(super) signals: DefaultDirectRateLimiter,
}

impl RoomSide {
    pub(super) fn new(rooms: Arc<Rooms>, subscriber: u64) -> Self {
        let settings = rooms.settings();
        let nz = |n: u32| NonZeroU32::new(n.max(1)).expect("at least 1");
        let quota = Quota::per_second(nz(settings.signals_per_second)).allow_burst(nz(settings.signal_burst));
        let signals = RateLimiter::direct(quota);
        Self { rooms, subscriber, grant: None, joined: HashSet::new(), watched: HashSet::new(), signals }
    }
}

impl Drop for RoomSide {
    fn drop(&mut self) {
        for room in self.joined.iter().chain(&self.watched) {
            self.rooms.unwatch(room, self.subscriber);
        }
    }
}
