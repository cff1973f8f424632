//! The connection task: one WebSocket at a time, to one of the client's nodes. On each
//! (re)connect: a fresh token, `hello` (the device's session continues if the node's grace has
//! not run out), the union of the watch lists, and the manual status asserted again. Between
//! attempts a jittered exponential backoff (0.5 s to 20 s, reset after a connection that held
//! for 30 s), moving to the next URL; a connection silent for two keep-alive periods is dead; a
//! refused token (401, 403) stops it and says so.

use std::{
    collections::{HashMap, HashSet},
    sync::Arc,
    time::{Duration, Instant},
};

use futures::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio::sync::mpsc;
use tokio_tungstenite::{WebSocketStream, tungstenite::Message};

mod messages;

use crate::{
    ConnectionState, Error, Event,
    model::Change,
    shared::Shared,
    transport::{Node, Stream},
};

const BACKOFF_FIRST: Duration = Duration::from_millis(500);
const BACKOFF_MOST: Duration = Duration::from_secs(20);
/// A connection that held this long resets the backoff.
const STABLE: Duration = Duration::from_secs(30);

pub(crate) enum Command {
    Watch { id: u64, users: Vec<String>, tx: mpsc::UnboundedSender<Change> },
    Join { room: String, meta: serde_json::Value, joined: Joined },
    Meta { room: String, meta: serde_json::Value },
    Typing { room: String, active: bool },
    Leave { room: String },
    Unwatch { id: u64 },
    Activity,
    Connect,
    Close,
}

/// A room joined: its meta (to join again with), its view, where its changes go.
pub(crate) struct Joined {
    pub meta: serde_json::Value,
    pub view: Arc<std::sync::Mutex<crate::room::RoomView>>,
    pub tx: mpsc::UnboundedSender<crate::room::RoomChange>,
}

struct Watcher {
    /// In the order given.
    order: Vec<String>,
    users: HashSet<String>,
    tx: mpsc::UnboundedSender<Change>,
    /// Told nothing yet: gets every user's entry with the next snapshot.
    fresh: bool,
}

/// How a connection ended.
enum Ended {
    /// Closed by the client: stop.
    Closed,
    /// The token was refused: stop until asked to connect again.
    Refused(Error),
    /// Lost (or never made): try again.
    Lost(Error),
}

type Socket = WebSocketStream<Stream>;

pub(crate) struct Task {
    shared: Arc<Shared>,
    commands: mpsc::UnboundedReceiver<Command>,
    watchers: HashMap<u64, Watcher>,
    /// The users the node watches for this connection.
    subscribed: HashSet<String>,
    rooms: HashMap<String, Joined>,
}

impl Task {
    pub(crate) fn new(shared: Arc<Shared>, commands: mpsc::UnboundedReceiver<Command>) -> Self {
        Self { shared, commands, watchers: HashMap::new(), subscribed: HashSet::new(), rooms: HashMap::new() }
    }

    pub(crate) async fn run(mut self) {
        let (mut node, mut failures) = (0, 0u32);
        loop {
            self.shared.set_state(ConnectionState::Connecting);
            let started = Instant::now();
            let ended = self.session(node).await;
            self.subscribed.clear();
            match ended {
                Ended::Closed => break,
                Ended::Refused(e) => {
                    self.shared.set_state(ConnectionState::Disconnected);
                    let _ = self.shared.events.send(Event::Error(e));
                    if !self.idle_until_connect().await {
                        break;
                    }
                    failures = 0;
                    continue;
                }
                Ended::Lost(e) => {
                    tracing::debug!(error = %e, "presence connection lost; reconnecting");
                    let _ = self.shared.events.send(Event::Error(e));
                }
            }
            if started.elapsed() >= STABLE {
                failures = 0;
            }
            node = (node + 1) % self.shared.nodes.len();
            let wait = backoff(failures);
            failures = failures.saturating_add(1);
            if !self.wait(wait).await {
                break;
            }
        }
        self.shared.set_state(ConnectionState::Disconnected);
    }

