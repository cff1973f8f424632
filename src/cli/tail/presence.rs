//! How `presence watch` prints users' presence: one aligned line per presence, with its own times.

use serde::Deserialize;

use super::Event;

#[derive(Deserialize)]
struct Snapshot {
    data: std::collections::BTreeMap<String, Presence>,
}

#[derive(Deserialize)]
struct Changes {
    changes: Vec<ChangeLine>,
}

#[derive(Deserialize)]
struct ChangeLine {
    kind: String,
    presence: Presence,
}

#[derive(Deserialize)]
struct Presence {
    user_id: String,
    status: String,
    message: Option<String>,
    last_seen: Option<String>,
    updated_at: Option<String>,
}

/// The columns of a presence line: user, status, last seen, updated, then message and notes.
pub(super) struct Columns {
    pub(super) user: usize,
}

/// The widest status (`offline`) and an RFC 3339 time with milliseconds.
const STATUS_WIDTH: usize = 7;
const TIME_WIDTH: usize = 24;

impl Columns {
    pub(super) fn header(&self) -> String {
        self.row("USER", "STATUS", "LAST SEEN", "UPDATED", "MESSAGE")
    }

    fn row(&self, user: &str, status: &str, last_seen: &str, updated: &str, rest: &str) -> String {
        let width = self.user;
        let row = format!(
            "{user:<width$}  {status:<STATUS_WIDTH$}  {last_seen:<TIME_WIDTH$}  {updated:<TIME_WIDTH$}  {rest}"
        );
        row.trim_end().to_string()
    }

    fn presence(&self, p: &Presence, note: &str) -> String {
        let message = p.message.as_deref().map(|m| format!("{m:?}")).unwrap_or_default();
        let rest = [message.as_str(), note].iter().filter(|s| !s.is_empty()).cloned().collect::<Vec<_>>();
        let (seen, updated) = (p.last_seen.as_deref().unwrap_or("-"), p.updated_at.as_deref().unwrap_or("-"));
        self.row(&p.user_id, &p.status, seen, updated, &rest.join("  "))
    }
}

/// The lines an event prints: a presence with its own times, or a notice.
pub(super) fn render(columns: &Columns, event: &Event) -> Vec<String> {
    let show = |p: &Presence, note: &str| columns.presence(p, note);
    match event.name.as_str() {
        "snapshot" => match serde_json::from_str::<Snapshot>(&event.data) {
            Ok(s) => s.data.values().map(|p| show(p, "")).collect(),
            Err(_) => vec![format!("-- unreadable snapshot: {}", event.data)],
        },
        "change" => match serde_json::from_str::<Changes>(&event.data) {
            Ok(c) => c
                .changes
                .iter()
                .map(|c| match c.kind.as_str() {
                    "expire" => show(&c.presence, "(expired)"),
                    "erase" => columns.row(&c.presence.user_id, "erased", "-", "-", ""),
                    _ => show(&c.presence, ""),
                })
                .collect(),
            Err(_) => vec![format!("-- unreadable change: {}", event.data)],
        },
        _ => Vec::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn changes_print_one_aligned_line_each_with_the_presences_own_times() {
        let t = "2026-12-05T08:00:00.000Z";
        let data = format!(
            r#"{{"changes":[{{"user_id":"a","kind":"update","presence":{{"user_id":"a","status":"busy","message":"Call","last_seen":"{t}","updated_at":"{t}"}},"revision":4}},{{"user_id":"bob","kind":"expire","presence":{{"user_id":"bob","status":"offline","updated_at":"{t}"}},"revision":5}},{{"user_id":"c","kind":"erase","presence":{{"user_id":"c","status":"offline"}},"revision":6}}]}}"#
        );
        let event = Event { name: "change".into(), id: None, data };
        let columns = Columns { user: 4 };
        let lines = render(&columns, &event);
        assert_eq!(
            lines,
            vec![
                format!("a     busy     {t}  {t}  \"Call\""),
                format!("bob   offline  -                         {t}  (expired)"),
                "c     erased   -                         -".to_string(),
            ]
        );
        let header = columns.header();
        assert_eq!(header.find("STATUS"), lines[0].find("busy"), "aligned under the header");
        assert_eq!(header.find("UPDATED"), lines[1].rfind(t), "{header}\n{}", lines[1]);
    }
}
