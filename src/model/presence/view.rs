//! A presence as a reader sees it: borrowed from the compact form on the read path, owned in
//! events; times in RFC 3339 with milliseconds.

use std::{borrow::Cow, collections::BTreeMap};

use chrono::{DateTime, SecondsFormat, Utc};
use serde::{Deserialize, Serialize, Serializer};
use utoipa::ToSchema;

use super::*;
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

/// Times in the API: RFC 3339, UTC, milliseconds (`2024-01-15T10:30:00.000Z`).
pub(super) fn rfc3339<S: Serializer>(value: &Option<DateTime<Utc>>, s: S) -> Result<S::Ok, S::Error> {
    match value {
        Some(t) => rfc3339_millis(t, s),
        None => s.serialize_none(),
    }
}

/// The same for a time that is always there.
pub(crate) fn rfc3339_millis<S: Serializer>(t: &DateTime<Utc>, s: S) -> Result<S::Ok, S::Error> {
    match Millis::of(t) {
        Some(text) => s.serialize_str(text.as_str()),
        None => s.serialize_str(&millis(t)),
    }
}

/// `t` as the API writes times.
pub(crate) fn millis(t: &DateTime<Utc>) -> String {
    match Millis::of(t) {
        Some(text) => text.as_str().to_owned(),
        None => t.to_rfc3339_opts(SecondsFormat::Millis, true),
    }
}

/// `YYYY-MM-DDTHH:MM:SS.mmmZ` written digit by digit, without an allocation: every read
/// writes three times, and chrono's general formatter was about 6 % of a cached GET's
/// instructions (BENCHMARKS.md, "Issue 27"). The same text as chrono's
/// `to_rfc3339_opts(Millis, true)`, for the years 0 to 9999 (others go to chrono).
struct Millis([u8; 24]);

impl Millis {
    fn of(t: &DateTime<Utc>) -> Option<Self> {
        // A leap second is written by chrono (second 59 with 1000 ms and more).
        let millis = t.timestamp_subsec_millis();
        if millis > 999 {
            return None;
        }
        let seconds = t.timestamp();
        let (days, of_day) = (seconds.div_euclid(86_400), seconds.rem_euclid(86_400));
        let (year, month, day) = civil_from_days(days);
        let year = u32::try_from(year).ok().filter(|y| *y <= 9999)?;
        let of_day = of_day as u32;
        let mut out = *b"0000-00-00T00:00:00.000Z";
        let mut put = |at: usize, width: usize, mut value: u32| {
            for i in (at..at + width).rev() {
                out[i] = b'0' + (value % 10) as u8;
                value /= 10;
            }
        };
        put(0, 4, year);
        put(5, 2, month);
        put(8, 2, day);
        put(11, 2, of_day / 3600);
        put(14, 2, of_day / 60 % 60);
        put(17, 2, of_day % 60);
        put(20, 3, millis);
        Some(Self(out))
    }

    fn as_str(&self) -> &str {
        std::str::from_utf8(&self.0).expect("ASCII digits and separators")
    }
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

/// The proleptic Gregorian (year, month, day) of the day `days` after 1970-01-01, by
/// H. Hinnant's `civil_from_days` (chrono's own date type is slower to take apart).
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let of_era = z.rem_euclid(146_097);
    let year_of_era = (of_era - of_era / 1460 + of_era / 36_524 - of_era / 146_096) / 365;
    let of_year = of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let shifted_month = (5 * of_year + 2) / 153;
    let day = (of_year - (153 * shifted_month + 2) / 5 + 1) as u32;
    let month = if shifted_month < 10 { shifted_month + 3 } else { shifted_month - 9 } as u32;
    let year = year_of_era + era * 400 + i64::from(month <= 2);
    (year, month, day)
}
