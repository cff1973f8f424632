//! The client: built once, it holds one WebSocket to a node (the session, when it has a token,
//! and every watch), reconnects by itself, and makes REST calls.

use std::{
    collections::HashMap,
    future::Future,
    path::PathBuf,
    pin::Pin,
    sync::{
        Arc, Mutex,
        atomic::{AtomicU64, Ordering},
    },
    task::{Context, Poll},
    time::{Duration, Instant},
};

use futures::Stream;
use hyper::Method;
use serde_json::json;
use tokio::sync::{broadcast, mpsc, watch};

use crate::{
    ConnectionState, Error, Event, Presence, Status, StatusOptions,
    connection::{Command, Joined, Task},
    model::Change,
    rest::Rest,
    room::{Members, RoomChange, RoomView},
    shared::{Shared, TokenProvider},
    transport::{Node, Tls},
    view::View,
};

/// Builds a [`Client`].
#[derive(Default)]
pub struct ClientBuilder {
    urls: Vec<String>,
    tokens: Option<TokenProvider>,
    device: Option<String>,
    kind: Option<String>,
    ca_file: Option<PathBuf>,
    keep_alive: Option<Duration>,
}

impl ClientBuilder {
    /// A node's base URL (`https://presence.example.com`); several, in the order to try them.
    pub fn url(mut self, url: impl Into<String>) -> Self {
        self.urls.push(url.into());
        self
    }

    /// Several nodes to fail over to, in order.
    pub fn urls(mut self, urls: impl IntoIterator<Item = impl Into<String>>) -> Self {
        self.urls.extend(urls.into_iter().map(Into::into));
        self
    }

    /// Where tokens come from: asked at each (re)connect and for each write. With one, the
    /// connection holds the user's device session (`hello`), and [`Client::set_status`] works.
    pub fn token_provider<F, Fut>(mut self, provider: F) -> Self
    where
        F: Fn() -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<String, String>> + Send + 'static,
    {
        self.tokens = Some(Arc::new(move || Box::pin(provider())));
        self
    }

    /// The device this client is (default `rust-{random}`): a reconnect within the node's
    /// session grace continues its session, invisible to everyone else.
    pub fn device(mut self, device: impl Into<String>) -> Self {
        self.device = Some(device.into());
        self
    }

    /// The device's kind (`web`, `mobile`, `desktop`; default `desktop`).
    pub fn kind(mut self, kind: impl Into<String>) -> Self {
        self.kind = Some(kind.into());
        self
    }

    /// The CA that signs the nodes' certificates (default: the system's roots).
    pub fn ca_file(mut self, path: impl Into<PathBuf>) -> Self {
        self.ca_file = Some(path.into());
        self
    }

    /// The node's keep-alive (`stream.keep_alive`, 15 s): a connection silent for two is dead.
    pub fn keep_alive(mut self, period: Duration) -> Self {
        self.keep_alive = Some(period);
        self
    }

    /// The client, connecting in the background (within a Tokio runtime).
    pub fn build(self) -> Result<Client, Error> {
        if self.urls.is_empty() {
            return Err(Error::Url("no URL given".into()));
        }
        let nodes = self.urls.iter().map(|u| Node::parse(u)).collect::<Result<Vec<_>, _>>()?;
        let tls = Tls::new(self.ca_file.as_deref())?;
        let device = self.device.unwrap_or_else(|| format!("rust-{:08x}", rand::random::<u32>()));
        let (events, _) = broadcast::channel(256);
        let (state, _) = watch::channel(ConnectionState::Connecting);
        let shared = Arc::new(Shared {
            nodes: nodes.clone(),
            tls: tls.clone(),
            tokens: self.tokens,
            device,
            kind: self.kind.unwrap_or_else(|| "desktop".into()),
            dead_after: 2 * self.keep_alive.unwrap_or(Duration::from_secs(15)),
            view: Mutex::default(),
            manual: Mutex::default(),
            events,
            state,
            rest: Rest::new(nodes, tls),
        });
        let (commands, receiver) = mpsc::unbounded_channel();
        tokio::spawn(Task::new(shared.clone(), receiver).run());
        Ok(Client { shared, commands, next_watch: Arc::default(), last_activity: Arc::default() })
    }
}

/// A client of a Presence node (or several, to fail over to). Cheap to clone; closed when
/// [`Client::close`] is called or the last clone is dropped.
#[derive(Clone)]
pub struct Client {
    shared: Arc<Shared>,
    commands: mpsc::UnboundedSender<Command>,
    next_watch: Arc<AtomicU64>,
    last_activity: Arc<Mutex<Option<Instant>>>,
}

/// At most one `activity` per this long.
const ACTIVITY_EVERY: Duration = Duration::from_secs(10);

impl Client {
    /// A builder.
    pub fn builder() -> ClientBuilder {
        ClientBuilder::default()
    }

    /// `user`'s presence (REST).
    pub async fn get(&self, user: &str) -> Result<Presence, Error> {
        let answer =
            self.shared.rest.call(Method::GET, &format!("/api/v2/presence/{user}"), (None, None)).await?;
        crate::shared::entry(answer, user)
    }

    /// Several users' presences (REST), by user.
    pub async fn get_many(&self, users: &[&str]) -> Result<HashMap<String, Presence>, Error> {
        let body = json!({ "user_ids": users });
        let answer: serde_json::Value =
            self.shared.rest.call(Method::POST, "/api/v2/presence/batch", (None, Some(&body))).await?;
        serde_json::from_value(answer["data"].clone()).map_err(|e| Error::Protocol(e.to_string()))
    }

