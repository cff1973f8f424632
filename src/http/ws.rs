//! `GET /api/v2/ws`: live presence over a WebSocket, JSON text messages with a `type`.
//!
//! Client to server: `subscribe` (`users`: replaces the watch list), `unsubscribe` (`users`),
//! `ping`. Server to client: `snapshot` after each subscribe, `changes`, `stale`, `fresh`,
//! `pong`, and `error` for a message it cannot take (the connection stays open). Protocol pings
//! go out every `stream.keep_alive`; a peer that answers none within two is dropped, and so is
//! one that leaves changes unread for `stream.write_timeout` (close code 1008).

use std::{net::IpAddr, time::Duration};

use axum::{
    extract::{
        ConnectInfo, State,
        ws::{
            CloseFrame, Message, Utf8Bytes, WebSocket, WebSocketUpgrade, rejection::WebSocketUpgradeRejection,
        },
    },
    http::HeaderMap,
    response::Response,
};
use serde::Deserialize;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::{ApiError, AppState, limits::ReadLimited, listener::ClientAddr, live, presence::parse_user_list};
use crate::live::{Dropped, LinkEvent, StreamKind, Subscription};

/// The largest message a client may send: a subscribe with 1000 ids of 128 characters.
const MAX_MESSAGE: usize = 144 * 1024;
/// Close codes (RFC 6455): policy violation (too slow), going away (no pong).
const CLOSE_POLICY: u16 = 1008;
const CLOSE_GOING_AWAY: u16 = 1001;

/// Follow the presence of users over a WebSocket.
#[utoipa::path(
    get,
    path = "/api/v2/ws",
    responses(
        (status = 101, description = "Switching to the WebSocket protocol: JSON text messages (`subscribe`, `unsubscribe`, `ping`; `snapshot`, `changes`, `stale`, `fresh`, `pong`, `error`)"),
        (status = 400, description = "Not a WebSocket upgrade", body = super::ErrorResponse),
        (status = 403, description = "A browser page from an origin not in `service.cors.allowed_origins`", body = super::ErrorResponse),
        (status = 429, description = "Over the per-IP read limit, or too many streams from this address", body = super::ErrorResponse),
        (status = 503, description = "The node has `stream.max_connections` streams open", body = super::ErrorResponse),
    ),
    tag = "live"
)]
pub(super) async fn upgrade(
    State(state): State<AppState>,
    limited: ReadLimited,
    ConnectInfo(ClientAddr(peer)): ConnectInfo<ClientAddr>,
    headers: HeaderMap,
    upgrade: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
) -> Result<Response, ApiError> {
    if !live::origin_allowed(&state, &headers) {
        return Err(ApiError::OriginRefused);
    }
    let upgrade = upgrade.map_err(|e| ApiError::BadRequest(format!("expected a WebSocket upgrade: {e}")))?;
    let ip: IpAddr = state.limits.client_ip(&headers, peer.ip());
    // The upgraded connection leaves the HTTP server's loop: this session closes it itself.
    let closer = CancellationToken::new();
    let subscription = live::open(&state, StreamKind::WebSocket, ip, closer)?;
    Ok(upgrade
        .max_message_size(MAX_MESSAGE)
        .max_frame_size(MAX_MESSAGE)
        .on_upgrade(move |socket| Session { state, limited, subscription, socket }.run()))
}

/// What a client may send.
#[derive(Deserialize)]
#[serde(tag = "type", rename_all = "lowercase", deny_unknown_fields)]
enum Request {
    Subscribe { users: Vec<String> },
    Unsubscribe { users: Vec<String> },
    Ping,
}

struct Session {
    state: AppState,
    limited: ReadLimited,
    subscription: Subscription,
    socket: WebSocket,
}

/// Why a session ends.
enum End {
    /// The client closed, or the connection broke.
    Gone,
    Dropped(Dropped),
}

