//! `GET /api/v2/presence/stream?users=a,b,c`: live presence as Server-Sent Events.
//!
//! Events: `snapshot` (`{"data": {user_id: presence}}`), then `change`
//! (`{"changes": [...]}`), `stale` and `fresh` (the node lost or regained NATS), and `closed`
//! (`{"reason": ...}`) when the node ends the stream. Every `snapshot` and `change` carries an
//! `id:`; a client that reconnects with `Last-Event-ID` gets what changed since, or a new
//! snapshot when the cursor is not this node's or too old. A comment keeps an idle stream open.

use std::{collections::VecDeque, convert::Infallible, sync::Arc};

use axum::{
    extract::State,
    http::HeaderMap,
    response::{
        IntoResponse, Response,
        sse::{Event, KeepAlive, Sse},
    },
};
use futures::Stream;
use tokio::time::Instant;

use super::{
    ApiError, AppState,
    extract::ApiQuery,
    limits::ReadLimited,
    listener::Peer,
    presence::{UsersQuery, parse_user_list},
    subscribe,
};
use crate::{
    live::{Cursor, LinkEvent, Pacer, StreamKind, Subscription},
    rooms::Watching,
};

/// Follow the presence of several users, live.
/// One event of the stream, as `text/event-stream` carries it (keep-alives are comments, not
/// events). Only for the OpenAPI document: the events are written by axum's `Event`.
#[derive(utoipa::ToSchema)]
#[allow(dead_code)]
pub(crate) struct StreamEvent {
    /// `snapshot`, `change`, `stale`, `fresh` or `closed`.
    event: String,
    /// The cursor to resume after (`Last-Event-ID`), on `snapshot` and `change`.
    id: Option<String>,
    /// JSON: `{"data": {user: presence}}` for a snapshot, `{"changes": [...]}` for a change,
    /// `{}` for stale and fresh, `{"reason": ...}` for closed.
    data: String,
}

#[utoipa::path(
    get,
    path = "/api/v2/presence/stream",
    params(UsersQuery, ("Last-Event-ID" = Option<String>, Header, description = "Resume after this event")),
    responses(
        (status = 200, description = "`text/event-stream`: `snapshot`, then `change` events (`{\"changes\": [{\"user_id\", \"kind\": \"update\" | \"expire\" | \"erase\", \"presence\", \"revision\"}]}`), `stale` / `fresh`, `closed`", content_type = "text/event-stream", body = StreamEvent),
        (status = 400, description = "Missing, empty or oversize list, or an invalid id", body = super::ErrorResponse),
        (status = 403, description = "A browser page from an origin not in `service.cors.allowed_origins`", body = super::ErrorResponse),
        (status = 429, description = "Over the per-IP read limit, or too many streams from this address", body = super::ErrorResponse),
        (status = 503, description = "The node has `stream.max_connections` streams open", body = super::ErrorResponse),
    ),
    tag = "live"
)]
pub(super) async fn stream(
    State(state): State<AppState>,
    limited: ReadLimited,
    peer: Peer,
    headers: HeaderMap,
    ApiQuery(query): ApiQuery<UsersQuery>,
) -> Result<Response, ApiError> {
    if !subscribe::origin_allowed(&state, &headers) {
        return Err(ApiError::OriginRefused);
    }
    let raw =
        query.users.ok_or_else(|| ApiError::BadRequest("query parameter `users` is required".into()))?;
    let users = parse_user_list(raw.split(',').filter(|s| !s.is_empty()))?;
    let subscription = open(&state, &headers, peer)?;
    let resume = headers.get("last-event-id").and_then(|v| v.to_str().ok()).and_then(Cursor::parse);
    let start = subscribe::follow(&state, &limited, &subscription, users, 0, resume.as_ref()).await?;
    let mut first = VecDeque::new();
    if let Some(snapshot) = start.snapshot {
        let data = format!("{{\"data\":{snapshot}}}");
        first.push_back(Event::default().event("snapshot").id(start.following.cursor).data(data));
    }
    Ok(respond(&state, subscription, first, None))
}

/// An event stream's subscription for the client at `peer` (behind its proxies), within the caps;
/// the node closes the connection if it drops the subscription.
pub(super) fn open(state: &AppState, headers: &HeaderMap, peer: Peer) -> Result<Subscription, ApiError> {
    let ip = state.limits.client_ip(headers, peer.addr.ip());
    subscribe::open(state, StreamKind::Sse, ip, peer.closer)
}

/// The stream: the events `first`, then what the subscription takes in (a `room`'s messages
/// too), paced by the batch window, with keep-alives.
pub(super) fn respond(
    state: &AppState,
    subscription: Subscription,
    first: VecDeque<Event>,
    room: Option<Watching>,
) -> Response {
    let settings = state.hub.settings();
    let keep_alive = KeepAlive::new().interval(settings.keep_alive).text("keep-alive");
    let feed = Feed {
        subscription: Arc::new(subscription),
        queue: first,
        pacer: Pacer::new(settings.batch_window),
        room,
    };
    Sse::new(feed.into_stream()).keep_alive(keep_alive).into_response()
}

/// One client's events.
struct Feed {
    subscription: Arc<Subscription>,
    queue: VecDeque<Event>,
    pacer: Pacer,
    /// The room a room stream watches.
    room: Option<Watching>,
}

impl Feed {
    fn into_stream(self) -> impl Stream<Item = Result<Event, Infallible>> + Send {
        futures::stream::unfold(Some(self), |feed| async move {
            let mut feed = feed?;
            loop {
                if let Some(event) = feed.queue.pop_front() {
                    return Some((Ok(event), Some(feed)));
                }
                let subscriber = feed.subscription.subscriber().clone();
                subscriber.ready().await;
                if let Some(reason) = subscriber.dropped() {
                    let data = format!("{{\"reason\":\"{}\"}}", reason.as_str());
                    return Some((Ok(Event::default().event("closed").data(data)), None));
                }
                // Faster than the pacer allows: what arrives meanwhile goes out together.
                if let Some(at) = feed.pacer.wait_until(Instant::now()) {
                    tokio::time::sleep_until(at).await;
                }
                feed.fill();
            }
        })
    }

    /// Turns what is waiting into events: `stale` first, the changes, `fresh` last.
    fn fill(&mut self) {
        // Before the batch is taken: a room message numbered after it is in the batch, or
        // comes again on a resume (it is never missed).
        let room_cursor = self.room.as_ref().map(Watching::cursor);
        let batch = self.subscription.subscriber().take();
        if batch.is_empty() {
            return;
        }
        self.pacer.sent(Instant::now());
        if batch.link == Some(LinkEvent::Stale) {
            self.queue.push_back(Event::default().event("stale").data("{}"));
        }
        if let Some(seq) = batch.last_seq() {
            let hub = self.subscription.hub();
            let data = format!("{{\"changes\":{}}}", subscribe::changes_json(&batch));
            self.queue.push_back(Event::default().event("change").id(hub.cursor(seq)).data(data));
            hub.delivered(batch.changes.len());
        }
        let last = batch.rooms.len().saturating_sub(1);
        for (i, message) in batch.rooms.iter().enumerate() {
            let event = Event::default().event("room").data(&**message);
            let event = match (&room_cursor, i == last) {
                (Some(cursor), true) => event.id(cursor.clone()),
                _ => event,
            };
            self.queue.push_back(event);
        }
        if batch.link == Some(LinkEvent::Fresh) {
            self.queue.push_back(Event::default().event("fresh").data("{}"));
        }
    }
}
