//! A presence as a node holds it in memory: no user id (the cache key), one shared copy of
//! each node id, the expiry computed; the status it shows at a moment (expiry, sessions, the
//! precedence rule) and the view it turns into.

use std::{
    borrow::Cow,
    collections::HashSet,
    sync::{Arc, Mutex, OnceLock},
};

use chrono::{DateTime, Utc};

use super::*;
use crate::model::{
    Joined, StoredRoom,
    device::{Device, StoredDevice, by_kind, derived},
};

/// A presence as a node holds it in memory: about half the size of [`StoredPresence`].
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct CompactPresence {
    pub status: Status,
    pub message: Option<Box<str>>,
    pub last_seen: Option<DateTime<Utc>>,
    pub updated_at: DateTime<Utc>,
    /// Shared between all presences written by the same node.
    pub node_id: Arc<str>,
    pub ttl: u32,
    /// The devices the user holds sessions on (one pointer for the many users without any).
    pub devices: Option<Box<Devices>>,
    // No `expires_at`: every write makes it `updated_at + ttl` (and the expiry job keeps both),
    // so it is computed, 12 bytes less for each of a million presences.
}

/// The devices of a user, as a node holds them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Devices(pub Vec<Device>);

/// One shared copy of each node id (there are few nodes and a million presences).
pub(super) fn intern(node_id: &str) -> Arc<str> {
    const MAX_INTERNED: usize = 4096;
    static IDS: OnceLock<Mutex<HashSet<Arc<str>>>> = OnceLock::new();
    let mut ids = IDS.get_or_init(Default::default).lock().expect("interner lock");
    if let Some(id) = ids.get(node_id) {
        return id.clone();
    }
    let id: Arc<str> = Arc::from(node_id);
    if ids.len() < MAX_INTERNED {
        ids.insert(id.clone());
    }
    id
}

impl From<&StoredPresence> for CompactPresence {
    fn from(p: &StoredPresence) -> Self {
        Self {
            status: p.status,
            message: p.message.as_deref().map(Box::from),
            last_seen: p.last_seen,
            updated_at: p.updated_at,
            node_id: intern(&p.node_id),
            ttl: u32::try_from(p.ttl).unwrap_or(u32::MAX),
            devices: (!p.devices.is_empty()).then(|| {
                let devices = p.devices.iter().map(|(id, d)| Device {
                    id: Box::from(id.as_str()),
                    kind: d.kind,
                    node: intern(&d.node),
                    idle: d.idle,
                    rooms: d
                        .rooms
                        .iter()
                        .map(|(room, r)| Joined {
                            room: Arc::from(room.as_str()),
                            meta: r.meta.clone(),
                            joined_at: r.joined_at,
                        })
                        .collect(),
                });
                Box::new(Devices(devices.collect()))
            }),
        }
    }
}

impl CompactPresence {
    /// The moment this presence reads as offline: `updated_at + ttl`.
    pub(crate) fn expires_at(&self) -> DateTime<Utc> {
        self.updated_at + chrono::Duration::seconds(i64::from(self.ttl))
    }

    pub(crate) fn is_expired(&self, now: DateTime<Utc>) -> bool {
        self.status.expires() && now >= self.expires_at()
    }

    /// The devices the user holds sessions on.
    pub(crate) fn devices(&self) -> &[Device] {
        self.devices.as_deref().map_or(&[], |d| &d.0)
    }

    /// The status a client set, while its ttl holds.
    fn manual(&self, now: DateTime<Utc>) -> Option<Status> {
        (self.status.expires() && !self.is_expired(now)).then_some(self.status)
    }

    /// The status at `now` as the owner sees it (docs/sessions.md, "Sessions", the precedence rule): the
    /// status a client set while its ttl holds (`invisible`, `busy`, `away`, `online`), else
    /// what the devices say (`online` if any is active, `away` if all are idle), else `offline`.
    pub(crate) fn owner_status(&self, now: DateTime<Utc>) -> Status {
        self.manual(now).or_else(|| derived(self.devices())).unwrap_or(Status::Offline)
    }

    /// What everyone but the owner sees at `now`: expiry applied, the status derived from the
    /// sessions, and an `invisible` user as an `offline` one whose last write was when they were
    /// last seen.
    ///
    /// An `invisible` write stays hidden after its ttl ran out too (then the devices decide the
    /// status, as for anyone).
    pub(crate) fn view<'a>(&'a self, user_id: &'a str, now: DateTime<Utc>) -> Presence<'a> {
        if self.status != Status::Invisible {
            return self.owner_view(user_id, now);
        }
        let hiding = self.manual(now).is_some();
        Presence {
            user_id: Cow::Borrowed(user_id),
            status: if hiding { Status::Offline } else { self.owner_status(now) },
            message: None,
            last_seen: self.last_seen,
            updated_at: self.last_seen,
            node_id: self.last_seen.map(|_| Cow::Borrowed(&*self.node_id)),
            ttl: None,
            devices: if hiding { None } else { self.devices.as_ref().map(|d| by_kind(&d.0)) },
        }
    }

    /// The status everyone but the owner sees at `now`.
    pub(crate) fn shown_status(&self, now: DateTime<Utc>) -> Status {
        match self.owner_status(now) {
            Status::Invisible => Status::Offline,
            status => status,
        }
    }

    /// What the owner sees at `now`: as [`CompactPresence::view`], with `invisible` as it is.
    /// The message and the ttl belong to the status a client set: shown while it holds.
    pub(crate) fn owner_view<'a>(&'a self, user_id: &'a str, now: DateTime<Utc>) -> Presence<'a> {
        let manual = self.manual(now).is_some();
        let devices = self.devices.as_ref().map(|d| by_kind(&d.0));
        Presence {
            user_id: Cow::Borrowed(user_id),
            status: self.owner_status(now),
            message: if manual { self.message.as_deref().map(Cow::Borrowed) } else { None },
            last_seen: self.last_seen,
            updated_at: Some(self.updated_at),
            node_id: Some(Cow::Borrowed(&self.node_id)),
            ttl: manual.then_some(u64::from(self.ttl)),
            devices,
        }
    }

    /// The record as the KV stores it (every field of it is held here).
    pub(crate) fn to_stored(&self, user_id: &str) -> StoredPresence {
        let devices = self.devices().iter().map(|d| {
            let rooms = d
                .rooms
                .iter()
                .map(|j| (j.room.to_string(), StoredRoom { meta: j.meta.clone(), joined_at: j.joined_at }));
            let stored =
                StoredDevice { kind: d.kind, node: d.node.to_string(), idle: d.idle, rooms: rooms.collect() };
            (d.id.to_string(), stored)
        });
        StoredPresence {
            user_id: user_id.to_string(),
            status: self.status,
            message: self.message.as_deref().map(str::to_string),
            last_seen: self.last_seen,
            updated_at: self.updated_at,
            node_id: self.node_id.to_string(),
            ttl: u64::from(self.ttl),
            expires_at: self.expires_at(),
            devices: devices.collect(),
        }
    }
}

/// Whether two presences of `user` look the same to everyone but the owner at `now`: a change
/// between them is not announced (a device that moved to another node, a write while invisible).
pub(crate) fn same_view(
    user: &str,
    a: Option<&CompactPresence>,
    b: Option<&CompactPresence>,
    now: DateTime<Utc>,
) -> bool {
    match (a, b) {
        (Some(a), Some(b)) => a.view(user, now) == b.view(user, now),
        (None, None) => true,
        _ => false,
    }
}
