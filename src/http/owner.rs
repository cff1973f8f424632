//! The owner's own operations besides writing: reading their history from the audit log, and
//! erasing everything of theirs. Both need a token whose `sub` is the path's user, and count
//! against the per-user limit.

use std::collections::BTreeMap;

use axum::Json;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::{ApiError, AppState, Owner, extract::ApiQuery, limits::owner_limit};
use crate::lifecycle::PresenceEvent;

/// Most events one history request may ask for.
pub(crate) const MAX_HISTORY: usize = 1000;

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub(crate) struct HistoryQuery {
    /// How many of the newest events: 1 to 1000, default 50.
    #[param(minimum = 1, maximum = 1000)]
    pub limit: Option<usize>,
}

/// A user's events, newest first.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct HistoryResponse {
    /// Always `true`.
    pub success: bool,
    /// The user id, mapped to their events, newest first.
    pub data: BTreeMap<String, Vec<PresenceEvent>>,
}

/// Your own presence history, from the audit log.
#[utoipa::path(
    get,
    path = "/api/v2/presence/{user_id}/history",
    params(("user_id" = String, Path, description = "Must equal the token's `sub`"), HistoryQuery),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "The newest events, newest first", body = HistoryResponse),
        (status = 400, description = "Invalid id or limit", body = super::ErrorResponse),
        (status = 401, description = "Missing or invalid token", body = super::ErrorResponse),
        (status = 403, description = "The token's subject is another user", body = super::ErrorResponse),
        (status = 429, description = "Over the per-user limit (shared with writes and erasure)", body = super::ErrorResponse),
        (status = 503, description = "NATS unreachable", body = super::ErrorResponse),
    ),
    tag = "presence"
)]
pub(crate) async fn history(
    state: axum::extract::State<AppState>,
    Owner(user, _): Owner,
    ApiQuery(query): ApiQuery<HistoryQuery>,
) -> Result<Json<HistoryResponse>, ApiError> {
    owner_limit(&state, &user)?;
    let limit = query.limit.unwrap_or(50);
    if !(1..=MAX_HISTORY).contains(&limit) {
        return Err(ApiError::BadRequest(format!("limit must be from 1 to {MAX_HISTORY}")));
    }
    let events = state.directory.history(&user, limit).await?;
    Ok(Json(HistoryResponse { success: true, data: BTreeMap::from([(user.to_string(), events)]) }))
}

/// The answer to an erasure.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct ErasedResponse {
    /// Always `true`.
    pub success: bool,
}

/// Erase your own presence and its history (docs/lifecycle.md says what is and is not erased).
#[utoipa::path(
    delete,
    path = "/api/v2/presence/{user_id}",
    params(("user_id" = String, Path, description = "Must equal the token's `sub`")),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "Erased (also when there was nothing to erase)", body = ErasedResponse),
        (status = 400, description = "Invalid id", body = super::ErrorResponse),
        (status = 401, description = "Missing or invalid token", body = super::ErrorResponse),
        (status = 403, description = "The token's subject is another user", body = super::ErrorResponse),
        (status = 429, description = "Over the per-user limit (shared with writes and history)", body = super::ErrorResponse),
        (status = 503, description = "NATS unreachable; erase again", body = super::ErrorResponse),
    ),
    tag = "presence"
)]
pub(crate) async fn erase(
    state: axum::extract::State<AppState>,
    Owner(user, token): Owner,
) -> Result<Json<ErasedResponse>, ApiError> {
    owner_limit(&state, &user)?;
    state.directory.erase(&user, &token).await?;
    Ok(Json(ErasedResponse { success: true }))
}
