//! Clients of the live endpoints: a Server-Sent Events reader over a real HTTP connection, and a
//! WebSocket client (tokio-tungstenite).

use std::time::Duration;

use futures::{SinkExt, StreamExt};
use serde_json::Value;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream, tungstenite::Message};

use super::TestApp;

/// One event of a stream.
#[derive(Debug, Clone)]
pub(crate) struct SseEvent {
    pub name: String,
    pub id: Option<String>,
    pub data: Value,
}

/// An open `GET /api/v2/presence/stream`.
pub(crate) struct Sse {
    response: reqwest::Response,
    buffer: String,
    /// Comment lines seen (keep-alives).
    pub comments: usize,
}

impl Sse {
    /// Opens a stream for `users` (comma-separated), resuming after `last_id` if given.
    pub(crate) async fn open(app: &TestApp, users: &str, last_id: Option<&str>) -> Self {
        let response = Self::request(app, users, last_id).await;
        assert_eq!(response.status(), 200, "the stream opens");
        assert_eq!(response.headers()["content-type"], "text/event-stream");
        Self { response, buffer: String::new(), comments: 0 }
    }

    /// A stream from an answer already received (a room stream, say).
    pub(crate) fn from_response(response: reqwest::Response) -> Self {
        assert_eq!(response.status(), 200, "the stream opens");
        Self { response, buffer: String::new(), comments: 0 }
    }

    /// The raw answer to a stream request (for refusals).
    pub(crate) async fn request(app: &TestApp, users: &str, last_id: Option<&str>) -> reqwest::Response {
        let mut request = app.http.get(app.url(&format!("/api/v2/presence/stream?users={users}")));
        if let Some(id) = last_id {
            request = request.header("last-event-id", id);
        }
        request.send().await.unwrap()
    }

    /// The next event within `within`, or `None`.
    pub(crate) async fn next_within(&mut self, within: Duration) -> Option<SseEvent> {
        tokio::time::timeout(within, self.next()).await.ok().flatten()
    }

    /// The next event, or `None` when the stream ended.
    pub(crate) async fn next(&mut self) -> Option<SseEvent> {
        loop {
            if let Some(at) = self.buffer.find("\n\n") {
                let block: String = self.buffer.drain(..at + 2).collect();
                let (mut name, mut id, mut data) = ("message".to_string(), None, String::new());
                for line in block.lines() {
                    if line.starts_with(':') {
                        self.comments += 1;
                        continue;
                    }
                    let (field, value) = line.split_once(": ").unwrap_or((line, ""));
                    match field {
                        "event" => name = value.to_string(),
                        "id" => id = Some(value.to_string()),
                        "data" => data.push_str(value),
                        _ => {}
                    }
                }
                if data.is_empty() {
                    continue;
                }
                let data = serde_json::from_str(&data).unwrap_or(Value::String(data));
                return Some(SseEvent { name, id, data });
            }
            match self.response.chunk().await {
                Ok(Some(chunk)) => self.buffer.push_str(std::str::from_utf8(&chunk).unwrap()),
                _ => return None,
            }
        }
    }

    /// The next event, which must be called `name` and come within `within`.
    pub(crate) async fn expect(&mut self, name: &str, within: Duration) -> SseEvent {
        let event =
            self.next_within(within).await.unwrap_or_else(|| panic!("no `{name}` event within {within:?}"));
        assert_eq!(event.name, name, "{event:?}");
        event
    }

    /// Changes until `until` holds for one of them (each event's changes in order), within
    /// `within`. Returns every change seen.
    pub(crate) async fn changes_until(
        &mut self,
        within: Duration,
        until: impl Fn(&Value) -> bool,
    ) -> Vec<Value> {
        let deadline = tokio::time::Instant::now() + within;
        let mut seen = Vec::new();
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            let Some(event) = self.next_within(left).await else {
                panic!("no change matching within {within:?}; saw {seen:#?}");
            };
            if event.name != "change" {
                continue;
            }
            for change in event.data["changes"].as_array().unwrap() {
                seen.push(change.clone());
            }
            if seen.iter().any(&until) {
                return seen;
            }
        }
    }
}

/// A WebSocket client of `GET /api/v2/ws`.
pub(crate) struct Ws {
    pub socket: WebSocketStream<MaybeTlsStream<tokio::net::TcpStream>>,
}

impl Ws {
    pub(crate) async fn connect(app: &TestApp) -> Self {
        let (socket, response) = tokio_tungstenite::connect_async(format!("ws://{}/api/v2/ws", app.addr))
            .await
            .expect("the WebSocket opens");
        assert_eq!(response.status(), 101);
        Self { socket }
    }

    /// A connection to the node at `addr` (another node than a `TestApp`, such as a process).
    pub(crate) async fn connect_to(addr: std::net::SocketAddr) -> Self {
        let (socket, _) = tokio_tungstenite::connect_async(format!("ws://{addr}/api/v2/ws"))
            .await
            .expect("the WebSocket opens");
        Self { socket }
    }

    /// A connection holding a session of `user`'s `device`: `hello`, then its `welcome`.
    pub(crate) async fn session(app: &TestApp, user: &str, device: &str, kind: &str) -> Self {
        let mut ws = Self::connect(app).await;
        ws.hello(user, device, kind).await;
        ws
    }

    /// Says hello for `user`'s `device` and waits for the welcome.
    pub(crate) async fn hello(&mut self, user: &str, device: &str, kind: &str) {
        let token = super::mint(user);
        self.send(serde_json::json!({"type": "hello", "token": token, "device": device, "kind": kind})).await;
        let welcome = self.expect("welcome", Duration::from_secs(5)).await;
        assert_eq!((welcome["user_id"].as_str(), welcome["device"].as_str()), (Some(user), Some(device)));
    }

    /// Ends the connection with a close frame, and waits for the server's.
    pub(crate) async fn close(mut self) {
        self.socket.close(None).await.unwrap();
        while let Ok(Some(Ok(_))) = tokio::time::timeout(Duration::from_secs(5), self.socket.next()).await {}
    }

    pub(crate) async fn send(&mut self, message: Value) {
        self.socket.send(Message::text(message.to_string())).await.unwrap();
    }

    pub(crate) async fn send_raw(&mut self, message: Message) {
        self.socket.send(message).await.unwrap();
    }

    /// The next JSON text message within `within` (protocol pings are answered by the library
    /// and skipped).
    pub(crate) async fn next_within(&mut self, within: Duration) -> Option<Value> {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            match tokio::time::timeout(left, self.socket.next()).await.ok()?? {
                Ok(Message::Text(text)) => return Some(serde_json::from_str(&text).unwrap()),
                Ok(Message::Close(frame)) => {
                    return Some(
                        serde_json::json!({"type": "closed", "frame": frame.map(|f| (u16::from(f.code), f.reason.to_string()))}),
                    );
                }
                Ok(_) => continue,
                Err(_) => return None,
            }
        }
    }

    /// The next message, which must have `type` `kind`.
    pub(crate) async fn expect(&mut self, kind: &str, within: Duration) -> Value {
        let message =
            self.next_within(within).await.unwrap_or_else(|| panic!("no `{kind}` message within {within:?}"));
        assert_eq!(message["type"], kind, "{message}");
        message
    }
}
