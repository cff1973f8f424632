//! A presence as the KV bucket stores it (JSON): the public fields plus the absolute expiry
//! time and the devices; what a write and an expiry transition make of the record before.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::*;
use crate::model::{PresenceUpdate, UserId, device::StoredDevices};

/// What a presence looks like in the KV bucket: the public fields plus the absolute expiry time.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct StoredPresence {
    pub user_id: String,
    pub status: Status,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    // Times are written as the API shows them (milliseconds, always three digits), so that the
    // stored text and the API's agree even on a whole second.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        serialize_with = "super::time::rfc3339",
        deserialize_with = "super::time::read_option"
    )]
    pub last_seen: Option<DateTime<Utc>>,
    #[serde(serialize_with = "rfc3339_millis", deserialize_with = "super::time::read")]
    pub updated_at: DateTime<Utc>,
    pub node_id: String,
    /// Seconds, as the client asked or the default.
    pub ttl: u64,
    /// `updated_at + ttl`, in UTC: the moment this presence reads as offline.
    #[serde(serialize_with = "rfc3339_millis", deserialize_with = "super::time::read")]
    pub expires_at: DateTime<Utc>,
    /// The devices the user holds sessions on, by device id (none for a user without one).
    #[serde(default, skip_serializing_if = "StoredDevices::is_empty")]
    pub devices: StoredDevices,
}

impl StoredPresence {
    /// The record a write produces. `last_seen` moves with every write of a live status; an
    /// `offline` or `invisible` write keeps what the previous record knew. The devices are the
    /// previous record's: a client's status does not end anyone's sessions.
    pub(crate) fn from_update(
        user: &UserId,
        update: PresenceUpdate,
        previous: Option<&StoredPresence>,
        node_id: &str,
        now: DateTime<Utc>,
    ) -> Self {
        let now = truncate_to_millis(now);
        let last_seen = if update.status.is_live() { Some(now) } else { previous.and_then(|p| p.last_seen) };
        let ttl = update.ttl.as_secs();
        Self {
            user_id: user.to_string(),
            status: update.status,
            message: update.message,
            last_seen,
            updated_at: now,
            node_id: node_id.to_string(),
            ttl,
            expires_at: now + chrono::Duration::seconds(ttl as i64),
            devices: previous.map(|p| p.devices.clone()).unwrap_or_default(),
        }
    }
}

impl StoredPresence {
    /// The record an expiry transition writes: `offline`, message cleared, everything else
    /// (`last_seen`, `updated_at` of the user's last write, `expires_at`, the devices) kept. An
    /// `invisible` user's last write stays hidden: `updated_at` becomes the time they were last
    /// seen, as others saw it all along.
    pub(crate) fn expired(&self) -> StoredPresence {
        let mut expired = StoredPresence { status: Status::Offline, message: None, ..self.clone() };
        if self.status == Status::Invisible
            && let Some(seen) = self.last_seen
        {
            expired.updated_at = seen;
            expired.expires_at = seen + chrono::Duration::seconds(self.ttl as i64);
        }
        expired
    }
}

fn truncate_to_millis(t: DateTime<Utc>) -> DateTime<Utc> {
    DateTime::from_timestamp_millis(t.timestamp_millis()).unwrap_or(t)
}
