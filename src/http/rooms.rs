//! The rooms over HTTP (docs/rooms.md): `GET /api/v2/rooms/{room}` (members and counts),
//! `GET /api/v2/rooms?rooms=a,b` (counts only, for badges) and `GET /api/v2/rooms/{room}/stream`
//! (Server-Sent Events: `snapshot`, then `room` changes, resumable with `Last-Event-ID`).
//! A room is readable by anyone when it matches `rooms.public`, else with a bearer token whose
//! `rooms` claim matches it (or any valid token with `rooms.open`); refused: 403.

use std::collections::VecDeque;

use axum::{
    Router,
    extract::{FromRequestParts, Path, State},
    http::{HeaderMap, header, request::Parts},
    response::{IntoResponse, Response, sse::Event},
    routing::get,
};
use serde::Deserialize;
use utoipa::IntoParams;

use super::{
    ApiError, AppState, auth::AuthUser, extract::ApiQuery, limits::ReadLimited, listener::Peer, sse,
    subscribe,
};
use crate::{
    model::{RoomError, is_valid_room},
    rooms::{Access, Watching},
};

/// Rooms one counts read may name.
pub(crate) const MAX_ROOMS_PER_READ: usize = 1000;

pub(super) fn routes() -> Router<AppState> {
    Router::new()
        .route("/api/v2/rooms", get(counts))
        .route("/api/v2/rooms/{room}", get(read))
        .route("/api/v2/rooms/{room}/stream", get(stream))
}

/// Who reads a room: nobody in particular, or a valid bearer token's subject and `rooms` claim.
/// A token that is there and does not verify is refused (401).
pub(crate) struct RoomReader(Option<AuthUser>);

impl FromRequestParts<AppState> for RoomReader {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        if !parts.headers.contains_key(header::AUTHORIZATION) {
            return Ok(Self(None));
        }
        AuthUser::from_headers(&parts.headers, state).map(|user| Self(Some(user)))
    }
}

impl RoomReader {
    /// The reader's user id, if a token named one.
    fn viewer(&self) -> Option<&str> {
        self.0.as_ref().map(|AuthUser(subject, _)| subject.as_str())
    }

    /// 403 unless the reader may read `room`.
    fn check(&self, state: &AppState, room: &str) -> Result<(), ApiError> {
        let granted = self.0.as_ref().map(|AuthUser(_, rooms)| rooms.as_slice());
        match state.rooms.allows(room, granted, Access::Read) {
            true => Ok(()),
            false => Err(ApiError::RoomRefused(room.to_string())),
        }
    }
}

fn room_id(room: &str) -> Result<(), ApiError> {
    match is_valid_room(room) {
        true => Ok(()),
        false => Err(ApiError::BadRequest(RoomError::Room.to_string())),
    }
}

