//! `rooms:`: who may join and read rooms, and the limits on them (docs/rooms.md, "Rooms").

use std::time::Duration;

use serde::Deserialize;

use super::{ConfigError, units};
use crate::model::is_valid_room_pattern;

#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RoomsConfig {
    /// Any authenticated user may join and read any room (default: only those their token's
    /// `rooms` claim names).
    pub open: bool,
    /// Rooms anyone may read (members, counts, streams) without a token: patterns where `*`
    /// matches any run of characters. Default: none.
    pub public: Vec<String>,
    /// The largest `meta` a member may set, as compact JSON.
    pub max_meta_bytes: usize,
    /// Users listed in a room's members; beyond, `truncated` (the count stays exact).
    pub max_members_listed: usize,
    /// Rooms one device may be in at once.
    pub max_rooms_per_device: usize,
    /// A typing signal not renewed for this long ends.
    #[serde(with = "units::duration")]
    pub typing_ttl: Duration,
    /// `meta` and `typing` messages one connection may send per second on average...
    pub signals_per_second: u32,
    /// ...and in a burst; beyond, an `error` and the message is ignored.
    pub signal_burst: u32,
}

impl Default for RoomsConfig {
    fn default() -> Self {
        Self {
            open: false,
            public: Vec::new(),
            max_meta_bytes: 1024,
            max_members_listed: 1000,
            max_rooms_per_device: 50,
            typing_ttl: Duration::from_secs(10),
            signals_per_second: 5,
            signal_burst: 10,
        }
    }
}

impl RoomsConfig {
    pub(super) fn validate(&self) -> Result<(), ConfigError> {
        let fail = |key: &str, why: &str| Err(ConfigError::new(key, why));
        if !(2..=64 * 1024).contains(&self.max_meta_bytes) {
            return fail("rooms.max_meta_bytes", "must be between 2 and 65536");
        }
        if !(1..=10_000).contains(&self.max_members_listed) {
            return fail("rooms.max_members_listed", "must be between 1 and 10000");
        }
        if !(1..=1000).contains(&self.max_rooms_per_device) {
            return fail("rooms.max_rooms_per_device", "must be between 1 and 1000");
        }
        if self.typing_ttl < Duration::from_secs(1) || self.typing_ttl > Duration::from_secs(300) {
            return fail("rooms.typing_ttl", "must be between 1s and 5m");
        }
        if self.signals_per_second == 0 || self.signal_burst == 0 {
            let key =
                if self.signals_per_second == 0 { "rooms.signals_per_second" } else { "rooms.signal_burst" };
            return fail(key, "must be at least 1");
        }
        if !self.public.iter().all(|p| is_valid_room_pattern(p)) {
            return fail("rooms.public", "each pattern is 1 to 128 characters of A-Z a-z 0-9 _ - and `*`");
        }
        Ok(())
    }
}
