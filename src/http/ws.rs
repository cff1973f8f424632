//! `GET /api/v2/ws`: live presence over a WebSocket, JSON text messages with a `type`, and the
//! connection that holds a device's session.
//!
//! Client to server: `hello` (`token`, `device`, `kind`: starts a session), `activity`,
//! `subscribe` (`users`: replaces the watch list), `unsubscribe` (`users`), `ping`. Server to
//! client: `welcome` after a hello (or at once, when the upgrade request carried the token in
//! `Authorization` and `device` and `kind` in its query), `snapshot` after each subscribe,
//! `changes`, `stale`, `fresh`, `pong`, and `error` for a message it cannot take (the connection
//! stays open, except after a refused token: close code 4401, or 4403). A session ends at once
//! when the client closes with a close frame, and after `sessions.grace` when the connection
//! just breaks (see [`crate::sessions`]). Protocol pings
//! go out every `stream.keep_alive`; a peer that answers none within two is dropped, and so is
//! one that leaves changes unread for `stream.write_timeout` (close code 1008).
//!
//! The upgrade is done here on hyper's and tokio-tungstenite's own parts rather than axum's
//! wrapper, for the memory of an idle connection: messages larger than [`FRAGMENT`] go out as
//! several frames, so that the connection's write buffer (kept at its largest size for the
//! connection's life) stays small after a large snapshot.

use std::{net::IpAddr, time::Duration};

use axum::{
    extract::{ConnectInfo, Request, State},
    http::{HeaderMap, HeaderValue, StatusCode, header},
    response::{IntoResponse, Response},
};
use futures::{SinkExt, StreamExt};
use hyper_util::rt::TokioIo;
use serde::Deserialize;
use tokio::time::Instant;
use tokio_tungstenite::{
    WebSocketStream,
    tungstenite::{
        Message,
        handshake::derive_accept_key,
        protocol::{
            CloseFrame, Role, WebSocketConfig,
            frame::{
                Frame,
                coding::{CloseCode, Data, OpCode},
            },
        },
    },
};
use tokio_util::sync::CancellationToken;

use super::{
    ApiError, AppState, auth::AuthUser, limits::ReadLimited, listener::ClientAddr, presence::parse_user_list,
    subscribe,
};
use crate::{
    live::{Dropped, LinkEvent, Pacer, StreamKind, Subscription},
    model::UserId,
    sessions::{HelloError, Session},
};

/// The largest message a client may send: a subscribe with 1000 ids of 128 characters.
const MAX_MESSAGE: usize = 144 * 1024;
/// The read buffer a connection starts with (tungstenite's default, 128 KiB allocated up front,
/// would cost 1.3 GB for 10,000 idle clients); it grows for a larger message.
const READ_BUFFER: usize = 1024;
/// Close codes (RFC 6455): policy violation (too slow), going away (no pong, shutdown).
const CLOSE_POLICY: u16 = 1008;
const CLOSE_GOING_AWAY: u16 = 1001;
/// Close codes of the application's range (4000-4999), after a refused `hello`: 401 and 403.
const CLOSE_UNAUTHORIZED: u16 = 4401;
const CLOSE_FORBIDDEN: u16 = 4403;
/// Messages longer than this go out in frames of this size.
const FRAGMENT: usize = 4 * 1024;

type Socket = WebSocketStream<TokioIo<hyper::upgrade::Upgraded>>;

/// Follow the presence of users over a WebSocket.
#[utoipa::path(
    get,
    path = "/api/v2/ws",
    responses(
        (status = 101, description = "Switching to the WebSocket protocol: JSON text messages (`subscribe`, `unsubscribe`, `ping`; `snapshot`, `changes`, `stale`, `fresh`, `pong`, `error`)"),
        (status = 400, description = "Not a WebSocket upgrade; or, with `Authorization`, no valid `device` and `kind` in the query", body = super::ErrorResponse),
        (status = 401, description = "An `Authorization` header whose token is refused", body = super::ErrorResponse),
        (status = 403, description = "A browser page from an origin not in `service.cors.allowed_origins`, or a token whose subject is not a user id", body = super::ErrorResponse),
        (status = 409, description = "The user has `sessions.max_devices` devices connected already", body = super::ErrorResponse),
        (status = 429, description = "Over the per-IP read limit, or too many streams from this address", body = super::ErrorResponse),
        (status = 503, description = "The node has `stream.max_connections` streams open", body = super::ErrorResponse),
    ),
    tag = "live"
)]
pub(super) async fn upgrade(
    State(state): State<AppState>,
    limited: ReadLimited,
    ConnectInfo(ClientAddr(peer)): ConnectInfo<ClientAddr>,
    mut request: Request,
) -> Result<Response, ApiError> {
    let headers = request.headers();
    if !subscribe::origin_allowed(&state, headers) {
        return Err(ApiError::OriginRefused);
    }
    let accept = handshake(headers)?;
    let ip: IpAddr = state.limits.client_ip(headers, peer.ip());
    let wants_session = headers.contains_key(header::AUTHORIZATION);
    // The upgraded connection leaves the HTTP server's loop: this session closes it itself.
    let subscription = subscribe::open(&state, StreamKind::WebSocket, ip, CancellationToken::new())?;
    // Last: a session that starts is one the connection will hold.
    let device = match wants_session {
        true => Some(session_from_header(&state, request.headers(), request.uri()).await?),
        false => None,
    };
    let upgrading = hyper::upgrade::on(&mut request);
    tokio::spawn(async move {
        let Ok(upgraded) = upgrading.await else { return };
        let config = WebSocketConfig::default()
            .read_buffer_size(READ_BUFFER)
            .write_buffer_size(0)
            .max_message_size(Some(MAX_MESSAGE))
            .max_frame_size(Some(MAX_MESSAGE));
        let socket =
            WebSocketStream::from_raw_socket(TokioIo::new(upgraded), Role::Server, Some(config)).await;
        Connection { state, limited, subscription, socket, device, closing: false, refused: None }
            .run()
            .await;
    });
    let mut response = StatusCode::SWITCHING_PROTOCOLS.into_response();
    let headers = response.headers_mut();
    headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
    headers.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
    headers.insert(
        header::SEC_WEBSOCKET_ACCEPT,
        HeaderValue::from_str(&accept).map_err(|_| ApiError::Internal)?,
    );
    Ok(response)
}

