//! Rooms (docs/rooms.md): real WebSocket clients joining rooms at a center and a leaf, watched
//! and read from the other node, through failures and hostile input.

mod access;
mod cli;
mod lifetimes;
mod members;
mod typing;

use std::time::Duration;

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::helpers::{TestApp, eventually, json_of, leaf_app, live::Ws, mint_rooms};

const SECOND: Duration = Duration::from_secs(1);

/// A connection holding `user`'s `device` session, with a token that may join `rooms`.
pub(crate) async fn member(app: &TestApp, user: &str, device: &str, rooms: &[&str]) -> Ws {
    let mut ws = Ws::connect(app).await;
    let token = mint_rooms(user, rooms);
    ws.send(json!({"type": "hello", "token": token, "device": device, "kind": "web"})).await;
    ws.expect("welcome", 5 * SECOND).await;
    ws
}

/// Joins `room` with `meta`; the `joined` snapshot.
pub(crate) async fn join(ws: &mut Ws, room: &str, meta: Value) -> Value {
    ws.send(json!({"type": "join", "room": room, "meta": meta})).await;
    next_of(ws, "joined", 5 * SECOND).await
}

/// The next message of type `kind`, skipping others (room changes that raced it, say).
pub(crate) async fn next_of(ws: &mut Ws, kind: &str, within: Duration) -> Value {
    let deadline = tokio::time::Instant::now() + within;
    loop {
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        let message = ws.next_within(left).await.unwrap_or_else(|| panic!("no `{kind}` within {within:?}"));
        if message["type"] == kind {
            return message;
        }
    }
}

/// A watcher of `room` (with a token that may read it), past its snapshot.
async fn room_watcher(app: &TestApp, room: &str) -> (Ws, Value) {
    let mut ws = member(app, "watcher", "w", &[room]).await;
    ws.send(json!({"type": "watch_room", "room": room})).await;
    let snapshot = next_of(&mut ws, "room_snapshot", 5 * SECOND).await;
    (ws, snapshot)
}

/// The `room` messages a connection receives within `within`.
async fn room_changes(ws: &mut Ws, within: Duration) -> Vec<Value> {
    let deadline = tokio::time::Instant::now() + within;
    let mut changes = Vec::new();
    while let Some(message) =
        ws.next_within(deadline.saturating_duration_since(tokio::time::Instant::now())).await
    {
        if message["type"] == "room" {
            changes.push(message);
        }
    }
    changes
}

/// Room messages until one satisfies `check` (within `within`); that one.
async fn room_change_until(
    ws: &mut Ws,
    within: Duration,
    what: &str,
    check: impl Fn(&Value) -> bool,
) -> Value {
    let deadline = tokio::time::Instant::now() + within;
    loop {
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        let message = ws.next_within(left).await.unwrap_or_else(|| panic!("no room change: {what}"));
        if message["type"] == "room" && check(&message) {
            return message;
        }
    }
}

/// `GET /api/v2/rooms/{room}` with `token`, if any: status and body.
async fn read_room(app: &TestApp, room: &str, token: Option<&str>) -> (StatusCode, Value) {
    let mut request = app.http.get(app.url(&format!("/api/v2/rooms/{room}")));
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    json_of(request.send().await.unwrap()).await
}

/// The users `app` lists in `room` (read with a token for it), once `check` holds.
async fn members_when(app: &TestApp, room: &str, what: &str, check: impl Fn(&Value) -> bool) -> Value {
    let token = mint_rooms("reader", &[room]);
    let what = format!("{room} {what} at {}", app.config.service.node_id);
    eventually(10 * SECOND, &what, || async {
        let (status, body) = read_room(app, room, Some(&token)).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        check(&body["data"]).then(|| body["data"].clone())
    })
    .await
}

/// A center and a leaf of it, both in this process.
async fn region() -> (TestApp, TestApp) {
    let center = TestApp::spawn().await;
    let leaf = leaf_app(center.config.nats.leaf_port, "leaf-a", "us-east-1").await;
    (center, leaf)
}
