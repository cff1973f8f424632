//! A validated write: what `PUT /api/v2/presence/{user_id}` asks for, checked once at the edge
//! (docs/api.md, "What a user of the API must know"; docs/architecture.md, "Errors and input").

use std::time::Duration;

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
        "message must not contain control, bidi-control, zero-width or line/paragraph separator characters"
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
/// control characters, bidi controls (which reorder the text shown around them), invisible
/// zero-width characters, and line or paragraph separators. A zero-width joiner between two
/// emoji (👩‍💻, 🏳️‍🌈) is how emoji sequences are written, and is allowed there.
fn has_forbidden_char(message: &str) -> bool {
    let chars: Vec<char> = message.chars().collect();
    chars.iter().enumerate().any(|(i, &c)| match c {
        '\u{200D}' => {
            let before = i.checked_sub(1).map(|j| chars[j]);
            !(before.is_some_and(is_emoji_part) && chars.get(i + 1).copied().is_some_and(is_emoji_part))
        }
        _ => c.is_control() || is_invisible_or_reordering(c),
    })
}

fn is_invisible_or_reordering(c: char) -> bool {
    matches!(c,
        '\u{061C}' | '\u{200E}' | '\u{200F}' // bidi marks
        | '\u{202A}'..='\u{202E}' | '\u{2066}'..='\u{2069}' // bidi embeddings, overrides, isolates
        | '\u{200B}' | '\u{200C}' | '\u{2060}' | '\u{FEFF}' // zero-width space, non-joiner, word joiner, BOM
        | '\u{180E}' | '\u{2061}'..='\u{2064}' // other invisible format characters
        | '\u{2028}' | '\u{2029}') // line and paragraph separators
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
        ] {
            assert_eq!(
                PresenceUpdate::new("busy", Some(sneaky.into()), None, HOUR),
                Err(UpdateError::MessageControl),
                "{sneaky:?}"
            );
        }
        for fine in ["coding 👩\u{200D}💻", "🏳\u{FE0F}\u{200D}🌈 pride", "שלום עולם", "日本語", "café ☕"]
        {
            assert!(PresenceUpdate::new("busy", Some(fine.into()), None, HOUR).is_ok(), "{fine:?}");
        }
        for bad in [0, -1, 604_801] {
            assert_eq!(PresenceUpdate::new("busy", None, Some(bad), HOUR), Err(UpdateError::Ttl));
        }
        assert_eq!(PresenceUpdate::new("busy", None, None, HOUR).unwrap().ttl, HOUR);
    }
}
