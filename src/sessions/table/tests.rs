//! The table's unit tests: connections, idleness, graces, counts, and what a record should say.

use super::*;

fn held(device: &str, idle: bool, connected: bool) -> Held {
    Held { device: Arc::from(device), kind: DeviceKind::Web, idle, connected, rooms: Vec::new() }
}

const ALIVE: &dyn Fn(&str) -> bool = &|_| false;

#[test]
fn the_table_follows_connections_idleness_and_graces() {
    let (user, phone, laptop): (Arc<str>, Arc<str>, Arc<str>) = ("u".into(), "phone".into(), "laptop".into());
    let t0 = Instant::now();
    let minute = Duration::from_secs(60);
    let mut table = Table::starting();
    table.connect(&user, &phone, DeviceKind::Mobile, t0);
    table.connect(&user, &phone, DeviceKind::Mobile, t0); // a second connection of the device
    table.connect(&user, &laptop, DeviceKind::Desktop, t0);
    assert_eq!((table.len(), table.users().collect::<Vec<_>>()), (2, vec![user.clone()]));
    assert_eq!(table.devices_besides("u", "phone", &[]), 1);
    assert_eq!(table.devices_besides("u", "tablet", &["tv".into(), "laptop".into()]), 3);
    assert_eq!(table.devices_besides("v", "phone", &[]), 0);

    // Idle after `idle_after` without activity; activity makes it active again (once).
    assert!(table.timers(t0 + minute - Duration::from_millis(1), minute).is_empty(), "not yet");
    assert!(!table.activity("u", "laptop", t0 + Duration::from_secs(30)), "active already: no change");
    assert_eq!(table.timers(t0 + minute, minute), std::slice::from_ref(&user), "the phone went idle");
    let idle =
        |table: &Table, device: &str| table.held("u").iter().find(|h| &*h.device == device).unwrap().idle;
    assert!(idle(&table, "phone") && !idle(&table, "laptop"));
    assert!(table.timers(t0 + minute, minute).is_empty(), "idle once");
    assert!(table.activity("u", "phone", t0 + minute), "active again: the record must say so");
    assert!(!table.activity("u", "phone", t0 + minute), "already active: nothing to write");
    assert!(!table.activity("u", "nobody", t0), "no such session");

    // One of the phone's two connections drops: nothing changes. The other drops abruptly:
    // kept for the grace, still in the table, no longer connected.
    let grace = t0 + 2 * minute;
    assert!(!table.disconnect("u", "phone", 0, None), "another connection holds it");
    assert!(!table.disconnect("u", "phone", 0, Some(grace)), "kept for its grace");
    let phone_held = |table: &Table| table.held("u").into_iter().find(|h| &*h.device == "phone");
    assert_eq!(phone_held(&table).map(|h| h.connected), Some(false));
    assert!(table.held("u").iter().any(|h| &*h.device == "laptop" && h.connected));
    assert!(table.timers(grace - Duration::from_millis(1), Duration::from_secs(1)).contains(&user));
    assert_eq!(phone_held(&table).map(|h| h.idle), Some(false), "no idleness in the grace: no flicker");
    assert_eq!(table.len(), 2);
    table.activity("u", "laptop", grace);
    assert!(table.timers(grace - Duration::from_millis(1), 10 * minute).is_empty());
    assert_eq!(table.timers(grace, 10 * minute), std::slice::from_ref(&user), "its grace ran out");
    assert_eq!((phone_held(&table), table.len()), (None, 1));
    // A clean close ends the laptop's session at once.
    assert!(table.disconnect("u", "laptop", 0, None));
    assert_eq!((table.len(), table.users().count()), (0, 0));
    assert!(!table.disconnect("u", "laptop", 0, None), "nothing left to end");
}

#[test]
fn an_invisible_user_is_not_seen_by_their_sessions_until_it_ran_out() {
    let t0 = Utc::now();
    let mut hidden = desired("u", None, &[held("d1", false, true)], "a", ALIVE, t0).unwrap();
    let seen = hidden.last_seen;
    hidden.status = Status::Invisible;
    hidden.expires_at = t0 + chrono::Duration::seconds(60);
    let t1 = t0 + chrono::Duration::seconds(10);
    let both = [held("d1", false, true), held("d2", false, true)];
    let written = desired("u", Some(&hidden), &both, "a", ALIVE, t1).unwrap();
    assert_eq!(written.last_seen, seen, "invisible: last_seen does not advance");
    let t2 = t0 + chrono::Duration::seconds(61);
    let later = desired("u", Some(&hidden), &both, "a", ALIVE, t2).unwrap();
    assert_ne!(later.last_seen, seen, "its ttl ran out: seen again");
}

