//! What the node tells: presences, changes, the connection's state.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// A status.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    /// Online.
    Online,
    /// Away (idle, or said so).
    Away,
    /// Busy.
    Busy,
    /// Offline.
    Offline,
    /// Appears offline to everyone else (only its owner sees this).
    Invisible,
    /// A status this client does not know (a newer node).
    #[serde(other)]
    Other,
}

/// A user's presence, as the node shows it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Presence {
    /// Whose.
    pub user_id: String,
    /// Their status.
    pub status: Status,
    /// Their message, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// The rest as the node sent it (`last_seen`, `updated_at`, `devices`, ...).
    #[serde(flatten)]
    pub other: BTreeMap<String, serde_json::Value>,
}

/// What made a change.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChangeKind {
    /// A write, or a session that came or went.
    Update,
    /// The ttl ran out.
    Expire,
    /// The user was erased.
    Erase,
    /// A snapshot (after a (re)subscribe) showed the user otherwise than the view did.
    Snapshot,
}

/// A change to a watched user's presence.
#[derive(Debug, Clone, PartialEq)]
pub struct Change {
    /// Whose.
    pub user_id: String,
    /// What made it.
    pub kind: ChangeKind,
    /// The presence now.
    pub presence: Presence,
    /// The KV revision behind it (0 for a user never seen).
    pub revision: u64,
}

/// The client's connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConnectionState {
    /// Not connected (and, after [`crate::Client::close`] or a refused token, not trying).
    Disconnected,
    /// Connecting, or waiting to try again.
    Connecting,
    /// Connected: watches and rooms are live.
    Connected,
}

/// What the client tells besides changes.
#[derive(Debug, Clone)]
pub enum Event {
    /// The connection's state changed.
    State(ConnectionState),
    /// The node lost NATS (or its watcher fell behind): what it sends may be behind.
    Stale,
    /// It is back.
    Fresh,
    /// Something failed; with [`crate::Error::Unauthorized`] the client stopped.
    Error(crate::Error),
}

/// What [`crate::Client::set_status`] writes besides the status.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct StatusOptions {
    /// A message (at most 256 characters).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// Seconds until the status expires (the node's default when not given).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ttl: Option<u64>,
}
