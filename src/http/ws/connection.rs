//! One WebSocket connection after the upgrade: its messages in, its subscription's changes
//! and the link's stale and fresh out, protocol pings, and the device session it holds.

use std::time::Duration;

use futures::{SinkExt, StreamExt};
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::{
    Message,
    protocol::{
        CloseFrame,
        frame::{
            Frame,
            coding::{CloseCode, Data, OpCode},
        },
    },
};

use super::{
    CLOSE_ERASED, CLOSE_FORBIDDEN, CLOSE_GOING_AWAY, CLOSE_POLICY, CLOSE_UNAUTHORIZED, FRAGMENT, Socket,
    budget::{Budget, Verdict},
    membership::RoomSide,
    message::ClientMessage,
};
use crate::{
    http::{ApiError, AppState, auth::AuthUser, limits::ReadLimited, presence::parse_user_list, subscribe},
    live::{Dropped, LinkEvent, Pacer, Subscription},
    model::UserId,
    sessions::Session,
};

pub(super) struct Connection {
    pub(super) state: AppState,
    pub(super) limited: ReadLimited,
    pub(super) subscription: Subscription,
    socket: Socket,
    /// The device's session this connection holds, once it said hello.
    pub(super) device: Option<Session>,
    /// The rooms it joined and watches.
    pub(super) rooms: RoomSide,
    /// The client sent a close frame: its session ends at once, not after the grace.
    closing: bool,
    /// A `hello` whose token was refused: the connection is closed with this code.
    refused: Option<u16>,
}

/// Why a connection ends.
enum End {
    /// The client closed, or the connection broke.
    Gone,
    Dropped(Dropped),
    /// A `hello` was refused.
    Refused(u16),
    /// The session's user was erased.
    Erased,
}

impl Connection {
    pub(super) fn new(
        state: AppState,
        limited: ReadLimited,
        subscription: Subscription,
        socket: Socket,
        device: Option<(Session, Vec<String>)>,
    ) -> Self {
        let mut rooms = RoomSide::new(state.rooms.clone(), subscription.subscriber().id);
        let device = device.map(|(session, grant)| {
            rooms.grant = Some(grant);
            session
        });
        Self { state, limited, subscription, socket, device, rooms, closing: false, refused: None }
    }

