//! The devices a user holds sessions on (docs/sessions.md, "Sessions"): as the KV stores them, inside the
//! user's record ([`StoredDevice`], keyed by the client's device id), as a node holds them
//! ([`Device`]), and how they add up to a status.

use std::{collections::BTreeMap, str::FromStr, sync::Arc};

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::{
    Status,
    room::{Joined, StoredRoom},
};

/// What kind of client a device is, as its `hello` says.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub(crate) enum DeviceKind {
    Web,
    Mobile,
    Desktop,
    Other,
}

impl FromStr for DeviceKind {
    type Err = ();
    fn from_str(s: &str) -> Result<Self, ()> {
        match s {
            "web" => Ok(DeviceKind::Web),
            "mobile" => Ok(DeviceKind::Mobile),
            "desktop" => Ok(DeviceKind::Desktop),
            "other" => Ok(DeviceKind::Other),
            _ => Err(()),
        }
    }
}

/// One device's session as the KV stores it: which kind, which node holds it, and whether the
/// person has been idle on it for `sessions.idle_after`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct StoredDevice {
    pub kind: DeviceKind,
    pub node: String,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub idle: bool,
    /// The rooms this device joined, by room id.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub rooms: BTreeMap<String, StoredRoom>,
}

impl StoredDevice {
    /// A device in no room.
    #[cfg(test)]
    pub(crate) fn new(kind: DeviceKind, node: String, idle: bool) -> Self {
        Self { kind, node, idle, rooms: BTreeMap::new() }
    }
}

/// The devices of one user, by device id.
pub(crate) type StoredDevices = BTreeMap<String, StoredDevice>;

/// One device as a node holds it in memory (the node id shared, like a presence's).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Device {
    pub id: Box<str>,
    pub kind: DeviceKind,
    pub node: Arc<str>,
    pub idle: bool,
    /// The rooms it joined, by room id.
    pub rooms: Box<[Joined]>,
}

impl Device {
    pub(crate) fn status(&self) -> Status {
        if self.idle { Status::Away } else { Status::Online }
    }
}

/// A device whose session this node holds, as the record should say it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Held {
    pub device: Arc<str>,
    pub kind: DeviceKind,
    pub idle: bool,
    /// False while the session is in its grace.
    pub connected: bool,
    /// The rooms it is in, by room id.
    pub rooms: Vec<Joined>,
}

/// What a user's devices say on their own: `online` if any is active, `away` if all are idle,
/// nothing without a device.
pub(crate) fn derived(devices: &[Device]) -> Option<Status> {
    let first = devices.first()?;
    Some(if devices.iter().any(|d| !d.idle) { Status::Online } else { first.status() })
}

/// Each kind's status, as reads show it (`{"web": "online", "mobile": "away"}`): a kind is
/// online if any of its devices is active.
pub(crate) fn by_kind(devices: &[Device]) -> BTreeMap<DeviceKind, Status> {
    let mut kinds = BTreeMap::new();
    for device in devices {
        let status = kinds.entry(device.kind).or_insert(Status::Away);
        if !device.idle {
            *status = Status::Online;
        }
    }
    kinds
}
