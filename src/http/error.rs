//! The one error type at the HTTP edge. Every variant maps to one status and the JSON envelope
//! `{"success": false, "error": "..."}`; infrastructure causes are logged, never sent.

use axum::{
    Json,
    http::{HeaderValue, StatusCode, header},
    response::{IntoResponse, Response},
};
use serde::Serialize;
use utoipa::ToSchema;

use crate::directory::WriteError;

/// The error envelope of every failed request.
#[derive(Debug, Serialize, serde::Deserialize, ToSchema)]
pub(crate) struct ErrorResponse {
    /// Always `false`.
    pub success: bool,
    pub error: String,
}

#[derive(Debug, thiserror::Error)]
pub(crate) enum ApiError {
    #[error("{0}")]
    BadRequest(String),
    /// The reason goes to the access log, never to the client.
    #[error("missing or invalid bearer token")]
    Unauthorized(String),
    #[error("a token may only write its own subject's presence")]
    Forbidden,
    #[error("the token's subject is not a valid user id")]
    SubjectNotAUser,
    #[error("room {0:?} is not open to this caller: it needs a token whose `rooms` claim matches it")]
    RoomRefused(String),
    #[error("{0}")]
    Conflict(String),
    #[error("this API is served over HTTPS only; plain HTTP is refused, not redirected")]
    HttpsRequired,
    #[error("{0}")]
    NotFound(String),
    #[error("method not allowed")]
    MethodNotAllowed,
    #[error("request body too large: at most 16 KiB for a write, 144 KiB for a batch read")]
    PayloadTooLarge,
    #[error("the request body did not arrive in time")]
    RequestTimeout,
    #[error("{0}")]
    UnsupportedMediaType(String),
    #[error("too many requests, retry after {0} s")]
    TooManyRequests(u64),
    #[error("presence storage is unavailable, nothing was stored; try again shortly")]
    Unavailable,
    #[error(
        "presence storage did not confirm the write in time: it may or may not have been stored; repeating it is safe"
    )]
    OutcomeUnknown,
    #[error("internal error")]
    Internal,
    #[error("this node has as many live streams open as it allows; try another node or later")]
    StreamsFull,
    #[error("too many live streams open from this address")]
    TooManyStreams,
    #[error("this origin may not use the API from a browser (service.cors.allowed_origins)")]
    OriginRefused,
}

impl ApiError {
    pub(crate) fn status(&self) -> StatusCode {
        match self {
            ApiError::BadRequest(_) => StatusCode::BAD_REQUEST,
            ApiError::Unauthorized(_) => StatusCode::UNAUTHORIZED,
            ApiError::Forbidden
            | ApiError::SubjectNotAUser
            | ApiError::RoomRefused(_)
            | ApiError::HttpsRequired
            | ApiError::OriginRefused => StatusCode::FORBIDDEN,
            ApiError::Conflict(_) => StatusCode::CONFLICT,
            ApiError::NotFound(_) => StatusCode::NOT_FOUND,
            ApiError::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            ApiError::PayloadTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::RequestTimeout => StatusCode::REQUEST_TIMEOUT,
            ApiError::UnsupportedMediaType(_) => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            ApiError::TooManyRequests(_) | ApiError::TooManyStreams => StatusCode::TOO_MANY_REQUESTS,
            ApiError::Unavailable | ApiError::OutcomeUnknown | ApiError::StreamsFull => {
                StatusCode::SERVICE_UNAVAILABLE
            }
            ApiError::Internal => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = self.status();
        let body = ErrorResponse { success: false, error: self.to_string() };
        let mut response = (status, Json(body)).into_response();
        match self {
            ApiError::Unauthorized(reason) => {
                response.headers_mut().insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
                response.extensions_mut().insert(super::access::RefusedToken(reason));
            }
            ApiError::Unavailable | ApiError::OutcomeUnknown => {
                response.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
            }
            ApiError::StreamsFull | ApiError::TooManyStreams => {
                response.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from_static("5"));
            }
            ApiError::RequestTimeout => {
                response.headers_mut().insert(header::CONNECTION, HeaderValue::from_static("close"));
            }
            ApiError::TooManyRequests(secs) => {
                response.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from(secs));
            }
            _ => {}
        }
        response
    }
}

/// Every failed write, history read or erasure is a 503 (the directory logged the cause): NATS
/// did not take it, or did not say whether it did.
impl From<WriteError> for ApiError {
    fn from(e: WriteError) -> Self {
        match e {
            WriteError::Unconfirmed(_) => ApiError::OutcomeUnknown,
            WriteError::Refused => ApiError::Unauthorized("the center refused the token".into()),
            _ => ApiError::Unavailable,
        }
    }
}
