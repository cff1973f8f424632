//! A presence as a reader sees it: borrowed from the compact form on the read path, owned in
//! events; times in RFC 3339 with milliseconds ([`super::time`]).

use std::{borrow::Cow, collections::BTreeMap};

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::{time::rfc3339, *};
use crate::model::{UserId, device::DeviceKind};

/// A presence as the API shows it (docs/api.md, "What a user of the API must know"). It
/// borrows from the cache on the read path; events own theirs (`Presence<'static>`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub(crate) struct Presence<'a> {
    #[schema(value_type = String)]
    pub user_id: Cow<'a, str>,
    pub status: Status,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<String>)]
    pub message: Option<Cow<'a, str>>,
    /// The last time the user was known to be active; absent for a user never seen.
    #[serde(default, skip_serializing_if = "Option::is_none", serialize_with = "rfc3339")]
    #[schema(value_type = Option<String>, format = DateTime)]
    pub last_seen: Option<DateTime<Utc>>,
    /// The time of the user's last write; absent for a user never seen.
    #[serde(default, skip_serializing_if = "Option::is_none", serialize_with = "rfc3339")]
    #[schema(value_type = Option<String>, format = DateTime)]
    pub updated_at: Option<DateTime<Utc>>,
    /// The node that accepted the last write; absent for a user never seen.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<String>)]
    pub node_id: Option<Cow<'a, str>>,
    /// Seconds the status a client set holds without a refresh; present only while it holds
    /// (not once it is offline, by a write or by expiry, nor for a status that sessions derive).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ttl: Option<u64>,
    /// Each kind of device the user holds a session on, with its status; absent without one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<HashMap<String, Status>>, example = json!({"web": "online", "mobile": "away"}))]
    pub devices: Option<BTreeMap<DeviceKind, Status>>,
}

impl<'a> Presence<'a> {
    /// The same presence, owning its strings.
    pub(crate) fn into_owned(self) -> Presence<'static> {
        Presence {
            user_id: Cow::Owned(self.user_id.into_owned()),
            status: self.status,
            message: self.message.map(|m| Cow::Owned(m.into_owned())),
            last_seen: self.last_seen,
            updated_at: self.updated_at,
            node_id: self.node_id.map(|n| Cow::Owned(n.into_owned())),
            ttl: self.ttl,
            devices: self.devices,
        }
    }

    /// A user this service has never seen: offline, and nothing else known.
    pub(crate) fn unknown(user: &'a UserId) -> Self {
        Self { user_id: Cow::Borrowed(user.as_str()), ..Presence::unknown_named("") }
    }

    /// The same, owned.
    pub(crate) fn unknown_named(user: &str) -> Presence<'static> {
        Presence {
            user_id: Cow::Owned(user.to_string()),
            status: Status::Offline,
            message: None,
            last_seen: None,
            updated_at: None,
            node_id: None,
            ttl: None,
            devices: None,
        }
    }
}
