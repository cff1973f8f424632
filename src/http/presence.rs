//! The presence API (docs/api.md, "The API"; docs/architecture.md, "A read" and "A write"): handlers
//! and their routes side by side.

use std::collections::{BTreeMap, HashSet};

use axum::{
    Router,
    response::{IntoResponse, Response},
    routing::{get, post},
};
use chrono::Utc;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

pub(crate) use super::reply::{DEGRADED_HEADER, STALE_HEADER};
pub(super) use super::reply::{DataMap, Reply};
use super::{
    ApiError, AppState, Owner, Reader,
    extract::{ApiJson, ApiQuery, UserPath},
    limits::ReadLimited,
};
use crate::{
    directory::Lookup,
    model::{Presence, PresenceUpdate, UserId},
};

/// Most distinct users one multi-user read may ask for.
pub(crate) const MAX_USERS_PER_READ: usize = 1000;

pub(crate) fn routes() -> Router<AppState> {
    Router::new()
        .route("/api/v2/presence", get(get_many))
        .route("/api/v2/presence/{user_id}", get(get_one).put(set_one).delete(super::owner::erase))
        .route("/api/v2/presence/{user_id}/history", get(super::owner::history))
        // `batch` is also a valid user id: GET, PUT and DELETE on it reach that user. Only the batch
        // read takes the larger body ([`batch`]'s extractor).
        .route("/api/v2/presence/batch", post(batch).get(get_one).put(set_one).delete(super::owner::erase))
}

/// The success envelope: `data` maps each user id to its presence.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct PresenceResponse {
    /// Always `true`.
    pub success: bool,
    pub data: BTreeMap<String, Presence<'static>>,
}

/// The body of a write.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct SetPresenceRequest {
    /// One of `online`, `away`, `busy`, `offline`, `invisible` (everyone else reads `offline`).
    #[schema(example = "busy")]
    pub status: String,
    /// At most 256 characters, no control characters.
    #[schema(example = "In a meeting")]
    pub message: Option<String>,
    /// Seconds until the status expires to `offline` without a refresh: 1 to 604800; default
    /// `nats.kv.ttl`.
    #[schema(example = 3600, minimum = 1, maximum = 604800)]
    #[serde(default, deserialize_with = "whole_number")]
    pub ttl: Option<i64>,
}

/// A whole number, written as JSON writes it: `60` or `60.0` (JSON Schema's `integer` counts
/// both), not `60.5`.
fn whole_number<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<i64>, D::Error> {
    let Some(number) = Option::<serde_json::Number>::deserialize(d)? else { return Ok(None) };
    let whole = number.as_i64().or_else(|| {
        let float = number.as_f64()?;
        (float.fract() == 0.0 && float.abs() < 9.0e18).then_some(float as i64)
    });
    whole.map(Some).ok_or_else(|| serde::de::Error::custom("ttl must be a whole number of seconds"))
}

/// The body of a batch read.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct BatchRequest {
    /// 1 to 1000 user ids (a repeated id counts each time; it is answered once).
    pub user_ids: Vec<String>,
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub(crate) struct UsersQuery {
    /// Comma-separated user ids, 1 to 1000 distinct.
    pub users: Option<String>,
}

/// Get one user's presence.
#[utoipa::path(
    get,
    path = "/api/v2/presence/{user_id}",
    params(("user_id" = String, Path, description = "1 to 128 characters of A-Z a-z 0-9 _ -")),
    security((), ("bearer" = [])),
    responses(
        (status = 200, description = "The user's presence; `X-Presence-Stale: true` when it comes from a cache that may miss updates, `X-Presence-Degraded: true` (and `offline`) when NATS is unreachable and the node has no entry. An `invisible` user reads `offline`, except to their own token", body = PresenceResponse),
        (status = 400, description = "Invalid user id", body = super::ErrorResponse),
        (status = 404, description = "No presence was ever stored for this user (or, to anyone but the user, nothing but `invisible`: such a user reads like one never seen)", body = super::ErrorResponse),
        (status = 429, description = "Over the per-IP read limit", body = super::ErrorResponse),
    ),
    tag = "presence"
)]
pub(crate) async fn get_one(
    state: axum::extract::State<AppState>,
    _: ReadLimited,
    UserPath(user): UserPath,
    Reader(reader): Reader,
) -> Result<Response, ApiError> {
    let now = Utc::now();
    let owner = reader.as_deref() == Some(user.as_str());
    match state.directory.read(&user).await {
        Lookup::Known(entry) => match &entry.presence {
            Some(p) => {
                let stale = state.directory.stale();
                let shown = if owner { p.owner_view(&user, now) } else { p.view(&user, now) };
                // A user who was only ever invisible shows nothing, no write time even: to
                // everyone else they are a user never seen, and read as one.
                if shown.updated_at.is_none() {
                    return Err(ApiError::NotFound(format!("no presence for user {user}")));
                }
                Ok(Reply { presences: vec![shown], stale, degraded: false }.into_response())
            }
            None => Err(ApiError::NotFound(format!("no presence for user {user}"))),
        },
        Lookup::Degraded => {
            let presences = vec![Presence::unknown(&user)];
            Ok(Reply { presences, stale: true, degraded: true }.into_response())
        }
    }
}

