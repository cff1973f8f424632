//! The presence model's unit tests: the precedence rule as a table, expiry, invisible, views.

use std::{sync::Arc, time::Duration};

use chrono::{DateTime, Utc};

use super::{compact::intern, *};
use crate::model::{PresenceUpdate, StoredDevice, UserId};

const HOUR: Duration = Duration::from_secs(3600);

fn user() -> UserId {
    UserId::parse("user123").unwrap()
}

#[test]
fn a_held_presence_stays_small() {
    // A million of them, with the cache's own overhead, must stay under 512 MiB (BENCHMARKS.md):
    // the devices of the few users with sessions cost one pointer in everyone else's.
    assert!(std::mem::size_of::<CompactPresence>() <= 80, "{}", std::mem::size_of::<CompactPresence>());
}

#[test]
fn node_ids_are_shared_between_presences() {
    let a = intern("node-interned-test");
    let b = intern("node-interned-test");
    assert!(Arc::ptr_eq(&a, &b), "a million presences hold one copy of each node id");
}

#[test]
fn expiry_reads_offline_and_keeps_last_seen() {
    let now = Utc::now();
    let update = PresenceUpdate::new("online", Some("hi".into()), Some(1), HOUR).unwrap();
    let stored = StoredPresence::from_update(&user(), update, None, "n1", now);
    let compact = CompactPresence::from(&stored);
    assert_eq!(compact.view("user123", now).status, Status::Online);
    let later = compact.view("user123", now + chrono::Duration::seconds(2));
    assert_eq!(later.status, Status::Offline);
    assert_eq!(later.message, None);
    assert_eq!(later.last_seen, stored.last_seen);
}

#[test]
fn stored_and_shown_times_are_the_same_text_even_on_a_whole_second() {
    let whole_second = DateTime::parse_from_rfc3339("2026-11-29T01:00:51Z").unwrap().to_utc();
    let update = PresenceUpdate::new("online", None, None, HOUR).unwrap();
    let stored = StoredPresence::from_update(&user(), update, None, "n1", whole_second);
    let text: serde_json::Value = serde_json::to_value(&stored).unwrap();
    let shown = serde_json::to_value(CompactPresence::from(&stored).view("user123", whole_second)).unwrap();
    assert_eq!(text["updated_at"], "2026-11-29T01:00:51.000Z");
    assert_eq!(text["updated_at"], shown["updated_at"]);
    assert_eq!(text["last_seen"], shown["last_seen"]);
    let back: StoredPresence = serde_json::from_value(text).unwrap();
    assert_eq!(back, stored, "read back as written");
}

#[test]
fn an_offline_write_keeps_the_previous_last_seen() {
    let t0 = Utc::now();
    let online = StoredPresence::from_update(
        &user(),
        PresenceUpdate::new("online", None, None, HOUR).unwrap(),
        None,
        "n1",
        t0,
    );
    let t1 = t0 + chrono::Duration::seconds(60);
    let offline = PresenceUpdate::new("offline", None, None, HOUR).unwrap();
    let after = StoredPresence::from_update(&user(), offline, Some(&online), "n1", t1);
    assert_eq!(after.last_seen, online.last_seen);
    assert!(after.updated_at > online.updated_at);
}

#[test]
fn an_invisible_user_is_offline_to_others_and_as_written_to_the_owner() {
    let t0 = Utc::now();
    let online = PresenceUpdate::new("online", None, None, HOUR).unwrap();
    let online = StoredPresence::from_update(&user(), online, None, "n1", t0);
    let hiding = PresenceUpdate::new("invisible", Some("away from all".into()), Some(60), HOUR).unwrap();
    let t1 = t0 + chrono::Duration::seconds(10);
    let stored = StoredPresence::from_update(&user(), hiding, Some(&online), "n2", t1);
    assert_eq!(stored.last_seen, online.last_seen, "last_seen does not advance");
    let held = CompactPresence::from(&stored);
    let public = held.view("user123", t1);
    assert_eq!((public.status, public.message, public.ttl), (Status::Offline, None, None));
    assert_eq!((public.last_seen, public.updated_at), (online.last_seen, online.last_seen));
    assert_eq!(held.shown_status(t1), Status::Offline);
    let own = held.owner_view("user123", t1);
    assert_eq!(
        (own.status, own.message.as_deref(), own.ttl),
        (Status::Invisible, Some("away from all"), Some(60))
    );
    let later = t1 + chrono::Duration::seconds(61);
    assert_eq!(held.owner_view("user123", later).status, Status::Offline, "its ttl runs out");
    assert!(!Status::Invisible.is_live(), "last_seen does not move");
    let never_seen = StoredPresence::from_update(
        &user(),
        PresenceUpdate::new("invisible", None, None, HOUR).unwrap(),
        None,
        "n1",
        t0,
    );
    let never_seen = CompactPresence::from(&never_seen);
    let shown = never_seen.view("user123", t0);
    assert_eq!((shown.last_seen, shown.updated_at, shown.node_id), (None, None, None));
}

