//! A room as the client knows it: its members kept live by the node's `joined` (the room as it
//! is) and `room` (joins and updates put, leaves removed, per user and device) messages.

use std::collections::HashMap;

use serde::Deserialize;
use serde_json::Value;

/// A device in a room.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct Member {
    /// The device.
    pub device: String,
    /// Its kind (`web`, `mobile`, ...).
    pub kind: String,
    /// What it said of itself in the room.
    pub meta: Value,
    /// When it joined.
    pub joined_at: String,
}

/// Users in a room: user → their devices in it.
pub type Members = HashMap<String, Vec<Member>>;

/// What a room's change did (the whole room after a `joined`: everyone as joins).
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
pub struct RoomChange {
    /// Devices that came in, by user.
    #[serde(default)]
    pub joins: Members,
    /// Devices whose meta changed.
    #[serde(default)]
    pub updates: Members,
    /// Devices that left (with their last meta).
    #[serde(default)]
    pub leaves: Members,
    /// Who is typing now, when it changed.
    #[serde(default)]
    pub typing: Option<Vec<String>>,
    /// Users in the room after.
    #[serde(default)]
    pub count: Option<usize>,
}

/// A room as the client knows it.
#[derive(Debug, Default)]
pub(crate) struct RoomView {
    pub members: Members,
    pub count: usize,
    pub typing: Vec<String>,
}

impl RoomView {
    /// `joined`: the room as it is now.
    pub(crate) fn snapshot(&mut self, message: &Value) -> RoomChange {
        let members: Members = serde_json::from_value(message["members"].clone()).unwrap_or_default();
        let leaves = self
            .members
            .iter()
            .filter(|(u, _)| !members.contains_key(*u))
            .map(|(u, d)| (u.clone(), d.clone()));
        let change = RoomChange {
            joins: members.clone(),
            leaves: leaves.collect(),
            typing: serde_json::from_value(message["typing"].clone()).ok(),
            count: message["count"].as_u64().map(|c| c as usize),
            ..Default::default()
        };
        self.members = members;
        self.count = change.count.unwrap_or(self.members.len());
        self.typing = change.typing.clone().unwrap_or_default();
        change
    }

    /// `room`: a change.
    pub(crate) fn change(&mut self, message: &Value) -> Option<RoomChange> {
        let change: RoomChange = serde_json::from_value(message.clone()).ok()?;
        for (user, devices) in change.joins.iter().chain(&change.updates) {
            let entry = self.members.entry(user.clone()).or_default();
            entry.retain(|d| !devices.iter().any(|n| n.device == d.device));
            entry.extend(devices.iter().cloned());
        }
        for (user, devices) in &change.leaves {
            if let Some(entry) = self.members.get_mut(user) {
                entry.retain(|d| !devices.iter().any(|n| n.device == d.device));
                if entry.is_empty() {
                    self.members.remove(user);
                }
            }
        }
        if let Some(count) = change.count {
            self.count = count;
        }
        if let Some(typing) = &change.typing {
            self.typing = typing.clone();
        }
        Some(change)
    }
}