/// Who is in a room, on which devices, with what meta.
#[utoipa::path(
    get,
    path = "/api/v2/rooms/{room}",
    params(("room" = String, Path, description = "1 to 128 characters of A-Z a-z 0-9 _ -")),
    responses(
        (status = 200, description = "`{\"success\": true, \"data\": {\"room\", \"members\": {user_id: [{\"device\", \"kind\", \"meta\", \"joined_at\"}]}, \"count\", \"connections\", \"truncated\", \"typing\"}}`"),
        (status = 400, description = "An invalid room id", body = super::ErrorResponse),
        (status = 401, description = "An `Authorization` header whose token is refused", body = super::ErrorResponse),
        (status = 403, description = "Not a public room, and no token whose `rooms` claim matches it", body = super::ErrorResponse),
        (status = 429, description = "Over the per-IP read limit", body = super::ErrorResponse),
    ),
    tag = "rooms"
)]
pub(super) async fn read(
    State(state): State<AppState>,
    _: ReadLimited,
    Path(room): Path<String>,
    reader: RoomReader,
) -> Result<Response, ApiError> {
    room_id(&room)?;
    reader.check(&state, &room)?;
    let data = state.rooms.read(&room, reader.viewer());
    Ok(json(format!(r#"{{"success":true,"data":{data}}}"#)))
}

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub(crate) struct RoomsQuery {
    /// Comma-separated room ids, at most 1000.
    rooms: Option<String>,
}

/// How many users (and devices) are in each of several rooms.
#[utoipa::path(
    get,
    path = "/api/v2/rooms",
    params(RoomsQuery),
    responses(
        (status = 200, description = "`{\"success\": true, \"data\": {room: {\"count\", \"connections\"}}}`"),
        (status = 400, description = "Missing, empty or oversize list, or an invalid room id", body = super::ErrorResponse),
        (status = 401, description = "An `Authorization` header whose token is refused", body = super::ErrorResponse),
        (status = 403, description = "A room named that the caller may not read", body = super::ErrorResponse),
        (status = 429, description = "Over the per-IP read limit", body = super::ErrorResponse),
    ),
    tag = "rooms"
)]
pub(super) async fn counts(
    State(state): State<AppState>,
    _: ReadLimited,
    reader: RoomReader,
    ApiQuery(query): ApiQuery<RoomsQuery>,
) -> Result<Response, ApiError> {
    let raw =
        query.rooms.ok_or_else(|| ApiError::BadRequest("query parameter `rooms` is required".into()))?;
    let mut rooms: Vec<String> = raw.split(',').filter(|s| !s.is_empty()).map(str::to_string).collect();
    rooms.sort_unstable();
    rooms.dedup();
    if rooms.is_empty() || rooms.len() > MAX_ROOMS_PER_READ {
        let why = format!("`rooms` must name 1 to {MAX_ROOMS_PER_READ} rooms");
        return Err(ApiError::BadRequest(why));
    }
    for room in &rooms {
        room_id(room)?;
        reader.check(&state, room)?;
    }
    let data = state.rooms.counts(&rooms, reader.viewer());
    Ok(json(format!(r#"{{"success":true,"data":{data}}}"#)))
}

/// Follow a room, live.
#[utoipa::path(
    get,
    path = "/api/v2/rooms/{room}/stream",
    params(
        ("room" = String, Path, description = "1 to 128 characters of A-Z a-z 0-9 _ -"),
        ("Last-Event-ID" = Option<String>, Header, description = "Resume after this event"),
    ),
    responses(
        (status = 200, description = "`text/event-stream`: `snapshot` (the room, as `room_snapshot`), then `room` events (`{\"type\": \"room\", \"room\", \"joins\"?, \"updates\"?, \"leaves\"?, \"typing\"?, \"count\", \"connections\"}`), `stale` / `fresh`, `closed`", content_type = "text/event-stream", body = super::sse::StreamEvent),
        (status = 400, description = "An invalid room id", body = super::ErrorResponse),
        (status = 401, description = "An `Authorization` header whose token is refused", body = super::ErrorResponse),
        (status = 403, description = "Not a public room and no token whose `rooms` claim matches; or a browser page from an origin not allowed", body = super::ErrorResponse),
        (status = 429, description = "Over the per-IP read limit, or too many streams from this address", body = super::ErrorResponse),
        (status = 503, description = "The node has `stream.max_connections` streams open", body = super::ErrorResponse),
    ),
    tag = "rooms"
)]
pub(super) async fn stream(
    State(state): State<AppState>,
    _: ReadLimited,
    peer: Peer,
    Path(room): Path<String>,
    reader: RoomReader,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    if !subscribe::origin_allowed(&state, &headers) {
        return Err(ApiError::OriginRefused);
    }
    room_id(&room)?;
    reader.check(&state, &room)?;
    let subscription = sse::open(&state, &headers, peer)?;
    let subscriber = subscription.subscriber().clone();
    let resume = headers.get("last-event-id").and_then(|v| v.to_str().ok());
    let mut first = VecDeque::new();
    if resume.and_then(|cursor| state.rooms.resume(&room, &subscriber, cursor)).is_none() {
        let watched = (&subscriber, reader.viewer());
        let (snapshot, cursor) = state.rooms.watch_from(&room, watched, true, Some("room_snapshot"));
        first.push_back(Event::default().event("snapshot").id(cursor).data(snapshot));
    }
    let watching = Watching { rooms: state.rooms.clone(), room, subscriber: subscriber.id };
    Ok(sse::respond(&state, subscription, first, Some(watching)))
}

fn json(body: String) -> Response {
    ([(header::CONTENT_TYPE, "application/json")], body).into_response()
}
