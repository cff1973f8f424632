//! How `presence watch --room` prints a room: its members first, then one line per device that
//! joins, updates its meta or leaves; who is typing and the counts as notices.

use std::collections::BTreeMap;

use serde::Deserialize;

use super::Event;

#[derive(Deserialize)]
struct Entry {
    device: String,
    kind: String,
    meta: serde_json::Value,
}

type Entries = BTreeMap<String, Vec<Entry>>;

#[derive(Deserialize)]
struct Snapshot {
    room: String,
    #[serde(default)]
    members: Entries,
    count: u64,
    connections: u64,
    #[serde(default)]
    truncated: bool,
    #[serde(default)]
    typing: Vec<String>,
}

#[derive(Deserialize)]
struct Change {
    room: String,
    #[serde(default)]
    joins: Entries,
    #[serde(default)]
    updates: Entries,
    #[serde(default)]
    leaves: Entries,
    typing: Option<Vec<String>>,
    count: u64,
    connections: u64,
}

/// The header of the member lines.
pub(super) fn header() -> String {
    row("USER", "DEVICE", "KIND", "EVENT", "META")
}

fn row(user: &str, device: &str, kind: &str, what: &str, meta: &str) -> String {
    format!("{user:<16}  {device:<16}  {kind:<7}  {what:<7}  {meta}").trim_end().to_string()
}

fn entries(entries: &Entries, what: &str) -> impl Iterator<Item = String> {
    entries.iter().flat_map(move |(user, devices)| {
        devices.iter().map(move |d| row(user, &d.device, &d.kind, what, &d.meta.to_string()))
    })
}

fn counts(room: &str, count: u64, connections: u64) -> String {
    format!("-- {room}: {count} users on {connections} devices")
}

/// The lines a room event prints.
pub(super) fn render(event: &Event) -> Vec<String> {
    match event.name.as_str() {
        "snapshot" => match serde_json::from_str::<Snapshot>(&event.data) {
            Ok(s) => {
                let mut lines = vec![counts(&s.room, s.count, s.connections)];
                if s.truncated {
                    lines[0].push_str(" (the first listed)");
                }
                lines.extend(entries(&s.members, "here"));
                if !s.typing.is_empty() {
                    lines.push(format!("-- typing: {}", s.typing.join(", ")));
                }
                lines
            }
            Err(_) => vec![format!("-- unreadable snapshot: {}", event.data)],
        },
        "room" => match serde_json::from_str::<Change>(&event.data) {
            Ok(c) => {
                let mut lines: Vec<String> = entries(&c.joins, "joined")
                    .chain(entries(&c.updates, "updated"))
                    .chain(entries(&c.leaves, "left"))
                    .collect();
                if let Some(typing) = c.typing {
                    let who = if typing.is_empty() { "nobody".to_string() } else { typing.join(", ") };
                    lines.push(format!("-- typing: {who}"));
                }
                lines.push(counts(&c.room, c.count, c.connections));
                lines
            }
            Err(_) => vec![format!("-- unreadable room change: {}", event.data)],
        },
        _ => Vec::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_room_prints_its_members_then_a_line_per_device_that_comes_changes_or_goes() {
        let event = |name: &str, data: &str| Event { name: name.into(), id: None, data: data.into() };
        let snapshot = r#"{"type":"room_snapshot","room":"doc-1","members":{"ann":[{"device":"tab","kind":"web","meta":{"x":1},"joined_at":"t"}]},"count":1,"connections":1,"truncated":false,"typing":[]}"#;
        assert_eq!(
            render(&event("snapshot", snapshot)),
            vec![
                "-- doc-1: 1 users on 1 devices".to_string(),
                r#"ann               tab               web      here     {"x":1}"#.to_string(),
            ]
        );
        let change = r#"{"type":"room","room":"doc-1","joins":{"bo":[{"device":"p","kind":"mobile","meta":{},"joined_at":"t"}]},"leaves":{"ann":[{"device":"tab","kind":"web","meta":{"x":1},"joined_at":"t"}]},"typing":[],"count":1,"connections":1}"#;
        let lines = render(&event("room", change));
        assert_eq!(lines[0], "bo                p                 mobile   joined   {}");
        assert!(lines[1].starts_with("ann") && lines[1].contains("left"), "{lines:?}");
        assert_eq!(
            lines[2..],
            ["-- typing: nobody".to_string(), "-- doc-1: 1 users on 1 devices".to_string()]
        );
        assert_eq!(header().find("EVENT"), lines[0].find("joined"), "aligned under the header");
    }
}
