//! Rooms: a room this client joined, its members kept live by the node's `joined` (the room as
//! it is) and `room` (joins and updates put, leaves removed, per user and device) messages, and
//! joined again with its last meta after each reconnect.

use std::{
    collections::HashMap,
    pin::Pin,
    sync::{Arc, Mutex},
    task::{Context, Poll},
};

use futures::Stream;
use serde::Deserialize;
use serde_json::Value;
use tokio::sync::mpsc;

use crate::connection::Command;

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

/// A room this client joined: a [`Stream`] of its changes (the first, the room as it is).
/// Left when [`Room::leave`] is called or it is dropped.
pub struct Room {
    pub(crate) name: String,
    pub(crate) view: Arc<Mutex<RoomView>>,
    pub(crate) changes: mpsc::UnboundedReceiver<RoomChange>,
    pub(crate) commands: mpsc::UnboundedSender<Command>,
}

impl Room {
    /// The room's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Who is in it now.
    pub fn members(&self) -> Members {
        self.view.lock().expect("room lock").members.clone()
    }

    /// Users in it now.
    pub fn member_count(&self) -> usize {
        self.view.lock().expect("room lock").count
    }

    /// Who is typing now.
    pub fn typing_users(&self) -> Vec<String> {
        self.view.lock().expect("room lock").typing.clone()
    }

    /// This device's meta in the room (kept for joining again after a reconnect).
    pub fn update(&self, meta: Value) {
        let _ = self.commands.send(Command::Meta { room: self.name.clone(), meta });
    }

    /// This person is typing (send it every few seconds while they are); `false` stops.
    pub fn typing(&self, active: bool) {
        let _ = self.commands.send(Command::Typing { room: self.name.clone(), active });
    }

    /// Leaves the room.
    pub fn leave(self) {}
}

impl Stream for Room {
    type Item = RoomChange;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<RoomChange>> {
        self.changes.poll_recv(cx)
    }
}

impl Drop for Room {
    fn drop(&mut self) {
        let _ = self.commands.send(Command::Leave { room: self.name.clone() });
    }
}
