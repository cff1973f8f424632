//! Rooms (docs/rooms.md, "Rooms"): who is in a room is part of each member device's session, so a
//! room id, a member's `meta` and a membership as the KV stores it (inside the device, in the
//! user's record) and as a node holds it.

use std::{fmt, sync::Arc};

use chrono::{DateTime, Utc};
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::value::RawValue;

use super::{is_valid_token, rfc3339_millis};

/// True for a valid room id: the user-id rules.
pub(crate) fn is_valid_room(room: &str) -> bool {
    is_valid_token(room)
}

/// True for a valid room pattern: 1 to 128 characters of `A-Z a-z 0-9 _ -` and `*`.
pub(crate) fn is_valid_room_pattern(pattern: &str) -> bool {
    (1..=128).contains(&pattern.len())
        && pattern.bytes().all(|b| b.is_ascii_alphanumeric() || b"_-*".contains(&b))
}

/// Whether `room` matches `pattern`, where `*` matches any run of characters (none too) and
/// every other character itself.
pub(crate) fn room_matches(pattern: &str, room: &str) -> bool {
    let (pattern, room) = (pattern.as_bytes(), room.as_bytes());
    // The classic greedy match with one backtrack point: linear in practice, never exponential.
    let (mut p, mut r) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while r < room.len() {
        if p < pattern.len() && pattern[p] == b'*' {
            star = Some((p, r));
            p += 1;
        } else if p < pattern.len() && pattern[p] == room[r] {
            p += 1;
            r += 1;
        } else if let Some((sp, sr)) = star {
            p = sp + 1;
            r = sr + 1;
            star = Some((sp, sr + 1));
        } else {
            return false;
        }
    }
    pattern[p..].iter().all(|&b| b == b'*')
}

/// Why a room id or a meta was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum RoomError {
    #[error("room must be 1 to 128 characters of A-Z a-z 0-9 _ -")]
    Room,
    #[error("meta must be a JSON object")]
    NotAnObject,
    #[error("meta is {0} bytes as compact JSON: at most {1} (rooms.max_meta_bytes)")]
    TooLarge(usize, usize),
}

/// A member's `meta`: a JSON object, kept as its compact text (shared, never parsed again).
#[derive(Clone)]
pub(crate) struct Meta(Arc<RawValue>);

impl Meta {
    /// `{}`.
    pub(crate) fn empty() -> Self {
        Self(Arc::from(RawValue::from_string("{}".into()).expect("valid JSON")))
    }

    /// A client's meta: an object whose compact JSON is at most `max_bytes`.
    pub(crate) fn parse(value: serde_json::Value, max_bytes: usize) -> Result<Self, RoomError> {
        if !value.is_object() {
            return Err(RoomError::NotAnObject);
        }
        let raw = serde_json::value::to_raw_value(&value).map_err(|_| RoomError::NotAnObject)?;
        if raw.get().len() > max_bytes {
            return Err(RoomError::TooLarge(raw.get().len(), max_bytes));
        }
        Ok(Self(Arc::from(raw)))
    }

    /// The compact JSON text.
    pub(crate) fn json(&self) -> &str {
        self.0.get()
    }
}

impl PartialEq for Meta {
    fn eq(&self, other: &Self) -> bool {
        self.json() == other.json()
    }
}

impl Eq for Meta {}

impl fmt::Debug for Meta {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.json())
    }
}

impl Serialize for Meta {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        (*self.0).serialize(s)
    }
}

impl<'de> Deserialize<'de> for Meta {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let raw = Box::<RawValue>::deserialize(d)?;
        if !raw.get().trim_start().starts_with('{') {
            return Err(serde::de::Error::custom("meta must be a JSON object"));
        }
        Ok(Self(Arc::from(raw)))
    }
}

/// One device's membership of one room, as the KV stores it (keyed by the room id).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct StoredRoom {
    pub meta: Meta,
    #[serde(serialize_with = "rfc3339_millis")]
    pub joined_at: DateTime<Utc>,
}

/// One device's membership of one room, as a node holds it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Joined {
    pub room: Arc<str>,
    pub meta: Meta,
    pub joined_at: DateTime<Utc>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn meta_is_a_bounded_object_kept_as_compact_text() {
        let meta = Meta::parse(serde_json::json!({"cursor": {"x": 1}, "name": "Ann"}), 1024).unwrap();
        assert_eq!(meta.json(), r#"{"cursor":{"x":1},"name":"Ann"}"#);
        assert_eq!(Meta::parse(serde_json::json!([1]), 1024), Err(RoomError::NotAnObject));
        assert_eq!(Meta::parse(serde_json::json!("x"), 1024), Err(RoomError::NotAnObject));
        let big = serde_json::json!({"a": "x".repeat(1100)});
        assert!(matches!(Meta::parse(big, 1024), Err(RoomError::TooLarge(_, 1024))));
        let stored: StoredRoom =
            serde_json::from_str(r#"{"meta":{"a":1},"joined_at":"2026-01-01T00:00:00.000Z"}"#).unwrap();
        assert_eq!(stored.meta.json(), r#"{"a":1}"#);
        let text = serde_json::to_string(&stored).unwrap();
        assert_eq!(text, r#"{"meta":{"a":1},"joined_at":"2026-01-01T00:00:00.000Z"}"#);
        assert!(
            serde_json::from_str::<StoredRoom>(r#"{"meta":[1],"joined_at":"2026-01-01T00:00:00Z"}"#).is_err()
        );
        assert!(!is_valid_room("a b") && is_valid_room("doc-42"));
    }

    #[test]
    fn a_star_matches_any_run_of_characters() {
        for (pattern, room, expected) in [
            ("doc-*", "doc-42", true),
            ("doc-*", "doc-", true),
            ("doc-*", "doc", false),
            ("team-42", "team-42", true),
            ("team-42", "team-421", false),
            ("*", "anything", true),
            ("*-x-*", "a-x-b", true),
            ("*-x-*", "a-y-b", false),
            ("a*b*c", "aXbYbZc", true),
            ("a*b*c", "aXbYbZ", false),
            ("", "a", false),
        ] {
            assert_eq!(room_matches(pattern, room), expected, "{pattern} ~ {room}");
        }
    }
}