/// Checks the upgrade request (RFC 6455, 4.2.1) and returns the `Sec-WebSocket-Accept` value.
fn handshake(headers: &HeaderMap) -> Result<String, ApiError> {
    let has = |name: header::HeaderName, token: &str| {
        headers
            .get_all(name)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .any(|v| v.split(',').any(|t| t.trim().eq_ignore_ascii_case(token)))
    };
    let refuse = |why: &str| ApiError::BadRequest(format!("expected a WebSocket upgrade: {why}"));
    if !has(header::CONNECTION, "upgrade") || !has(header::UPGRADE, "websocket") {
        return Err(refuse("`Connection: upgrade` and `Upgrade: websocket` are required"));
    }
    if headers.get(header::SEC_WEBSOCKET_VERSION).is_none_or(|v| v != "13") {
        return Err(refuse("`Sec-WebSocket-Version: 13` is required"));
    }
    let key =
        headers.get(header::SEC_WEBSOCKET_KEY).ok_or_else(|| refuse("`Sec-WebSocket-Key` is missing"))?;
    Ok(derive_accept_key(key.as_bytes()))
}

/// A session asked for on the upgrade request: the token in `Authorization`, `device` and
/// `kind` in the query.
async fn session_from_header(
    state: &AppState,
    headers: &HeaderMap,
    uri: &axum::http::Uri,
) -> Result<Session, ApiError> {
    #[derive(Deserialize)]
    struct Wanted {
        device: Option<String>,
        kind: Option<String>,
    }
    let AuthUser(subject) = AuthUser::from_headers(headers, state)?;
    let user = UserId::parse(&subject).map_err(|_| ApiError::SubjectNotAUser)?;
    let query = axum::extract::Query::<Wanted>::try_from_uri(uri).ok();
    let Some((device, kind)) = query.and_then(|q| q.0.device.zip(q.0.kind)) else {
        let why = "a session needs `device` and `kind` in the query (or a `hello` message)";
        return Err(ApiError::BadRequest(why.into()));
    };
    state.sessions.connect(&user, &device, &kind).await.map_err(|e| match e {
        HelloError::TooManyDevices(_) => ApiError::Conflict(e.to_string()),
        _ => ApiError::BadRequest(e.to_string()),
    })
}

/// What a client may send.
#[derive(Deserialize)]
#[serde(tag = "type", rename_all = "lowercase", deny_unknown_fields)]
enum ClientMessage {
    Hello { token: String, device: String, kind: String },
    Activity,
    Subscribe { users: Vec<String> },
    Unsubscribe { users: Vec<String> },
    Ping,
}

struct Connection {
    state: AppState,
    limited: ReadLimited,
    subscription: Subscription,
    socket: Socket,
    /// The device's session this connection holds, once it said hello.
    device: Option<Session>,
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
}

impl Connection {
    async fn run(mut self) {
        let settings = self.state.hub.settings().clone();
        let subscriber = self.subscription.subscriber().clone();
        let mut pings = tokio::time::interval_at(Instant::now() + settings.keep_alive, settings.keep_alive);
        let mut heard = Instant::now();
        let mut pacer = Pacer::new(settings.batch_window);
        if self.device.is_some() && self.welcome(settings.write_timeout).await.is_err() {
            return;
        }
        let end = loop {
            tokio::select! {
                incoming = self.socket.next() => match incoming {
                    Some(Ok(message)) => {
                        heard = Instant::now();
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
            End::Dropped(Dropped::Slow) => (CLOSE_POLICY, "too slow: changes were left unread"),
            End::Dropped(Dropped::Dead) => (CLOSE_GOING_AWAY, "no answer to pings"),
            End::Dropped(Dropped::Shutdown) => (CLOSE_GOING_AWAY, "the node is shutting down"),
        };
        let frame = CloseFrame { code: CloseCode::from(code), reason: reason.into() };
        // Best effort: a client that reads nothing will not read this either.
        let _ = self.send(Message::Close(Some(frame)), Duration::from_secs(1)).await;
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
            Ok(AuthUser(subject)) => match UserId::parse(&subject) {
                Ok(user) => match self.state.sessions.connect(&user, device, kind).await {
                    Ok(session) => {
                        self.device = Some(session);
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
    async fn send_text(&mut self, text: String, limit: Duration) -> Result<(), ()> {
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
        if batch.link == Some(LinkEvent::Fresh) {
            self.send_text(r#"{"type":"fresh"}"#.into(), limit).await?;
        }
        Ok(())
    }

    /// Handles one message from the client. Only a failure to write ends the session.
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
                    subscribe::follow(&self.state, &self.limited, &self.subscription, users, None).await;
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
