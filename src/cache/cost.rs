//! What an entry costs the cache, in approximate bytes: what bounds it (`cache.max_cost`).

use crate::model::{Device, Record};

/// Bytes a cache entry costs beyond its key and message: the cache's slot and table, the record,
/// the expiry schedule's share (measured: 236 bytes of process memory per presence with a
/// 7-byte id and a 27-byte message, a million cached; BENCHMARKS.md).
pub(crate) const ENTRY_OVERHEAD: u64 = 200;

/// Bytes a device of a user with sessions costs beyond its id (its entry, its share of the list).
pub(crate) const DEVICE_OVERHEAD: u64 = 48;

/// Bytes a device's membership of a room costs beyond its room id and meta.
pub(crate) const ROOM_OVERHEAD: u64 = 48;

/// The approximate cost in bytes of caching `value` under `key`.
pub(crate) fn cost(key: &str, value: &Record) -> u32 {
    let Some(p) = value.presence.as_ref() else { return (ENTRY_OVERHEAD + key.len() as u64) as u32 };
    let message = p.message.as_ref().map_or(0, |m| m.len()) as u64;
    let rooms = |d: &Device| -> u64 {
        d.rooms.iter().map(|j| ROOM_OVERHEAD + (j.room.len() + j.meta.json().len()) as u64).sum()
    };
    let devices: u64 = p.devices().iter().map(|d| DEVICE_OVERHEAD + d.id.len() as u64 + rooms(d)).sum();
    (ENTRY_OVERHEAD + key.len() as u64 + message + devices).min(u64::from(u32::MAX)) as u32
}
