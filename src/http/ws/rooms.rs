//! A WebSocket connection in rooms (docs/rooms.md): `join`, `leave`, `meta` and `typing` for the
//! connection's session; `watch_room` and `unwatch_room` for anyone allowed to read the room.
//! Every refusal is an `error` naming the room; the connection stays.

use std::time::Duration;

use super::{connection::Connection, message::ClientMessage};
use crate::{
    model::{Meta, is_valid_room},
    rooms::Access,
    sessions::JoinError,
};

/// Rooms one connection may watch besides those it joined.
const MAX_WATCHED: usize = 1000;

/// Why a room message was refused: the status it would have over HTTP, and the reason.
type Refusal = (u16, String);

fn refuse(status: u16, why: impl ToString) -> Refusal {
    (status, why.to_string())
}

impl Connection {
    /// Handles a room message; only a failure to write ends the connection.
    pub(super) async fn room(&mut self, request: ClientMessage, limit: Duration) -> Result<(), ()> {
        let room = match &request {
            ClientMessage::Join { room, .. }
            | ClientMessage::Leave { room }
            | ClientMessage::Meta { room, .. }
            | ClientMessage::Typing { room, .. }
            | ClientMessage::WatchRoom { room, .. }
            | ClientMessage::UnwatchRoom { room } => room.clone(),
            _ => return Ok(()),
        };
        let answer = match is_valid_room(&room) {
            false => Err(refuse(400, crate::model::RoomError::Room)),
            true => self.room_request(request).await,
        };
        match answer {
            Ok(Some(text)) => self.send_text(text, limit).await,
            Ok(None) => Ok(()),
            Err((status, why)) => {
                let text = serde_json::json!({"type": "error", "status": status, "error": why, "room": room});
                self.send_text(text.to_string(), limit).await
            }
        }
    }

    /// What to answer `request`, if anything.
    async fn room_request(&mut self, request: ClientMessage) -> Result<Option<String>, Refusal> {
        let settings = self.state.rooms.settings().clone();
        let meta = |value: Option<serde_json::Value>| match value {
            Some(value) => Meta::parse(value, settings.max_meta_bytes).map_err(|e| refuse(400, e)),
            None => Ok(Meta::empty()),
        };
        let subscriber = self.subscription.subscriber().clone();
        match request {
            ClientMessage::Join { room, meta: value, members } => {
                let session = self.session()?;
                if !self.state.rooms.allows(&room, self.rooms.grant.as_deref(), Access::Join) {
                    return Err(refuse(
                        403,
                        "the token's `rooms` claim does not let this user join this room",
                    ));
                }
                let meta = meta(value)?;
                session.join(&room, meta).await.map_err(joining)?;
                let viewer = Some(session.user().to_string());
                self.rooms.joined.insert(room.clone());
                let watched = (&subscriber, viewer.as_deref());
                let snapshot = self.state.rooms.watch(&room, watched, members, Some("joined"));
                Ok(Some(snapshot))
            }
            ClientMessage::Leave { room } => {
                self.session()?.leave(&room).map_err(joining)?;
                if self.rooms.joined.remove(&room) && !self.rooms.watched.contains(&room) {
                    self.state.rooms.unwatch(&room, subscriber.id);
                }
                Ok(Some(serde_json::json!({"type": "left", "room": room}).to_string()))
            }
            ClientMessage::Meta { room, meta: value } => {
                self.signal()?;
                let meta = meta(Some(value))?;
                self.session()?.set_meta(&room, meta).map_err(joining)?;
                Ok(None)
            }
            ClientMessage::Typing { room, active } => {
                self.signal()?;
                self.session()?.typing(&room, active).map_err(joining)?;
                Ok(None)
            }
            ClientMessage::WatchRoom { room, members } => {
                if !self.state.rooms.allows(&room, self.rooms.grant.as_deref(), Access::Read) {
                    return Err(refuse(
                        403,
                        "this room is not public, and the token's `rooms` claim does not name it",
                    ));
                }
                if !self.rooms.watched.contains(&room) && self.rooms.watched.len() >= MAX_WATCHED {
                    return Err(refuse(
                        429,
                        format!("too many rooms watched: at most {MAX_WATCHED} per connection"),
                    ));
                }
                if members {
                    self.limited.charge(&self.state, 1).map_err(|e| refuse(429, e))?;
                }
                self.rooms.watched.insert(room.clone());
                let viewer = self.device.as_ref().map(|s| s.user().to_string());
                Ok(Some(self.state.rooms.watch(
                    &room,
                    (&subscriber, viewer.as_deref()),
                    members,
                    Some("room_snapshot"),
                )))
            }
            ClientMessage::UnwatchRoom { room } => {
                if self.rooms.watched.remove(&room) && !self.rooms.joined.contains(&room) {
                    self.state.rooms.unwatch(&room, subscriber.id);
                }
                Ok(None)
            }
            _ => Ok(None),
        }
    }

    fn session(&self) -> Result<&crate::sessions::Session, Refusal> {
        self.device.as_ref().ok_or_else(|| refuse(400, "say hello first: rooms belong to a session"))
    }

    /// Spends one of the connection's `meta` and `typing` messages.
    fn signal(&self) -> Result<(), Refusal> {
        let settings = self.state.rooms.settings();
        self.rooms.signals.check().map_err(|_| {
            refuse(
                429,
                format!(
                    "too many meta and typing messages: at most {} per second (rooms.signals_per_second); this one was ignored",
                    settings.signals_per_second
                ),
            )
        })
    }
}

fn joining(e: JoinError) -> Refusal {
    let status = match e {
        JoinError::TooManyRooms(_) => 409,
        JoinError::NotMember => 409,
        JoinError::NoSession => 400,
    };
    refuse(status, e)
}
