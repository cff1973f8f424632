//! Times as the API writes them and the bucket holds them: RFC 3339, UTC, milliseconds
//! (`2024-01-15T10:30:00.000Z`), written and read digit by digit. chrono's general formatter was
//! about 6 % of a cached GET's instructions, and its parser a twentieth of a node's start-up
//! (BENCHMARKS.md, "Issue 27"); chrono still handles what the fast paths do not.

use chrono::{DateTime, FixedOffset, NaiveDate, NaiveTime, SecondsFormat, Utc};
use serde::{Deserialize, Deserializer, Serializer};

/// Times in the API: RFC 3339, UTC, milliseconds (`2024-01-15T10:30:00.000Z`).
pub(crate) fn rfc3339<S: Serializer>(value: &Option<DateTime<Utc>>, s: S) -> Result<S::Ok, S::Error> {
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
pub(super) struct Millis([u8; 24]);

/// "00" to "99", each number's two digits at twice its value.
const PAIRS: &[u8; 200] = b"0001020304050607080910111213141516171819\
2021222324252627282930313233343536373839\
4041424344454647484950515253545556575859\
6061626364656667686970717273747576777879\
8081828384858687888990919293949596979899";

impl Millis {
    pub(super) fn of(t: &DateTime<Utc>) -> Option<Self> {
        use chrono::{Datelike, Timelike};
        // chrono's own fields: no count of days to turn back into a date.
        let (date, time) = (t.date_naive(), t.time());
        // A leap second is written by chrono (second 59 with 1000 ms and more).
        let millis = time.nanosecond() / 1_000_000;
        if millis > 999 {
            return None;
        }
        let year = u32::try_from(date.year()).ok().filter(|y| *y <= 9999)?;
        let (month, day) = (date.month(), date.day());
        let of_day = time.num_seconds_from_midnight();
        let mut out = *b"0000-00-00T00:00:00.000Z";
        // Two digits at a time from a table, as itoa does: half the divisions.
        let mut two = |at: usize, value: u32| {
            let pair = value as usize * 2;
            out[at..at + 2].copy_from_slice(&PAIRS[pair..pair + 2]);
        };
        two(0, year / 100);
        two(2, year % 100);
        two(5, month);
        two(8, day);
        two(11, of_day / 3600);
        two(14, of_day / 60 % 60);
        two(17, of_day % 60);
        two(21, millis % 100);
        out[20] = b'0' + (millis / 100) as u8;
        Some(Self(out))
    }

    pub(super) fn as_bytes(&self) -> &[u8] {
        &self.0
    }

    pub(super) fn as_str(&self) -> &str {
        std::str::from_utf8(&self.0).expect("ASCII digits and separators")
    }
}

/// Reads a time as chrono's `Deserialize` for `DateTime<Utc>` does, the form this service
/// writes without chrono's parser.
pub(crate) fn read<'de, D: Deserializer<'de>>(d: D) -> Result<DateTime<Utc>, D::Error> {
    let text = <std::borrow::Cow<'de, str>>::deserialize(d)?;
    parse(&text).map_err(serde::de::Error::custom)
}

/// The same for a time that may be absent.
pub(crate) fn read_option<'de, D: Deserializer<'de>>(d: D) -> Result<Option<DateTime<Utc>>, D::Error> {
    match <Option<std::borrow::Cow<'de, str>>>::deserialize(d)? {
        Some(text) => parse(&text).map(Some).map_err(serde::de::Error::custom),
        None => Ok(None),
    }
}

/// `text` as chrono reads an RFC 3339 time (relaxed as chrono is); `YYYY-MM-DDTHH:MM:SS`, an
/// optional fraction of up to nine digits and `Z` (or `+00:00`) without chrono's parser.
pub(crate) fn parse(text: &str) -> Result<DateTime<Utc>, chrono::ParseError> {
    match utc_fast(text.as_bytes()) {
        Some(t) => Ok(t),
        None => text.parse::<DateTime<FixedOffset>>().map(|t| t.with_timezone(&Utc)),
    }
}

fn utc_fast(b: &[u8]) -> Option<DateTime<Utc>> {
    let at = |i: usize, c: u8| b.get(i) == Some(&c);
    if !(at(4, b'-') && at(7, b'-') && at(10, b'T') && at(13, b':') && at(16, b':')) {
        return None;
    }
    let digits = |from: usize, to: usize| -> Option<u32> {
        b.get(from..to)?
            .iter()
            .try_fold(0u32, |n, c| c.is_ascii_digit().then(|| n * 10 + u32::from(c - b'0')))
    };
    let date = NaiveDate::from_ymd_opt(digits(0, 4)? as i32, digits(5, 7)?, digits(8, 10)?)?;
    let (hour, minute, second) = (digits(11, 13)?, digits(14, 16)?, digits(17, 19)?);
    let (mut end, mut nanos) = (19, 0);
    if at(19, b'.') {
        end = 20 + b[20..].iter().take_while(|c| c.is_ascii_digit()).count();
        let width = end - 20;
        if width == 0 || width > 9 {
            return None;
        }
        nanos = digits(20, end)? * 10u32.pow((9 - width) as u32);
    }
    if &b[end..] != b"Z" && &b[end..] != b"+00:00" {
        return None;
    }
    // A leap second (60) is left to chrono.
    if second > 59 {
        return None;
    }
    let time = NaiveTime::from_hms_nano_opt(hour, minute, second, nanos)?;
    Some(date.and_time(time).and_utc())
}