/// Get the presence of several users.
#[utoipa::path(
    get,
    path = "/api/v2/presence",
    params(UsersQuery),
    responses(
        (status = 200, description = "An entry for every requested id; users never seen read `offline`", body = PresenceResponse),
        (status = 400, description = "Missing, empty or oversize list, or an invalid id", body = super::ErrorResponse),
        (status = 429, description = "Over the per-IP read limit: the request costs one read, plus one per user not in the node's cache", body = super::ErrorResponse),
    ),
    tag = "presence"
)]
pub(crate) async fn get_many(
    state: axum::extract::State<AppState>,
    limited: ReadLimited,
    ApiQuery(query): ApiQuery<UsersQuery>,
) -> Result<Response, ApiError> {
    let raw =
        query.users.ok_or_else(|| ApiError::BadRequest("query parameter `users` is required".into()))?;
    let users = parse_user_list(raw.split(',').filter(|s| !s.is_empty()))?;
    read_many(&state, &limited, users).await
}

/// Get the presence of several users, ids in the body.
#[utoipa::path(
    post,
    path = "/api/v2/presence/batch",
    request_body = BatchRequest,
    responses(
        (status = 200, description = "An entry for every requested id; users never seen read `offline`", body = PresenceResponse),
        (status = 400, description = "Malformed body, empty or oversize list, or an invalid id", body = super::ErrorResponse),
        (status = 413, description = "Body over 144 KiB", body = super::ErrorResponse),
        (status = 415, description = "Body is not JSON", body = super::ErrorResponse),
        (status = 429, description = "Over the per-IP read limit: the request costs one read, plus one per user not in the node's cache", body = super::ErrorResponse),
    ),
    tag = "presence"
)]
pub(crate) async fn batch(
    state: axum::extract::State<AppState>,
    limited: ReadLimited,
    ApiJson(body): ApiJson<BatchRequest, { super::MAX_BATCH_BODY_BYTES }>,
) -> Result<Response, ApiError> {
    if body.user_ids.len() > MAX_USERS_PER_READ {
        return Err(ApiError::BadRequest(format!(
            "too many user ids: at most {MAX_USERS_PER_READ} per request"
        )));
    }
    let users = parse_user_list(body.user_ids.iter().map(String::as_str))?;
    read_many(&state, &limited, users).await
}

/// Set your own presence.
#[utoipa::path(
    put,
    path = "/api/v2/presence/{user_id}",
    params(("user_id" = String, Path, description = "Must equal the token's `sub`")),
    request_body = SetPresenceRequest,
    security(("bearer" = [])),
    responses(
        (status = 200, description = "Stored and acknowledged by JetStream", body = PresenceResponse),
        (status = 400, description = "Invalid id, status, message, ttl or JSON", body = super::ErrorResponse),
        (status = 401, description = "Missing or invalid token", body = super::ErrorResponse),
        (status = 403, description = "The token's subject is another user", body = super::ErrorResponse),
        (status = 413, description = "Body over 16 KiB", body = super::ErrorResponse),
        (status = 415, description = "Body is not JSON", body = super::ErrorResponse),
        (status = 429, description = "Over the per-user write limit", body = super::ErrorResponse),
        (status = 503, description = "NATS unreachable (nothing was stored), or the write was not confirmed in time (it may have been stored; repeating it is safe). The error says which.", body = super::ErrorResponse),
    ),
    tag = "presence"
)]
pub(crate) async fn set_one(
    state: axum::extract::State<AppState>,
    Owner(user, token): Owner,
    ApiJson(body): ApiJson<SetPresenceRequest>,
) -> Result<Response, ApiError> {
    super::limits::owner_limit(&state, &user)?;
    let update = PresenceUpdate::new(&body.status, body.message, body.ttl, state.default_ttl)
        .map_err(|e| ApiError::BadRequest(e.to_string()))?;
    // Boxed: the write's future is large, and the handler's future is moved through every layer.
    let stored = Box::pin(state.directory.write(&user, update, &token)).await?;
    // The writer is the owner: an `invisible` write answers as it is.
    let presence = stored.owner_view(&user, Utc::now());
    Ok(Reply { presences: vec![presence], stale: false, degraded: false }.into_response())
}

/// Validates and de-duplicates a list of ids (first occurrence wins).
pub(super) fn parse_user_list<'a>(ids: impl Iterator<Item = &'a str>) -> Result<Vec<UserId>, ApiError> {
    let mut seen = HashSet::new();
    let mut users = Vec::new();
    for raw in ids {
        let user = UserId::parse(raw).map_err(|e| ApiError::BadRequest(e.to_string()))?;
        if seen.insert(user.clone()) {
            if users.len() == MAX_USERS_PER_READ {
                return Err(ApiError::BadRequest(format!(
                    "too many users: at most {MAX_USERS_PER_READ} per request"
                )));
            }
            users.push(user);
        }
    }
    if users.is_empty() {
        return Err(ApiError::BadRequest("the list of users is empty".into()));
    }
    Ok(users)
}

async fn read_many(
    state: &AppState,
    limited: &ReadLimited,
    users: Vec<UserId>,
) -> Result<Response, ApiError> {
    let partial = state.directory.read_cached(users).await;
    limited.charge(state, partial.misses())?;
    // Boxed, as a single read's miss path is: its state is large and rarely needed.
    let found = Box::pin(state.directory.complete(partial)).await;
    let presences = shown(&found.entries, Utc::now());
    let stale = state.directory.stale() || found.degraded;
    Ok(Reply { presences, stale, degraded: found.degraded }.into_response())
}

/// What a multi-user read shows for each lookup at `now`: users never seen, and those that could
/// not be looked up, read `offline`.
pub(super) fn shown(entries: &[(UserId, Lookup)], now: chrono::DateTime<Utc>) -> Vec<Presence<'_>> {
    entries
        .iter()
        .map(|(user, lookup)| match lookup {
            Lookup::Known(entry) => {
                entry.presence.as_ref().map_or_else(|| Presence::unknown(user), |p| p.view(user, now))
            }
            Lookup::Degraded => Presence::unknown(user),
        })
        .collect()
}
