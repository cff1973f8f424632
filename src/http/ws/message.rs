//! What a client may send over the WebSocket (docs/live.md, docs/sessions.md, docs/rooms.md).

use serde::Deserialize;

#[derive(Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub(super) enum ClientMessage {
    Hello {
        token: String,
        device: String,
        kind: String,
    },
    Activity,
    Subscribe {
        users: Vec<String>,
    },
    Unsubscribe {
        users: Vec<String>,
    },
    Ping,
    Join {
        room: String,
        meta: Option<serde_json::Value>,
        #[serde(default = "yes")]
        members: bool,
    },
    Leave {
        room: String,
    },
    Meta {
        room: String,
        meta: serde_json::Value,
    },
    Typing {
        room: String,
        #[serde(default = "yes")]
        active: bool,
    },
    WatchRoom {
        room: String,
        #[serde(default = "yes")]
        members: bool,
    },
    UnwatchRoom {
        room: String,
    },
}

fn yes() -> bool {
    true
}
