//! The statuses a user can have, and which of them expire and count as seen.

use std::str::FromStr;

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::model::UpdateError;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub(crate) enum Status {
    Online,
    Away,
    Busy,
    Offline,
    /// "Appear offline": everyone else reads `offline` (and `last_seen` does not advance); only
    /// the owner, reading with their own token, sees `invisible`.
    Invisible,
}

impl Status {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Status::Online => "online",
            Status::Away => "away",
            Status::Busy => "busy",
            Status::Offline => "offline",
            Status::Invisible => "invisible",
        }
    }

    /// Seen by others as present: a write of one of these moves `last_seen`.
    pub(crate) fn is_live(self) -> bool {
        matches!(self, Status::Online | Status::Away | Status::Busy)
    }

    /// A status a client set that holds for its ttl: every status but `offline`. The expiry job
    /// turns it `offline` when the ttl runs out (for `invisible`, others may see nothing change).
    pub(crate) fn expires(self) -> bool {
        self != Status::Offline
    }
}

impl FromStr for Status {
    type Err = UpdateError;
    fn from_str(s: &str) -> Result<Self, UpdateError> {
        match s {
            "online" => Ok(Status::Online),
            "away" => Ok(Status::Away),
            "busy" => Ok(Status::Busy),
            "offline" => Ok(Status::Offline),
            "invisible" => Ok(Status::Invisible),
            _ => Err(UpdateError::Status),
        }
    }
}
