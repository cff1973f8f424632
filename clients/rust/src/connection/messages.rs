//! What the task does with the client's commands and the node's messages.

use std::collections::{HashMap, HashSet};

use serde_json::{Value, json};

use super::Command;
use super::{Ended, Socket, Task, Watcher, refused, send};
use crate::{Error, Event, Presence, model::Change, view::WireChange};

impl Task {
    pub(super) async fn command(
        &mut self,
        command: Option<Command>,
        socket: &mut Socket,
    ) -> Result<Option<Ended>, Error> {
        match command {
            None | Some(Command::Close) => {
                let _ = socket.close(None).await;
                return Ok(Some(Ended::Closed));
            }
            Some(Command::Activity) => send(socket, json!({"type": "activity"})).await?,
            Some(Command::Connect) => {}
            Some(Command::Watch { id, users: order, tx }) => {
                let users: HashSet<String> = order.iter().cloned().collect();
                let known = users.is_subset(&self.subscribed)
                    && !self.shared.view.lock().expect("view lock").awaiting();
                let watcher = Watcher { users, order, tx, fresh: !known };
                if known {
                    // Everything it needs is in the view already.
                    let view = self.shared.view.lock().expect("view lock");
                    for user in &watcher.order {
                        if let Some(p) = view.get(user) {
                            let change = Change {
                                user_id: user.clone(),
                                kind: crate::ChangeKind::Snapshot,
                                presence: p.clone(),
                                revision: 0,
                            };
                            let _ = watcher.tx.send(change);
                        }
                    }
                }
                self.watchers.insert(id, watcher);
                self.resubscribe(socket).await?;
            }
            Some(Command::Unwatch { id }) => {
                self.watchers.remove(&id);
                self.resubscribe(socket).await?;
            }
            Some(command) => {
                if let Some(message) = self.room_message(command) {
                    send(socket, message).await?;
                }
            }
        }
        Ok(None)
    }

    /// A room's command, kept for the next connection: the message to send if one is up.
    pub(super) fn room_message(&mut self, command: Command) -> Option<Value> {
        let message = match command {
            Command::Join { room, meta, joined } => {
                let message = json!({"type": "join", "room": room, "meta": meta});
                self.rooms.insert(room, joined);
                message
            }
            Command::Meta { room, meta } => {
                let joined = self.rooms.get_mut(&room)?;
                joined.meta = meta.clone();
                json!({"type": "meta", "room": room, "meta": meta})
            }
            Command::Typing { room, active } => json!({"type": "typing", "room": room, "active": active}),
            Command::Leave { room } => {
                self.rooms.remove(&room);
                json!({"type": "leave", "room": room})
            }
            _ => return None,
        };
        Some(message)
    }

    /// A message from the node: what it ends, if anything.
    pub(super) fn received(&mut self, text: &str) -> Option<Ended> {
        let message: Value = serde_json::from_str(text).ok()?;
        match message["type"].as_str()? {
            "snapshot" => {
                let data: HashMap<String, Presence> = serde_json::from_value(message["data"].clone()).ok()?;
                let revisions: HashMap<String, u64> =
                    serde_json::from_value(message["revisions"].clone()).unwrap_or_default();
                let told = self.shared.view.lock().expect("view lock").snapshot(data, &revisions);
                self.dispatch(told, true);
            }
            "changes" => {
                let changes: Vec<WireChange> = serde_json::from_value(message["changes"].clone()).ok()?;
                let told = self.shared.view.lock().expect("view lock").changes(changes);
                self.dispatch(told, false);
            }
            "joined" | "room" => {
                let joined = self.rooms.get(message["room"].as_str()?)?;
                let mut view = joined.view.lock().expect("room lock");
                let change = match message["type"].as_str() {
                    Some("joined") => view.snapshot(&message),
                    _ => view.change(&message)?,
                };
                let _ = joined.tx.send(change);
            }
            "stale" => drop(self.shared.events.send(Event::Stale)),
            "fresh" => drop(self.shared.events.send(Event::Fresh)),
            "error" if matches!(message["status"].as_u64(), Some(401 | 403)) => {
                return Some(refused(&message));
            }
            "error" => {
                // A message the node could not take (a bad id in a watch list, a room refused).
                let status = message["status"].as_u64().map_or(400, |s| s as u16);
                let e =
                    Error::Api { status, message: message["error"].as_str().unwrap_or_default().to_string() };
                let _ = self.shared.events.send(Event::Error(e));
            }
            _ => {}
        }
        None
    }

    /// Changes to the watchers of their users; after a snapshot, a fresh watcher gets every one of
    /// its users' entries instead.
    fn dispatch(&mut self, told: Vec<Change>, snapshot: bool) {
        let view = self.shared.view.lock().expect("view lock");
        self.watchers.retain(|_, watcher| {
            if snapshot && watcher.fresh {
                watcher.fresh = false;
                return watcher.order.iter().filter_map(|u| view.get(u).map(|p| (u, p))).all(|(u, p)| {
                    let revision = told.iter().find(|c| &c.user_id == u).map_or(0, |c| c.revision);
                    let change = Change {
                        user_id: u.clone(),
                        kind: crate::ChangeKind::Snapshot,
                        presence: p.clone(),
                        revision,
                    };
                    watcher.tx.send(change).is_ok()
                });
            }
            told.iter()
                .filter(|c| watcher.users.contains(&c.user_id))
                .all(|c| watcher.tx.send(c.clone()).is_ok())
        });
    }
}