impl Session {
    async fn run(mut self) {
        let settings = self.state.directory.hub.settings().clone();
        let subscriber = self.subscription.subscriber().clone();
        let mut pings = tokio::time::interval_at(Instant::now() + settings.keep_alive, settings.keep_alive);
        let mut heard = Instant::now();
        let mut last_batch: Option<Instant> = None;
        let end = loop {
            tokio::select! {
                incoming = self.socket.recv() => match incoming {
                    Some(Ok(message)) => {
                        heard = Instant::now();
                        if self.answer(message, settings.write_timeout).await.is_err() {
                            break End::Gone;
                        }
                    }
                    _ => break End::Gone,
                },
                () = subscriber.ready() => {
                    if let Some(reason) = subscriber.dropped() {
                        break End::Dropped(reason);
                    }
                    if let Some(last) = last_batch {
                        tokio::time::sleep_until(last + settings.batch_window).await;
                    }
                    let batch = subscriber.take();
                    if batch.is_empty() {
                        continue;
                    }
                    last_batch = Some(Instant::now());
                    if self.send_batch(&batch, settings.write_timeout).await.is_err() {
                        self.state.directory.hub.drop_for(&subscriber, Dropped::Slow);
                        break End::Dropped(Dropped::Slow);
                    }
                }
                _ = pings.tick() => {
                    if heard.elapsed() > settings.keep_alive * 2 {
                        self.state.directory.hub.drop_for(&subscriber, Dropped::Dead);
                        break End::Dropped(Dropped::Dead);
                    }
                    if self.send(Message::Ping(Default::default()), settings.write_timeout).await.is_err() {
                        self.state.directory.hub.drop_for(&subscriber, Dropped::Slow);
                        break End::Dropped(Dropped::Slow);
                    }
                }
            }
        };
        if let End::Dropped(reason) = end {
            let code = if reason == Dropped::Slow { CLOSE_POLICY } else { CLOSE_GOING_AWAY };
            let reason = match reason {
                Dropped::Slow => "too slow: changes were left unread",
                Dropped::Dead => "no answer to pings",
                Dropped::Shutdown => "the node is shutting down",
            };
            let frame = CloseFrame { code, reason: Utf8Bytes::from_static(reason) };
            // Best effort: a client that reads nothing will not read this either.
            let _ = self.send(Message::Close(Some(frame)), Duration::from_secs(1)).await;
        }
    }

    /// Sends `message`, or fails if the client does not take it within `limit`.
    async fn send(&mut self, message: Message, limit: Duration) -> Result<(), ()> {
        match tokio::time::timeout(limit, self.socket.send(message)).await {
            Ok(Ok(())) => Ok(()),
            _ => Err(()),
        }
    }

    async fn send_text(&mut self, text: String, limit: Duration) -> Result<(), ()> {
        self.send(Message::Text(text.into()), limit).await
    }

    async fn send_batch(&mut self, batch: &crate::live::Batch, limit: Duration) -> Result<(), ()> {
        if batch.link == Some(LinkEvent::Stale) {
            self.send_text(r#"{"type":"stale"}"#.into(), limit).await?;
        }
        if !batch.changes.is_empty() {
            let text = format!(r#"{{"type":"changes","changes":{}}}"#, live::changes_json(batch));
            self.send_text(text, limit).await?;
            self.subscription.hub().delivered(batch.changes.len());
        }
        if batch.link == Some(LinkEvent::Fresh) {
            self.send_text(r#"{"type":"fresh"}"#.into(), limit).await?;
        }
        Ok(())
    }

    /// Handles one message from the client. Only a failure to write ends the session.
    async fn answer(&mut self, message: Message, limit: Duration) -> Result<(), ()> {
        let text = match message {
            Message::Text(text) => text,
            // Pongs, pings (answered by the protocol layer) and close frames need nothing here.
            Message::Ping(_) | Message::Pong(_) | Message::Close(_) => return Ok(()),
            Message::Binary(_) => return self.error("messages are JSON text", limit).await,
        };
        let request = match serde_json::from_str::<Request>(text.as_str()) {
            Ok(request) => request,
            Err(e) => {
                let why = format!("invalid message: {e}");
                return self.error(&why, limit).await;
            }
        };
        match request {
            Request::Ping => self.send_text(r#"{"type":"pong"}"#.into(), limit).await,
            Request::Unsubscribe { users } => {
                self.subscription.unwatch(&users);
                Ok(())
            }
            Request::Subscribe { users } => {
                let users = match parse_user_list(users.iter().map(String::as_str)) {
                    Ok(users) => users,
                    Err(e) => return self.error(&e.to_string(), limit).await,
                };
                let start = live::watch(&self.state, &self.limited, &self.subscription, users, None).await;
                match start {
                    Ok(start) => {
                        let snapshot = start.snapshot.unwrap_or_else(|| "{}".into());
                        self.send_text(format!(r#"{{"type":"snapshot","data":{snapshot}}}"#), limit).await
                    }
                    Err(e) => self.error(&e.to_string(), limit).await,
                }
            }
        }
    }

    async fn error(&mut self, why: &str, limit: Duration) -> Result<(), ()> {
        let text = serde_json::json!({"type": "error", "error": why}).to_string();
        self.send_text(text, limit).await
    }
}
