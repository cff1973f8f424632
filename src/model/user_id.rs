//! User ids: 1 to 128 characters of `[A-Za-z0-9_-]`, which makes them safe as a KV key token and a
//! NATS subject token (docs/architecture.md, "Errors and input").

use std::{fmt, ops::Deref};

pub(crate) const MAX_USER_ID_LEN: usize = 128;

/// True for 1 to 128 characters of `[A-Za-z0-9_-]`.
pub(crate) fn is_valid_token(text: &str) -> bool {
    (1..=MAX_USER_ID_LEN).contains(&text.len())
        && text.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub(crate) struct UserId(String);

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid user id {shown:?}: a user id is 1 to 128 characters of A-Z a-z 0-9 _ -")]
pub(crate) struct UserIdError {
    shown: String,
}

impl UserId {
    pub(crate) fn parse(text: &str) -> Result<Self, UserIdError> {
        if is_valid_token(text) {
            Ok(Self(text.to_owned()))
        } else {
            // Echo a bounded, printable prefix: never reflect a megabyte or control bytes back.
            let shown: String = text.chars().take(40).map(|c| if c.is_control() { '?' } else { c }).collect();
            Err(UserIdError { shown })
        }
    }

    pub(crate) fn as_str(&self) -> &str {
        &self.0
    }
}

impl Deref for UserId {
    type Target = str;
    fn deref(&self) -> &str {
        &self.0
    }
}

impl AsRef<str> for UserId {
    fn as_ref(&self) -> &str {
        self.as_str()
    }
}

impl fmt::Display for UserId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_the_documented_alphabet() {
        for ok in ["user123", "a", "A-b_C-9", &"x".repeat(128)] {
            assert!(UserId::parse(ok).is_ok(), "{ok}");
        }
    }

    #[test]
    fn rejects_what_would_break_keys_and_subjects() {
        for bad in ["", "a.b", "*", ">", "a b", "user:1", "ü", &"x".repeat(129), "a\u{0}"] {
            assert!(UserId::parse(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn errors_echo_a_bounded_printable_prefix() {
        let err = UserId::parse(&format!("\u{7}{}", "y".repeat(1000))).unwrap_err();
        assert!(err.to_string().len() < 200);
        assert!(!err.to_string().contains('\u{7}'));
    }
}
