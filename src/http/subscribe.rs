//! Live presence over HTTP (docs/live.md, "Live presence"): what the two protocols share. A stream
//! opens within the caps, watches a list of users (the same rules as a multi-user read), and
//! gets a snapshot (exactly what a multi-user read shows) before the changes that follow it.
//! [`super::sse`] speaks Server-Sent Events, [`super::ws`] WebSocket.

use std::{net::IpAddr, sync::Arc};

use axum::http::{HeaderMap, header};
use chrono::Utc;
use tokio_util::sync::CancellationToken;

use super::{
    ApiError, AppState,
    limits::ReadLimited,
    presence::{self, DataMap},
};
use crate::{
    directory::Lookup,
    live::{Batch, Cursor, Following, Refused, StreamKind, Subscription},
    model::{Record, UserId},
};

/// Opens a subscription for a client at `ip`, within the node's caps.
pub(super) fn open(
    state: &AppState,
    kind: StreamKind,
    ip: IpAddr,
    closer: CancellationToken,
) -> Result<Subscription, ApiError> {
    state.hub.subscribe(kind, super::listener::client_network(ip), closer).map_err(|refused| match refused {
        Refused::Full => ApiError::StreamsFull,
        Refused::PerIp => ApiError::TooManyStreams,
    })
}

/// What a watch list starts with.
pub(super) struct Start {
    pub following: Following,
    /// `{user_id: presence, ...}`, as a multi-user read shows them; `None` after a resume.
    pub snapshot: Option<String>,
    /// `{user_id: revision, ...}` of the records behind the snapshot (a user never seen has
    /// none): a client holding changes that crossed its subscribe applies those newer only.
    pub revisions: String,
}

/// Makes `users` the subscription's watch list and reads where they stand, charged to the
/// client as a multi-user read: `reads` (the request's own, if it was not paid already) plus one
/// per user not in the node's cache. Refused (429), it changes nothing. With a `resume` cursor
/// this node can resume from, the changes since are queued instead of a snapshot.
pub(super) async fn follow(
    state: &AppState,
    limited: &ReadLimited,
    subscription: &Subscription,
    users: Vec<UserId>,
    reads: usize,
    resume: Option<&Cursor>,
) -> Result<Start, ApiError> {
    // Charged first, from the cache alone, so that a refusal leaves the watch list as it was.
    let misses = state.directory.read_cached(users.clone()).await.misses();
    limited.charge(state, reads + misses)?;
    // Registered first, read after: whatever changes in between is queued, and the snapshot
    // shows at least everything up to the cursor.
    let following = subscription.follow(&users, resume);
    let partial = state.directory.read_cached(users).await;
    let found = Box::pin(state.directory.complete(partial)).await;
    let now = Utc::now();
    let records: Vec<(&str, Arc<Record>)> = found
        .entries
        .iter()
        .filter_map(|(user, lookup)| match lookup {
            Lookup::Known(record) => Some((user.as_str(), record.clone())),
            Lookup::Degraded => None,
        })
        .collect();
    subscription.seen(&records, now, !following.resumed);
    let revisions: serde_json::Map<String, serde_json::Value> =
        records.iter().map(|(user, record)| (user.to_string(), record.revision.into())).collect();
    let revisions = serde_json::Value::Object(revisions).to_string();
    if following.resumed {
        return Ok(Start { following, snapshot: None, revisions });
    }
    let presences = presence::shown(&found.entries, now);
    let snapshot = serde_json::to_string(&DataMap(&presences)).map_err(|_| ApiError::Internal)?;
    Ok(Start { following, snapshot: Some(snapshot), revisions })
}

/// `[change, ...]` of a batch, as JSON.
pub(super) fn changes_json(batch: &Batch) -> String {
    let mut out = String::with_capacity(2 + batch.changes.len() * 200);
    out.push('[');
    for (i, change) in batch.changes.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        out.push_str(change.json());
    }
    out.push(']');
    out
}

/// Whether a browser page from the request's `Origin` may open a stream: no `Origin` (not a
/// browser), or an origin of the node's own or in `service.cors.allowed_origins`
/// ([`super::origins::Origins`]).
pub(super) fn origin_allowed(state: &AppState, headers: &HeaderMap) -> bool {
    match headers.get(header::ORIGIN) {
        None => true,
        Some(origin) => origin.to_str().is_ok_and(|origin| state.origins.allows(origin)),
    }
}