fn with_devices(
    status: &str,
    ttl: i64,
    devices: &[(&str, &str, bool)],
    at: DateTime<Utc>,
) -> CompactPresence {
    let update = PresenceUpdate::new(status, Some("set".into()), Some(ttl), HOUR).unwrap();
    let mut stored = StoredPresence::from_update(&user(), update, None, "n1", at);
    for (id, kind, idle) in devices {
        let device = StoredDevice::new(kind.parse().unwrap(), "n1".into(), *idle);
        stored.devices.insert(id.to_string(), device);
    }
    CompactPresence::from(&stored)
}

/// docs/sessions.md, "Sessions": the precedence rule, case by case. A status a client set holds for
/// its ttl and overrides the sessions; once it ran out (or was `offline`), the devices decide.
#[test]
fn the_precedence_rule() {
    use Status::*;
    let t0 = Utc::now();
    let active = ("d1", "web", false);
    let idle = ("d2", "mobile", true);
    let idle_too = ("d3", "desktop", true);
    #[rustfmt::skip]
    type Devices<'a> = &'a [(&'a str, &'a str, bool)];
    let table: &[(&str, Devices, Status, Status, Status)] = &[
        // set status, devices,             shown while its ttl holds, after, owner while it holds
        ("online", &[], Online, Offline, Online),
        ("online", &[idle], Online, Away, Online),
        ("online", &[active, idle], Online, Online, Online),
        ("busy", &[active], Busy, Online, Busy),
        ("busy", &[idle], Busy, Away, Busy),
        ("away", &[active], Away, Online, Away),
        ("away", &[], Away, Offline, Away),
        ("offline", &[active], Online, Online, Online),
        ("offline", &[idle, idle_too], Away, Away, Away),
        ("offline", &[], Offline, Offline, Offline),
        ("invisible", &[active], Offline, Online, Invisible),
        ("invisible", &[], Offline, Offline, Invisible),
    ];
    let later = t0 + chrono::Duration::seconds(61);
    for &(set, devices, holding, after, owner) in table {
        let p = with_devices(set, 60, devices, t0);
        let case = format!("{set} with {devices:?}");
        assert_eq!(p.shown_status(t0), holding, "{case}: while its ttl holds");
        assert_eq!(p.view("user123", t0).status, holding, "{case}: the view says the same");
        assert_eq!(p.owner_view("user123", t0).status, owner, "{case}: the owner");
        assert_eq!(p.shown_status(later), after, "{case}: once its ttl ran out");
        let shown = p.view("user123", t0);
        let set_holds = set != "offline" && set != "invisible";
        assert_eq!(shown.message.is_some(), set_holds, "{case}: the message belongs to the set status");
        assert_eq!(shown.ttl.is_some(), set_holds, "{case}: so does the ttl");
    }
}

#[test]
fn devices_are_shown_by_kind_and_hidden_for_an_invisible_user() {
    let t0 = Utc::now();
    let devices = [("a", "web", true), ("b", "web", false), ("c", "mobile", true), ("d", "other", true)];
    let p = with_devices("offline", 60, &devices, t0);
    let shown = serde_json::to_value(p.view("user123", t0)).unwrap();
    assert_eq!(shown["devices"], serde_json::json!({"web": "online", "mobile": "away", "other": "away"}));
    let none = serde_json::to_value(with_devices("online", 60, &[], t0).view("user123", t0)).unwrap();
    assert!(none.get("devices").is_none(), "absent without a session");
    let hiding = with_devices("invisible", 60, &devices, t0);
    assert_eq!(hiding.view("user123", t0).devices, None);
    assert!(hiding.owner_view("user123", t0).devices.is_some(), "the owner sees their devices");
    let back = hiding.to_stored("user123");
    assert_eq!(CompactPresence::from(&back), hiding, "held and stored forms say the same");
}

#[test]
fn an_expired_invisible_user_stays_as_others_saw_them() {
    let t0 = Utc::now();
    let online = PresenceUpdate::new("online", None, None, HOUR).unwrap();
    let online = StoredPresence::from_update(&user(), online, None, "n1", t0);
    let hiding = PresenceUpdate::new("invisible", None, Some(60), HOUR).unwrap();
    let t1 = t0 + chrono::Duration::seconds(10);
    let hidden = StoredPresence::from_update(&user(), hiding, Some(&online), "n1", t1);
    let expired = hidden.expired();
    let later = t1 + chrono::Duration::seconds(61);
    let before = CompactPresence::from(&hidden);
    let after = CompactPresence::from(&expired);
    assert_eq!(before.view("user123", t1), after.view("user123", later), "nothing to see");
    assert!(same_view("user123", Some(&before), Some(&after), later));
}