    pub(super) async fn run(mut self) {
        let settings = self.state.hub.settings().clone();
        let subscriber = self.subscription.subscriber().clone();
        let mut pings = tokio::time::interval_at(Instant::now() + settings.keep_alive, settings.keep_alive);
        let mut heard = Instant::now();
        let mut pacer = Pacer::new(settings.batch_window);
        let mut budget = Budget::new(&settings);
        if self.device.is_some() && self.welcome(settings.write_timeout).await.is_err() {
            return;
        }
        let end = loop {
            let erasure = self.device.as_ref().map(Session::erasure);
            let erased = async {
                match &erasure {
                    Some(token) => token.cancelled().await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                () = erased => break End::Erased,
                incoming = self.socket.next() => match incoming {
                    Some(Ok(message)) => {
                        heard = Instant::now();
                        // Pongs answer our pings and a close ends the connection: neither is charged.
                        let charged = !matches!(message, Message::Pong(_) | Message::Close(_));
                        match if charged { budget.spend() } else { Verdict::Take } {
                            Verdict::Take => {}
                            Verdict::Refuse => {
                                if self.error(&budget.refusal(), settings.write_timeout).await.is_err() {
                                    break End::Gone;
                                }
                                continue;
                            }
                            Verdict::Close => {
                                self.state.hub.drop_for(&subscriber, Dropped::Flooding);
                                break End::Dropped(Dropped::Flooding);
                            }
                        }
                        if self.answer(message, settings.write_timeout).await.is_err() {
                            break End::Gone;
                        }
                        if let Some(code) = self.refused {
                            break End::Refused(code);
                        }
                    }
                    _ => break End::Gone,
                },
                () = subscriber.ready() => {
                    if let Some(reason) = subscriber.dropped() {
                        break End::Dropped(reason);
                    }
                    if let Some(at) = pacer.wait_until(Instant::now()) {
                        tokio::time::sleep_until(at).await;
                    }
                    let batch = subscriber.take();
                    if batch.is_empty() {
                        continue;
                    }
                    pacer.sent(Instant::now());
                    if self.send_batch(&batch, settings.write_timeout).await.is_err() {
                        self.state.hub.drop_for(&subscriber, Dropped::Slow);
                        break End::Dropped(Dropped::Slow);
                    }
                }
                _ = pings.tick() => {
                    if heard.elapsed() > settings.keep_alive * 2 {
                        self.state.hub.drop_for(&subscriber, Dropped::Dead);
                        break End::Dropped(Dropped::Dead);
                    }
                    if self.send(Message::Ping(Default::default()), settings.write_timeout).await.is_err() {
                        self.state.hub.drop_for(&subscriber, Dropped::Slow);
                        break End::Dropped(Dropped::Slow);
                    }
                }
            }
        };
        // A close frame ends the device's session at once; anything else only after the grace.
        if let Some(device) = self.device.take()
            && self.closing
        {
            device.close();
        }
        let (code, reason) = match end {
            End::Gone => return,
            End::Refused(code) => (code, "token refused"),
            End::Erased => (CLOSE_ERASED, "erased: this user's presence was erased, and the session with it"),
            End::Dropped(Dropped::Slow) => (CLOSE_POLICY, "too slow: changes were left unread"),
            End::Dropped(Dropped::Dead) => (CLOSE_GOING_AWAY, "no answer to pings"),
            End::Dropped(Dropped::Shutdown) => (CLOSE_GOING_AWAY, "the node is shutting down"),
            End::Dropped(Dropped::Flooding) => (CLOSE_POLICY, "too many messages"),
        };
        let frame = CloseFrame { code: CloseCode::from(code), reason: reason.into() };
        // Best effort: a client that reads nothing will not read this either.
        if self.send(Message::Close(Some(frame)), Duration::from_secs(1)).await.is_ok() {
            // The closing handshake: what the client sent meanwhile is read and dropped until its
            // close, for a second at most, so that the close frame is not lost to a reset.
            let drain = async {
                while let Some(Ok(message)) = self.socket.next().await {
                    if message.is_close() {
                        break;
                    }
                }
            };
            let _ = tokio::time::timeout(Duration::from_secs(1), drain).await;
        }
    }

    async fn welcome(&mut self, limit: Duration) -> Result<(), ()> {
        let Some(device) = &self.device else { return Ok(()) };
        let text =
            serde_json::json!({"type": "welcome", "user_id": device.user(), "device": device.device()});
        self.send_text(text.to_string(), limit).await
    }

    /// A `hello`: the token as a write's (401, 403), then the device.
    async fn hello(&mut self, token: &str, device: &str, kind: &str, limit: Duration) -> Result<(), ()> {
        if self.device.is_some() {
            return self.error("this connection holds a session already", limit).await;
        }
        let refused = match AuthUser::from_token(token, &self.state) {
            Err(e) => {
                tracing::info!(error = ?e, "hello refused: token");
                Some((CLOSE_UNAUTHORIZED, e))
            }
            Ok(AuthUser(subject, grant)) => match UserId::parse(&subject) {
                Ok(user) => match self.state.sessions.connect(&user, device, kind).await {
                    Ok(session) => {
                        self.device = Some(session);
                        self.rooms.grant = Some(grant);
                        return self.welcome(limit).await;
                    }
                    Err(e) => return self.error(&e.to_string(), limit).await,
                },
                Err(_) => Some((CLOSE_FORBIDDEN, ApiError::SubjectNotAUser)),
            },
        };
        if let Some((code, e)) = refused {
            let status = e.status().as_u16();
            let text = serde_json::json!({"type": "error", "status": status, "error": e.to_string()});
            self.send_text(text.to_string(), limit).await?;
            self.refused = Some(code);
        }
        Ok(())
    }

    /// Sends `message`, or fails if the client does not take it within `limit`.
    async fn send(&mut self, message: Message, limit: Duration) -> Result<(), ()> {
        match tokio::time::timeout(limit, self.socket.send(message)).await {
            Ok(Ok(())) => Ok(()),
            _ => Err(()),
        }
    }

    /// Sends `text` as one message: in one frame, or in frames of [`FRAGMENT`] bytes.
    pub(super) async fn send_text(&mut self, text: String, limit: Duration) -> Result<(), ()> {
        if text.len() <= FRAGMENT {
            return self.send(Message::text(text), limit).await;
        }
        let bytes = bytes::Bytes::from(text);
        let chunks = bytes.len().div_ceil(FRAGMENT);
        for i in 0..chunks {
            let chunk = bytes.slice(i * FRAGMENT..((i + 1) * FRAGMENT).min(bytes.len()));
            let opcode = OpCode::Data(if i == 0 { Data::Text } else { Data::Continue });
            self.send(Message::Frame(Frame::message(chunk, opcode, i + 1 == chunks)), limit).await?;
        }
        Ok(())
    }

    async fn send_batch(&mut self, batch: &crate::live::Batch, limit: Duration) -> Result<(), ()> {
        if batch.link == Some(LinkEvent::Stale) {
            self.send_text(r#"{"type":"stale"}"#.into(), limit).await?;
        }
        if !batch.changes.is_empty() {
            let text = format!(r#"{{"type":"changes","changes":{}}}"#, subscribe::changes_json(batch));
            self.send_text(text, limit).await?;
            self.subscription.hub().delivered(batch.changes.len());
        }
        for message in &batch.rooms {
            self.send_text(message.to_string(), limit).await?;
        }
        if batch.link == Some(LinkEvent::Fresh) {
            self.send_text(r#"{"type":"fresh"}"#.into(), limit).await?;
        }
        Ok(())
    }

    /// Handles one message from the client. Only a failure to write ends the connection.
    async fn answer(&mut self, message: Message, limit: Duration) -> Result<(), ()> {
        let text = match message {
            Message::Text(text) => text,
            Message::Close(_) => {
                self.closing = true;
                return Ok(());
            }
            // Pongs, pings (answered by the protocol layer) need nothing here.
            Message::Ping(_) | Message::Pong(_) | Message::Frame(_) => return Ok(()),
            Message::Binary(_) => return self.error("messages are JSON text", limit).await,
        };
        let request = match serde_json::from_str::<ClientMessage>(text.as_str()) {
            Ok(request) => request,
            Err(e) => {
                let why = format!("invalid message: {e}");
                return self.error(&why, limit).await;
            }
        };
        match request {
            ClientMessage::Hello { token, device, kind } => self.hello(&token, &device, &kind, limit).await,
            ClientMessage::Activity => match &self.device {
                Some(device) => {
                    device.activity();
                    Ok(())
                }
                None => self.error("say hello first: activity belongs to a session", limit).await,
            },
            ClientMessage::Ping => self.send_text(r#"{"type":"pong"}"#.into(), limit).await,
            ClientMessage::Unsubscribe { users } => {
                self.subscription.unfollow(&users);
                Ok(())
            }
            ClientMessage::Subscribe { users } => {
                let users = match parse_user_list(users.iter().map(String::as_str)) {
                    Ok(users) => users,
                    Err(e) => return self.error(&e.to_string(), limit).await,
                };
                let start =
                    subscribe::follow(&self.state, &self.limited, &self.subscription, users, 1, None).await;
                match start {
                    Ok(start) => {
                        let (snapshot, revisions) =
                            (start.snapshot.unwrap_or_else(|| "{}".into()), start.revisions);
                        let text =
                            format!(r#"{{"type":"snapshot","data":{snapshot},"revisions":{revisions}}}"#);
                        self.send_text(text, limit).await
                    }
                    Err(e) => self.error(&e.to_string(), limit).await,
                }
            }
            room => self.room(room, limit).await,
        }
    }

    async fn error(&mut self, why: &str, limit: Duration) -> Result<(), ()> {
        let text = serde_json::json!({"type": "error", "error": why}).to_string();
        self.send_text(text, limit).await
    }
}
