//! `GET /api/v2/ws`: live presence over a WebSocket, JSON text messages with a `type`, and the
//! connection that holds a device's session.
//!
//! Client to server: `hello` (`token`, `device`, `kind`: starts a session), `activity`,
//! `subscribe` (`users`: replaces the watch list), `unsubscribe` (`users`), `ping`; and for rooms
//! ([`rooms`]) `join`, `leave`, `meta`, `typing`, `watch_room`, `unwatch_room`. Server to
//! client: `welcome` after a hello (or at once, when the upgrade request carried the token in
//! `Authorization` and `device` and `kind` in its query), `snapshot` after each subscribe,
//! `changes`, `stale`, `fresh`, `pong`, `joined`, `left`, `room_snapshot`, `room`, and `error`
//! for a message it cannot take (the connection
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

mod budget;
mod connection;
mod membership;
mod message;
mod rooms;

use std::net::IpAddr;

use axum::{
    extract::{Request, State},
    http::{HeaderMap, HeaderValue, StatusCode, header},
    response::{IntoResponse, Response},
};
use hyper_util::rt::TokioIo;
use serde::Deserialize;
use tokio_tungstenite::{
    WebSocketStream,
    tungstenite::{
        handshake::derive_accept_key,
        protocol::{Role, WebSocketConfig},
    },
};
use tokio_util::sync::CancellationToken;

use connection::Connection;

use super::{ApiError, AppState, auth::AuthUser, limits::ReadLimited, listener::Peer, subscribe};
use crate::{
    live::StreamKind,
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
/// The session's user was erased (HTTP's 410 Gone): the session is over.
const CLOSE_ERASED: u16 = 4410;
/// Messages longer than this go out in frames of this size.
const FRAGMENT: usize = 4 * 1024;

type Socket = WebSocketStream<TokioIo<hyper::upgrade::Upgraded>>;

/// Follow the presence of users over a WebSocket.
#[utoipa::path(
    get,
    path = "/api/v2/ws",
    params(
        ("Connection" = String, Header, description = "A list with `upgrade` in it"),
        ("Upgrade" = String, Header, description = "A list with `websocket` in it"),
        ("Sec-WebSocket-Version" = String, Header, description = "`13`"),
        ("Sec-WebSocket-Key" = String, Header, description = "16 random bytes, in base64 (RFC 6455)"),
        ("device" = Option<String>, Query, description = "With `Authorization`: the device whose session this connection holds (default `default`)"),
        ("kind" = Option<String>, Query, description = "With `Authorization`: `web`, `mobile`, `desktop` or `other` (the default)"),
    ),
    responses(
        (status = 101, description = "Switching to the WebSocket protocol: JSON text messages (`subscribe`, `unsubscribe`, `ping`; `snapshot`, `changes`, `stale`, `fresh`, `pong`, `error`)"),
        (status = 400, description = "Not a WebSocket upgrade; or, with `Authorization`, an invalid `device` or `kind` in the query", body = super::ErrorResponse),
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
    peer: Peer,
    mut request: Request,
) -> Result<Response, ApiError> {
    let headers = request.headers();
    if !subscribe::origin_allowed(&state, headers) {
        return Err(ApiError::OriginRefused);
    }
    let accept = handshake(headers)?;
    let ip: IpAddr = state.limits.client_ip(headers, peer.addr.ip());
    let wants_session = headers.contains_key(header::AUTHORIZATION);
    // The upgraded connection leaves the HTTP server's loop: it closes itself.
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
        Connection::new(state, limited, subscription, socket, device).run().await;
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
            .any(|v| v.split(',').any(|t| t.trim_matches([' ', '\t']).eq_ignore_ascii_case(token)))
    };
    let refuse = |why: &str| ApiError::BadRequest(format!("expected a WebSocket upgrade: {why}"));
    if !has(header::CONNECTION, "upgrade") || !has(header::UPGRADE, "websocket") {
        return Err(refuse("`Connection: upgrade` and `Upgrade: websocket` are required"));
    }
    if headers.get(header::SEC_WEBSOCKET_VERSION).is_none_or(|v| v != "13") {
        return Err(refuse("`Sec-WebSocket-Version: 13` is required"));
    }
    let key = headers.get(header::SEC_WEBSOCKET_KEY).map(|k| k.as_bytes()).unwrap_or_default();
    if !is_key(key) {
        return Err(refuse("`Sec-WebSocket-Key` must be 16 bytes in base64"));
    }
    Ok(derive_accept_key(key))
}

/// 16 bytes in base64: 21 characters, one whose low bits are zero, then `==`.
fn is_key(key: &[u8]) -> bool {
    let base64 = |c: &u8| c.is_ascii_alphanumeric() || *c == b'+' || *c == b'/';
    key.len() == 24 && key[..21].iter().all(base64) && b"AQgw".contains(&key[21]) && &key[22..] == b"=="
}

/// The device of a session asked for on the upgrade without one in the query.
const DEFAULT_DEVICE: &str = "default";
/// Its kind.
const DEFAULT_KIND: &str = "other";

/// A session asked for on the upgrade request: the token in `Authorization`, `device` and
/// `kind` in the query (by default [`DEFAULT_DEVICE`] of kind [`DEFAULT_KIND`]); with the token's
/// `rooms` claim.
async fn session_from_header(
    state: &AppState,
    headers: &HeaderMap,
    uri: &axum::http::Uri,
) -> Result<(Session, Vec<String>), ApiError> {
    #[derive(Deserialize)]
    struct Wanted {
        device: Option<String>,
        kind: Option<String>,
    }
    let AuthUser(subject, grant) = AuthUser::from_headers(headers, state)?;
    let user = UserId::parse(&subject).map_err(|_| ApiError::SubjectNotAUser)?;
    let query = axum::extract::Query::<Wanted>::try_from_uri(uri).map(|q| q.0);
    let Wanted { device, kind } = query.map_err(|e| ApiError::BadRequest(e.body_text()))?;
    let device = device.unwrap_or_else(|| DEFAULT_DEVICE.into());
    let kind = kind.unwrap_or_else(|| DEFAULT_KIND.into());
    let session = state.sessions.connect(&user, &device, &kind).await.map_err(|e| match e {
        HelloError::TooManyDevices(_) => ApiError::Conflict(e.to_string()),
        _ => ApiError::BadRequest(e.to_string()),
    })?;
    Ok((session, grant))
}
