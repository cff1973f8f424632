//! A validated write: what `PUT /api/v2/presence/{user_id}` asks for, checked once at the edge
//! (docs/api.md, "What a user of the API must know"; docs/architecture.md, "Errors and input").

use std::time::Duration;

use unicode_general_category::{GeneralCategory, get_general_category};

use super::Status;

pub(crate) const MAX_MESSAGE_CHARS: usize = 256;
/// The longest `ttl` a client may ask for: 7 days.
pub(crate) const MAX_TTL: Duration = Duration::from_secs(7 * 24 * 3600);

/// A validated write: what `PUT /api/v2/presence/{user_id}` asks for.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct PresenceUpdate {
    pub status: Status,
    pub message: Option<String>,
    pub ttl: Duration,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum UpdateError {
    #[error("invalid status: must be one of online, away, busy, offline, invisible")]
    Status,
    #[error("message too long: at most 256 characters")]
    MessageTooLong,
    #[error(
        "message must not contain control, format (bidi, zero-width, soft hyphen, tag) or line/paragraph separator characters"
    )]
    MessageControl,
    #[error("ttl must be a whole number of seconds from 1 to 604800 (7 days)")]
    Ttl,
}

impl PresenceUpdate {
    pub(crate) fn new(
        status: &str,
        message: Option<String>,
        ttl_secs: Option<i64>,
        default_ttl: Duration,
    ) -> Result<Self, UpdateError> {
        let status = status.parse()?;
        let message = message.filter(|m| !m.is_empty());
        if let Some(m) = &message {
            if m.chars().count() > MAX_MESSAGE_CHARS {
                return Err(UpdateError::MessageTooLong);
            }
            if has_forbidden_char(m) {
                return Err(UpdateError::MessageControl);
            }
        }
        let ttl = match ttl_secs {
            None => default_ttl,
            Some(secs) if secs >= 1 && secs as u64 <= MAX_TTL.as_secs() => Duration::from_secs(secs as u64),
            Some(_) => return Err(UpdateError::Ttl),
        };
        Ok(Self { status, message, ttl })
    }
}

/// Whether a status message holds a character that would let it disguise itself or others:
/// control characters, line or paragraph separators, and every format character (Unicode
/// category Cf: bidi controls, which reorder the text shown around them, zero-width and other
/// invisible characters, soft hyphens, tags, interlinear annotations). Two uses of format
/// characters are how emoji are written and stay allowed: a zero-width joiner between two emoji
/// (👩‍💻, 🏳️‍🌈), and the tag letters that follow a black flag to name a region's flag (🏴 for
/// Scotland), ended by a cancel tag.
fn has_forbidden_char(message: &str) -> bool {
    let chars: Vec<char> = message.chars().collect();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        if c == BLACK_FLAG {
            i += 1 + flag_tags(&chars[i + 1..]);
            continue;
        }
        let forbidden = match c {
            '\u{200D}' => {
                let before = i.checked_sub(1).map(|j| chars[j]);
                !(before.is_some_and(is_emoji_part) && chars.get(i + 1).copied().is_some_and(is_emoji_part))
            }
            '\u{2028}' | '\u{2029}' => true,
            _ => c.is_control() || get_general_category(c) == GeneralCategory::Format,
        };
        if forbidden {
            return true;
        }
        i += 1;
    }
    false
}

const BLACK_FLAG: char = '\u{1F3F4}';

/// How many of `after` (what follows a black flag) are a flag's tag sequence: one or more tag
/// letters or digits, then a cancel tag. None if they are not one.
fn flag_tags(after: &[char]) -> usize {
    let letters = after
        .iter()
        .take_while(|c| matches!(c, '\u{E0030}'..='\u{E0039}' | '\u{E0061}'..='\u{E007A}'))
        .count();
    if letters > 0 && after.get(letters) == Some(&'\u{E007F}') { letters + 1 } else { 0 }
}

/// Pictographs, dingbats and the variation selector that makes a character an emoji.
fn is_emoji_part(c: char) -> bool {
    matches!(c, '\u{1F000}'..='\u{1FAFF}' | '\u{2600}'..='\u{27BF}' | '\u{2B00}'..='\u{2BFF}' | '\u{FE0F}')
}

#[cfg(test)]
mod tests {
    use super::*;

    const HOUR: Duration = Duration::from_secs(3600);

    #[test]
    fn validation_follows_decisions_section_3() {
        assert_eq!(PresenceUpdate::new("sleeping", None, None, HOUR), Err(UpdateError::Status));
        assert_eq!(PresenceUpdate::new("Online", None, None, HOUR), Err(UpdateError::Status));
        let long = "é".repeat(257);
        assert_eq!(PresenceUpdate::new("busy", Some(long), None, HOUR), Err(UpdateError::MessageTooLong));
        assert!(PresenceUpdate::new("busy", Some("é".repeat(256)), None, HOUR).is_ok());
        assert_eq!(
            PresenceUpdate::new("busy", Some("a\nb".into()), None, HOUR),
            Err(UpdateError::MessageControl)
        );
        for sneaky in [
            "evil\u{202E}gnp.exe",
            "a\u{200B}b",
            "\u{2066}x\u{2069}",
            "a\u{2028}b",
            "a\u{2029}b",
            "\u{FEFF}hi",
            "a\u{200D}b",
            "\u{200D}",
            // A joiner needs an emoji on both sides.
            "👩\u{200D}b",
            "a\u{200D}💻",
            "👩\u{200D}",
            "👩\u{200D}\u{200D}💻",
            // Every other format character (category Cf).
            "soft\u{00AD}hyphen",
            "tag \u{E0041}",
            "\u{FFF9}annotated\u{FFFB}",
            "\u{0600}",
            "\u{180E}",
            // Tags belong after a black flag, as letters ended by a cancel tag.
            "🏴\u{E0067}\u{E0062}",
            "x\u{E0067}\u{E0062}\u{E007F}",
            "🏴\u{E007F}",
        ] {
            assert_eq!(
                PresenceUpdate::new("busy", Some(sneaky.into()), None, HOUR),
                Err(UpdateError::MessageControl),
                "{sneaky:?}"
            );
        }
        let scotland = "🏴\u{E0067}\u{E0062}\u{E0073}\u{E0063}\u{E0074}\u{E007F} go";
        for fine in
            ["coding 👩\u{200D}💻", "🏳\u{FE0F}\u{200D}🌈 pride", "שלום עולם", "日本語", "café ☕", scotland]
        {
            assert!(PresenceUpdate::new("busy", Some(fine.into()), None, HOUR).is_ok(), "{fine:?}");
        }
        for bad in [0, -1, 604_801] {
            assert_eq!(PresenceUpdate::new("busy", None, Some(bad), HOUR), Err(UpdateError::Ttl));
        }
        assert_eq!(PresenceUpdate::new("busy", None, None, HOUR).unwrap().ttl, HOUR);
    }
}