#[test]
fn a_record_follows_the_sessions_and_only_writes_on_a_change() {
    let t0 = Utc::now();
    assert_eq!(desired("u", None, &[], "a", ALIVE, t0), None, "nothing to say");
    let first = desired("u", None, &[held("d1", false, true)], "a", ALIVE, t0).unwrap();
    assert_eq!(first.status, Status::Offline, "no status set: the devices decide");
    assert_eq!(first.devices["d1"], StoredDevice::new(DeviceKind::Web, "a".into(), false));
    assert!(first.last_seen.is_some());
    let again = desired("u", Some(&first), &[held("d1", false, true)], "a", ALIVE, t0);
    assert_eq!(again, None, "steady: no write");
    let in_grace = desired("u", Some(&first), &[held("d1", false, false)], "a", ALIVE, t0);
    assert_eq!(in_grace, None, "an abrupt drop changes nothing during the grace");
    let t1 = t0 + chrono::Duration::seconds(5);
    let idle = desired("u", Some(&first), &[held("d1", true, true)], "a", ALIVE, t1).unwrap();
    assert!(idle.devices["d1"].idle);
    let ended = desired("u", Some(&idle), &[], "a", ALIVE, t1).unwrap();
    assert!(ended.devices.is_empty());
    assert_eq!(ended.last_seen.map(|t| t.timestamp_millis()), Some(t1.timestamp_millis()));
}

#[test]
fn a_device_that_moved_keeps_its_place_and_nobody_sees_it() {
    let t0 = Utc::now();
    let at_a = desired("u", None, &[held("d1", false, true)], "a", ALIVE, t0).unwrap();
    let t1 = t0 + chrono::Duration::seconds(3);
    let at_b = desired("u", Some(&at_a), &[held("d1", false, true)], "b", ALIVE, t1).unwrap();
    assert_eq!(at_b.devices["d1"].node, "b");
    assert_eq!(at_b.last_seen, at_a.last_seen, "only the node changed: last_seen stays");
    // A's grace runs out later: it does not take the device back, nor remove it.
    assert_eq!(desired("u", Some(&at_b), &[held("d1", false, false)], "a", ALIVE, t1), None);
    assert_eq!(desired("u", Some(&at_b), &[], "a", ALIVE, t1), None);
}

#[test]
fn a_restarted_node_keeps_its_old_sessions_for_a_grace_and_dead_nodes_lose_theirs() {
    let t0 = Utc::now();
    let mut record = desired("u", None, &[held("d1", false, true)], "a", ALIVE, t0).unwrap();
    record.devices.insert("d2".into(), StoredDevice::new(DeviceKind::Mobile, "b".into(), false));
    // Node a restarted: it takes d1 in for the grace, as if its connection had just dropped.
    let mut table = Table::starting();
    let user: Arc<str> = Arc::from("u");
    let until = Instant::now() + Duration::from_secs(15);
    table.adopt(&user, &record, "a", until);
    assert_eq!(table.held("u"), [held("d1", false, false)]);
    assert_eq!(desired("u", Some(&record), &table.held("u"), "a", ALIVE, t0), None, "may still reconnect");
    assert_eq!(
        table.timers(until, Duration::from_secs(600)),
        std::slice::from_ref(&user),
        "its grace ran out"
    );
    let cleaned = desired("u", Some(&record), &table.held("u"), "a", ALIVE, t0).unwrap();
    assert_eq!(cleaned.devices.keys().collect::<Vec<_>>(), ["d2"]);
    // A device held in this run and closed is not taken in again from an older record.
    table.connect(&user, &Arc::from("d3"), DeviceKind::Web, Instant::now());
    table.disconnect("u", "d3", 0, None);
    record.devices.insert("d3".into(), StoredDevice::new(DeviceKind::Web, "a".into(), false));
    table.adopt(&user, &record, "a", until);
    assert!(table.held("u").is_empty());

    let b_dead: &dyn Fn(&str) -> bool = &|n| n == "b";
    let t1 = t0 + chrono::Duration::seconds(60);
    let reaped = desired("u", Some(&cleaned), &[], "c", b_dead, t1).unwrap();
    assert!(reaped.devices.is_empty());
    assert_eq!(reaped.last_seen, cleaned.last_seen, "when a dead node's device went is unknown");
}
