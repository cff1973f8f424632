//! How `presence watch` prints users' presence: one aligned line per presence, with its own times.

use futures::StreamExt;
use presence_client::{Change, ChangeKind, Client, ConnectionState, Error, Event};
use serde::Deserialize;
use tokio::io::AsyncWrite;

use super::line;

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

/// A change's line: a presence with its own times, `(expired)`, or `erased`.
pub(super) fn change_line(columns: &Columns, change: &Change) -> String {
    let value = serde_json::to_value(&change.presence).unwrap_or_default();
    let Ok(p) = serde_json::from_value::<Presence>(value) else {
        return format!("-- unreadable presence of {}", change.user_id);
    };
    match change.kind {
        ChangeKind::Expire => columns.presence(&p, "(expired)"),
        ChangeKind::Erase => columns.row(&p.user_id, "erased", "-", "-", ""),
        _ => columns.presence(&p, ""),
    }
}

/// Follows `users` through the Rust client (`clients/rust`): where each stands, then every
/// change, until interrupted; its reconnects and the node's link as notices. A first connection
/// that fails, and a watch list the node refuses, end it with the error.
pub(super) async fn follow(
    client: Client,
    users: &[String],
    columns: &Columns,
    out: &mut (impl AsyncWrite + Unpin),
) -> anyhow::Result<()> {
    let mut events = client.events();
    let mut watch = client.watch(users.iter().cloned());
    let mut connected = false;
    loop {
        tokio::select! {
            change = watch.next() => match change {
                Some(change) => line(out, &change_line(columns, &change)).await?,
                None => anyhow::bail!("the client closed"),
            },
            event = events.recv() => match event {
                Ok(Event::State(ConnectionState::Connected)) => connected = true,
                Ok(Event::State(ConnectionState::Connecting)) if connected => line(out, "-- reconnecting").await?,
                Ok(Event::Stale) => line(out, "-- the node lost its link to NATS: changes may arrive late").await?,
                Ok(Event::Fresh) => line(out, "-- the node is caught up again").await?,
                Ok(Event::Error(e @ Error::Api { .. })) => return Err(e.into()),
                Ok(Event::Error(e)) if !connected => return Err(e.into()),
                Ok(Event::Error(e)) => line(out, &format!("-- {e}")).await?,
                _ => {}
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn change(kind: ChangeKind, presence: serde_json::Value) -> Change {
        let user_id = presence["user_id"].as_str().unwrap().to_string();
        Change { user_id, kind, presence: serde_json::from_value(presence).unwrap(), revision: 4 }
    }

    #[test]
    fn changes_print_one_aligned_line_each_with_the_presences_own_times() {
        let t = "2026-12-05T08:00:00.000Z";
        let columns = Columns { user: 4 };
        let lines = [
            change(
                ChangeKind::Update,
                serde_json::json!({"user_id": "a", "status": "busy", "message": "Call", "last_seen": t, "updated_at": t}),
            ),
            change(ChangeKind::Expire, serde_json::json!({"user_id": "bob", "status": "offline", "updated_at": t})),
            change(ChangeKind::Erase, serde_json::json!({"user_id": "c", "status": "offline"})),
        ]
        .iter()
        .map(|c| change_line(&columns, c))
        .collect::<Vec<_>>();
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