    /// Waits `wait`, keeping track of watches meanwhile; false if the client closed.
    async fn wait(&mut self, wait: Duration) -> bool {
        let until = tokio::time::Instant::now() + wait;
        loop {
            tokio::select! {
                () = tokio::time::sleep_until(until) => return true,
                command = self.commands.recv() => match command {
                    None | Some(Command::Close) => return false,
                    Some(Command::Connect) => return true,
                    Some(command) => self.offline(command),
                },
            }
        }
    }

    /// Stopped after a refused token: until asked to connect (true) or closed (false).
    async fn idle_until_connect(&mut self) -> bool {
        loop {
            match self.commands.recv().await {
                None | Some(Command::Close) => return false,
                Some(Command::Connect) => return true,
                Some(command) => self.offline(command),
            }
        }
    }

    /// A watch or unwatch while no connection is up.
    fn offline(&mut self, command: Command) {
        match command {
            Command::Watch { id, users, tx } => {
                let watcher =
                    Watcher { users: users.iter().cloned().collect(), order: users, tx, fresh: true };
                self.watchers.insert(id, watcher);
            }
            Command::Unwatch { id } => {
                self.watchers.remove(&id);
                let wanted = self.wanted();
                self.shared.view.lock().expect("view lock").keep(&wanted);
            }
            Command::Activity | Command::Connect | Command::Close => {}
            room => drop(self.room_message(room)),
        }
    }

    fn wanted(&self) -> HashSet<String> {
        self.watchers.values().flat_map(|w| w.users.iter().cloned()).collect()
    }

    /// The users subscribed to that are no longer `wanted`.
    fn subscribed_not(&self, wanted: &HashSet<String>) -> HashSet<String> {
        self.subscribed.difference(wanted).cloned().collect()
    }

    async fn session(&mut self, node: usize) -> Ended {
        let target = self.shared.nodes[node].clone();
        let mut socket = match self.open(&target).await {
            Ok(socket) => socket,
            Err(Ended::Lost(e)) => return Ended::Lost(e),
            Err(other) => return other,
        };
        self.shared.set_state(ConnectionState::Connected);
        self.reassert();
        if let Err(e) = self.resubscribe(&mut socket).await {
            return Ended::Lost(e);
        }
        for (room, joined) in &self.rooms {
            if let Err(e) =
                send(&mut socket, json!({"type": "join", "room": room, "meta": joined.meta})).await
            {
                return Ended::Lost(e);
            }
        }
        loop {
            let next = tokio::select! {
                message = tokio::time::timeout(self.shared.dead_after, socket.next()) => message,
                command = self.commands.recv() => {
                    match self.command(command, &mut socket).await {
                        Ok(None) => continue,
                        Ok(Some(ended)) => return ended,
                        Err(e) => return Ended::Lost(e),
                    }
                }
            };
            let message = match next {
                Err(_) => return Ended::Lost(Error::Protocol("the connection went silent".into())),
                Ok(None) => return Ended::Lost(Error::Protocol("the node closed the connection".into())),
                Ok(Some(Err(e))) => return Ended::Lost(lost(&target, e)),
                Ok(Some(Ok(message))) => message,
            };
            match message {
                Message::Text(text) => {
                    if let Some(ended) = self.received(&text) {
                        return ended;
                    }
                }
                Message::Close(frame) => {
                    return closed(frame.map(|f| (u16::from(f.code), f.reason.to_string())));
                }
                _ => {}
            }
        }
    }