#[test]
fn times_are_written_as_chrono_writes_them() {
    use chrono::{SecondsFormat, TimeZone};
    let chrono_text = |t: &DateTime<Utc>| t.to_rfc3339_opts(SecondsFormat::Millis, true);
    // Every day of four years around a leap year (Feb 29, year ends), at odd hours and millis,
    // the epoch, the last millisecond a year of four digits holds, and years chrono writes
    // with a sign or five digits.
    let start = Utc.with_ymd_and_hms(2023, 1, 1, 0, 0, 0).unwrap();
    for day in 0..1500 {
        let t = start
            + chrono::Duration::days(day)
            + chrono::Duration::milliseconds(day * 37_777_123 % 86_400_000);
        assert_eq!(super::millis(&t), chrono_text(&t));
    }
    let edges = [
        DateTime::UNIX_EPOCH,
        Utc.with_ymd_and_hms(9999, 12, 31, 23, 59, 59).unwrap() + chrono::Duration::milliseconds(999),
        Utc.with_ymd_and_hms(10000, 1, 1, 0, 0, 0).unwrap(),
        Utc.with_ymd_and_hms(-1, 6, 1, 12, 0, 0).unwrap(),
        Utc.with_ymd_and_hms(0, 1, 1, 0, 0, 0).unwrap(),
        Utc.timestamp_opt(1_700_000_000, 999_999_999).unwrap(),
        Utc.timestamp_opt(-1, 999_000_000).unwrap(),
        Utc.with_ymd_and_hms(2000, 2, 29, 23, 59, 59).unwrap(),
        Utc.with_ymd_and_hms(2100, 2, 28, 1, 2, 3).unwrap(),
        Utc.with_ymd_and_hms(2100, 3, 1, 4, 5, 6).unwrap(),
        Utc.with_ymd_and_hms(1600, 12, 31, 23, 0, 0).unwrap(),
    ];
    for t in edges {
        assert_eq!(super::millis(&t), chrono_text(&t), "{t:?}");
    }
    let user = user();
    let mut shown = Presence::unknown(&user);
    shown.updated_at = Some(start);
    let json = serde_json::to_string(&shown).unwrap();
    assert!(json.contains("\"2023-01-01T00:00:00.000Z\""), "{json}");
}

#[test]
fn times_are_read_as_chrono_reads_them() {
    use chrono::{FixedOffset, SecondsFormat, TimeZone};
    let chrono_read = |text: &str| text.parse::<DateTime<FixedOffset>>().map(|t| t.with_timezone(&Utc)).ok();
    let start = Utc.with_ymd_and_hms(2023, 1, 1, 0, 0, 0).unwrap();
    let formats = [SecondsFormat::Secs, SecondsFormat::Millis, SecondsFormat::Micros, SecondsFormat::Nanos];
    for day in 0..1500 {
        let t = start + chrono::Duration::days(day) + chrono::Duration::nanoseconds(day * 37_777_123_457);
        for (format, z) in formats.iter().flat_map(|f| [(*f, true), (*f, false)]) {
            let text = t.to_rfc3339_opts(format, z);
            assert_eq!(super::time::parse(&text).ok(), chrono_read(&text), "{text}");
        }
    }
    // What the fast path leaves to chrono, and what neither reads.
    let others = [
        "2024-01-15T10:30:00.000+02:00",
        "2024-01-15t10:30:00.000z",
        "2024-01-15 10:30:00Z",
        "2016-12-31T23:59:60Z",
        "2024-02-29T00:00:00Z",
        "2023-02-29T00:00:00Z",
        "2024-13-01T00:00:00Z",
        "2024-01-15T24:00:00Z",
        "2024-01-15T10:30:00.Z",
        "2024-01-15T10:30:00.1234567891Z",
        "2024-01-15T10:30:00",
        "2024-01-15T10:30:00Zjunk",
        "+2024-01-15T10:30:00Z",
        "10000-01-01T00:00:00Z",
        "",
    ];
    for text in others {
        assert_eq!(super::time::parse(text).ok(), chrono_read(text), "{text:?}");
    }
}

#[test]
fn a_view_is_written_by_hand_as_serde_writes_it() {
    use std::borrow::Cow;

    use chrono::TimeZone;

    use crate::model::DeviceKind;
    let at = Utc.with_ymd_and_hms(2024, 1, 15, 10, 30, 0).unwrap() + chrono::Duration::milliseconds(7);
    let full = Presence {
        user_id: Cow::Borrowed("ann.o'neil@example"),
        status: Status::Busy,
        message: Some(Cow::Borrowed("in \"a\" call\\ \u{7f} é 😀\n\t\u{1}")),
        last_seen: Some(at),
        updated_at: Some(Utc.with_ymd_and_hms(10000, 1, 1, 0, 0, 0).unwrap()),
        node_id: Some(Cow::Borrowed("center-1")),
        ttl: Some(3600),
        devices: Some([(DeviceKind::Web, Status::Online), (DeviceKind::Mobile, Status::Away)].into()),
    };
    let user = user();
    let views = [
        full.clone(),
        Presence { message: Some(Cow::Borrowed("plain")), devices: Some(Default::default()), ..full.clone() },
        Presence { devices: Some([(DeviceKind::Other, Status::Offline)].into()), ttl: Some(0), ..full },
        Presence::unknown(&user),
        Presence::unknown_named("quote\"d"),
    ];
    for view in views {
        let mut written = Vec::new();
        view.write_json(&mut written);
        assert_eq!(String::from_utf8(written).unwrap(), serde_json::to_string(&view).unwrap());
    }
}