    /// Sets the token's user's status (REST, with a fresh token); the client asserts it again
    /// after each reconnect, so that a node that lost it (restarted from an older copy, say) shows
    /// it again.
    pub async fn set_status(&self, status: Status, options: StatusOptions) -> Result<Presence, Error> {
        let presence = self.shared.put_status(status, &options).await?;
        *self.shared.manual.lock().expect("manual lock") = Some((status, options));
        Ok(presence)
    }

    /// The person is active on this device (sent at most once per 10 s).
    pub fn activity(&self) {
        let mut last = self.last_activity.lock().expect("activity lock");
        if last.is_none_or(|at| at.elapsed() >= ACTIVITY_EVERY) {
            *last = Some(Instant::now());
            let _ = self.commands.send(Command::Activity);
        }
    }

    /// Watches `users`: a stream of their changes, starting with where each stands.
    pub fn watch<S: Into<String>>(&self, users: impl IntoIterator<Item = S>) -> Watch {
        let id = self.next_watch.fetch_add(1, Ordering::Relaxed);
        let users: Vec<String> = users.into_iter().map(Into::into).collect();
        let (tx, changes) = mpsc::unbounded_channel();
        let _ = self.commands.send(Command::Watch { id, users: users.clone(), tx });
        Watch { id, users, changes, commands: self.commands.clone(), shared: self.shared.clone() }
    }

    /// Joins `room` with this device and `meta` (the token's `rooms` claim must allow it): a
    /// stream of the room's changes, the first the room as it is. Joined again after each
    /// reconnect; left when the [`Room`] is dropped.
    pub fn join(&self, room: impl Into<String>, meta: serde_json::Value) -> Room {
        let name = room.into();
        let view = Arc::new(Mutex::new(RoomView::default()));
        let (tx, changes) = mpsc::unbounded_channel();
        let joined = Joined { meta: meta.clone(), view: view.clone(), tx };
        let _ = self.commands.send(Command::Join { room: name.clone(), meta, joined });
        Room { name, view, changes, commands: self.commands.clone() }
    }

    /// The connection's state now, and as it changes.
    pub fn state(&self) -> watch::Receiver<ConnectionState> {
        self.shared.state.subscribe()
    }

    /// State changes, stale and fresh, errors.
    pub fn events(&self) -> broadcast::Receiver<Event> {
        self.shared.events.subscribe()
    }

    /// Tries again now after the client stopped (a refused token: the provider may have a new one).
    pub fn connect(&self) {
        let _ = self.commands.send(Command::Connect);
    }

    /// Closes the connection (the session ends at once) and stops reconnecting.
    pub fn close(&self) {
        let _ = self.commands.send(Command::Close);
    }
}

/// A watch of some users: a [`Stream`] of their changes. Ends when the client closes; unwatched
/// when dropped.
pub struct Watch {
    id: u64,
    users: Vec<String>,
    changes: mpsc::UnboundedReceiver<Change>,
    commands: mpsc::UnboundedSender<Command>,
    shared: Arc<Shared>,
}

impl Watch {
    /// Where the watched users stand, as far as the client knows.
    pub fn view(&self) -> HashMap<String, Presence> {
        let view: std::sync::MutexGuard<'_, View> = self.shared.view.lock().expect("view lock");
        self.users.iter().filter_map(|u| view.get(u).map(|p| (u.clone(), p.clone()))).collect()
    }
}

impl Stream for Watch {
    type Item = Change;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Change>> {
        self.changes.poll_recv(cx)
    }
}

impl Drop for Watch {
    fn drop(&mut self) {
        let _ = self.commands.send(Command::Unwatch { id: self.id });
    }
}

/// A room this client joined: a [`Stream`] of its changes (the first, the room as it is).
/// Left when [`Room::leave`] is called or it is dropped.
pub struct Room {
    name: String,
    view: Arc<Mutex<RoomView>>,
    changes: mpsc::UnboundedReceiver<RoomChange>,
    commands: mpsc::UnboundedSender<Command>,
}

impl Room {
    /// The room's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Who is in it now.
    pub fn members(&self) -> Members {
        self.view.lock().expect("room lock").members.clone()
    }

    /// Users in it now.
    pub fn member_count(&self) -> usize {
        self.view.lock().expect("room lock").count
    }

    /// Who is typing now.
    pub fn typing_users(&self) -> Vec<String> {
        self.view.lock().expect("room lock").typing.clone()
    }

    /// This device's meta in the room (kept for joining again after a reconnect).
    pub fn update(&self, meta: serde_json::Value) {
        let _ = self.commands.send(Command::Meta { room: self.name.clone(), meta });
    }

    /// This person is typing (send it every few seconds while they are); `false` stops.
    pub fn typing(&self, active: bool) {
        let _ = self.commands.send(Command::Typing { room: self.name.clone(), active });
    }

    /// Leaves the room.
    pub fn leave(self) {}
}

impl Stream for Room {
    type Item = RoomChange;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<RoomChange>> {
        self.changes.poll_recv(cx)
    }
}

impl Drop for Room {
    fn drop(&mut self) {
        let _ = self.commands.send(Command::Leave { room: self.name.clone() });
    }
}
