//! Extractors that answer bad input with the JSON envelope instead of axum's plain-text
//! rejections: JSON bodies, the `{user_id}` path segment, and query strings.

use axum::{
    body::Body,
    extract::{
        FromRequest, FromRequestParts, Query, RawPathParams, Request,
        rejection::{JsonRejection, QueryRejection, RawPathParamsRejection},
    },
    http::{StatusCode, request::Parts},
};
use serde::de::DeserializeOwned;

use super::{ApiError, AppState, MAX_BODY_BYTES};
use crate::model::UserId;
use crate::telemetry::metrics::ReasonLabels;

/// `axum::Json` with the envelope: 415 without a JSON content type, 413 over `LIMIT` bytes,
/// 400 for malformed JSON or a body of the wrong shape, 408 when the body does not arrive within
/// `service.body_timeout`.
///
/// The limit is applied here, where a body is read, rather than by `DefaultBodyLimit`, a layer
/// that puts it in the extensions of every request, bodiless reads included (an insert that
/// grew each read's extension map: BENCHMARKS.md, "Issue 27").
pub(crate) struct ApiJson<T, const LIMIT: usize = MAX_BODY_BYTES>(pub T);

impl<T: DeserializeOwned, const LIMIT: usize> FromRequest<AppState> for ApiJson<T, LIMIT> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &AppState) -> Result<Self, ApiError> {
        let req = req.map(|body| Body::new(http_body_util::Limited::new(body, LIMIT)));
        let read = axum::Json::<T>::from_request(req, state);
        match tokio::time::timeout(state.body_timeout, read).await {
            Ok(Ok(axum::Json(value))) => Ok(ApiJson(value)),
            Ok(Err(rejection)) => Err(json_rejection(rejection)),
            Err(_) => {
                state.metrics.http_timeouts.get_or_create(&ReasonLabels { reason: "body" }).inc();
                Err(ApiError::RequestTimeout)
            }
        }
    }
}

fn json_rejection(rejection: JsonRejection) -> ApiError {
    match rejection.status() {
        StatusCode::PAYLOAD_TOO_LARGE => ApiError::PayloadTooLarge,
        StatusCode::UNSUPPORTED_MEDIA_TYPE => {
            ApiError::UnsupportedMediaType("Content-Type must be application/json".into())
        }
        _ => match rejection {
            JsonRejection::JsonDataError(e) => ApiError::BadRequest(format!(
                "invalid request body: {}",
                e.body_text()
                    .trim_start_matches("Failed to deserialize the JSON body into the target type: ")
            )),
            JsonRejection::JsonSyntaxError(_) => ApiError::BadRequest("malformed JSON body".into()),
            other => ApiError::BadRequest(other.body_text()),
        },
    }
}

/// The `{user_id}` of the path, validated.
pub(crate) struct UserPath(pub UserId);

impl FromRequestParts<AppState> for UserPath {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let params = match RawPathParams::from_request_parts(parts, state).await {
            Ok(params) => Some(params),
            // No router matched the path: the fast path (`super::fast`), whose id is plain.
            Err(RawPathParamsRejection::MissingPathParams(_)) => None,
            Err(e) => return Err(ApiError::BadRequest(e.body_text())),
        };
        // The static `/batch` route names the user `batch` without a path parameter; the fast
        // path has none either: the id is the last segment.
        let named = params.as_ref().and_then(|p| p.iter().find(|(key, _)| *key == "user_id"));
        let raw = match named {
            Some((_, value)) => value,
            None => parts.uri.path().rsplit('/').next().unwrap_or_default(),
        };
        let user = UserId::parse(raw).map_err(|e| ApiError::BadRequest(e.to_string()))?;
        tracing::Span::current().record("user_id", user.as_str());
        Ok(UserPath(user))
    }
}

/// `axum::extract::Query` with the envelope.
pub(crate) struct ApiQuery<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequestParts<S> for ApiQuery<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        Query::<T>::from_request_parts(parts, state)
            .await
            .map(|Query(v)| ApiQuery(v))
            .map_err(|e: QueryRejection| ApiError::BadRequest(e.body_text()))
    }
}