    /// Connects, and says hello with a fresh token when the client has a provider.
    async fn open(&mut self, node: &Node) -> Result<Socket, Ended> {
        let token = match &self.shared.tokens {
            Some(_) => Some(self.shared.token().await.map_err(Ended::Lost)?),
            None => None,
        };
        let stream = node.connect(&self.shared.tls).await.map_err(Ended::Lost)?;
        let (mut socket, _) = tokio_tungstenite::client_async(node.ws_url(), stream)
            .await
            .map_err(|e| Ended::Lost(lost(node, e)))?;
        let Some(token) = token else { return Ok(socket) };
        let hello =
            json!({"type": "hello", "token": token, "device": self.shared.device, "kind": self.shared.kind});
        socket.send(Message::text(hello.to_string())).await.map_err(|e| Ended::Lost(lost(node, e)))?;
        loop {
            let next = tokio::time::timeout(self.shared.dead_after, socket.next()).await;
            match next {
                Ok(Some(Ok(Message::Text(text)))) => {
                    let message: Value = serde_json::from_str(&text).unwrap_or_default();
                    match message["type"].as_str() {
                        Some("welcome") => return Ok(socket),
                        Some("error") => return Err(refused(&message)),
                        _ => {}
                    }
                }
                Ok(Some(Ok(Message::Close(frame)))) => {
                    return Err(closed(frame.map(|f| (u16::from(f.code), f.reason.to_string()))));
                }
                Ok(Some(Ok(_))) => {}
                Ok(Some(Err(e))) => return Err(Ended::Lost(lost(node, e))),
                Ok(None) | Err(_) => return Err(Ended::Lost(Error::Protocol("no welcome".into()))),
            }
        }
    }

    /// The manual status, written again (in the background).
    fn reassert(&self) {
        let Some((status, options)) = self.shared.manual.lock().expect("manual lock").clone() else { return };
        let shared = self.shared.clone();
        tokio::spawn(async move {
            if let Err(e) = shared.put_status(status, &options).await {
                let _ = shared.events.send(Event::Error(e));
            }
        });
    }

    /// Sends the union of the watch lists (a snapshot follows).
    async fn resubscribe(&mut self, socket: &mut Socket) -> Result<(), Error> {
        let wanted = self.wanted();
        if wanted == self.subscribed {
            return Ok(());
        }
        let gone = self.subscribed_not(&wanted);
        if wanted.is_empty() {
            let users: Vec<&String> = gone.iter().collect();
            send(socket, json!({"type": "unsubscribe", "users": users})).await?;
        } else {
            let users: Vec<&String> = wanted.iter().collect();
            send(socket, json!({"type": "subscribe", "users": users})).await?;
            self.shared.view.lock().expect("view lock").subscribed();
        }
        self.shared.view.lock().expect("view lock").keep(&wanted);
        self.subscribed = wanted;
        Ok(())
    }
}

async fn send(socket: &mut Socket, message: Value) -> Result<(), Error> {
    socket.send(Message::text(message.to_string())).await.map_err(|e| Error::Protocol(e.to_string()))
}

fn lost(node: &Node, e: impl std::fmt::Display) -> Error {
    Error::Unreachable { url: node.base.clone(), reason: e.to_string() }
}

/// A hello's error: refused (401, 403) or lost.
fn refused(message: &Value) -> Ended {
    let text = message["error"].as_str().unwrap_or_default().to_string();
    match message["status"].as_u64() {
        Some(401) => Ended::Refused(Error::Unauthorized(text)),
        Some(403) => Ended::Refused(Error::Forbidden(text)),
        _ => Ended::Lost(Error::Protocol(text)),
    }
}

/// A close frame from the node: 4401/4403 refuse the token, anything else is a reconnect.
fn closed(frame: Option<(u16, String)>) -> Ended {
    match frame {
        Some((4401, reason)) => Ended::Refused(Error::Unauthorized(reason)),
        Some((4403, reason)) => Ended::Refused(Error::Forbidden(reason)),
        Some((code, reason)) => {
            Ended::Lost(Error::Protocol(format!("closed by the node ({code}: {reason})")))
        }
        None => Ended::Lost(Error::Protocol("closed by the node".into())),
    }
}

/// The `failures`th wait: 0.5 s doubling to 20 s, each between half and all of it.
fn backoff(failures: u32) -> Duration {
    let full = BACKOFF_FIRST.saturating_mul(1 << failures.min(6)).min(BACKOFF_MOST);
    full.mul_f64(0.5 + rand::random::<f64>() * 0.5)
}
