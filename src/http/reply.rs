//! The answer of a read: the success envelope (`PresenceResponse`), its JSON written by hand, and
//! the freshness headers.

use axum::{
    body::Body,
    http::{HeaderName, HeaderValue, header},
    response::{IntoResponse, Response},
};
use serde::Serialize;

use crate::model::{Presence, json_string};

/// Set on reads answered from a cache that may miss updates (the node lost its NATS link).
pub(crate) const STALE_HEADER: HeaderName = HeaderName::from_static("x-presence-stale");
/// Set on reads where some user could not be looked up and reads `offline` as a fallback.
pub(crate) const DEGRADED_HEADER: HeaderName = HeaderName::from_static("x-presence-degraded");

/// A success envelope with the freshness headers a read may need.
pub(crate) struct Reply<'a> {
    pub presences: Vec<Presence<'a>>,
    pub stale: bool,
    pub degraded: bool,
}

impl IntoResponse for Reply<'_> {
    fn into_response(self) -> Response {
        // Written by hand as `PresenceResponse` serializes (the same bytes: tested), into a buffer
        // sized for the answer up front.
        let mut body = Vec::with_capacity(32 + 320 * self.presences.len());
        body.extend_from_slice(b"{\"success\":true,\"data\":{");
        for (i, presence) in self.presences.iter().enumerate() {
            if i > 0 {
                body.push(b',');
            }
            json_string(&mut body, &presence.user_id);
            body.push(b':');
            presence.write_json(&mut body);
        }
        body.extend_from_slice(b"}}");
        // Built directly: `(headers, Vec<u8>)` sets a content type and then replaces it.
        let mut response = Response::new(Body::from(body));
        let headers = response.headers_mut();
        headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
        if self.stale {
            headers.insert(STALE_HEADER, HeaderValue::from_static("true"));
        }
        if self.degraded {
            headers.insert(DEGRADED_HEADER, HeaderValue::from_static("true"));
        }
        response
    }
}

pub(super) struct DataMap<'a>(pub &'a [Presence<'a>]);

impl Serialize for DataMap<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_map(self.0.iter().map(|p| (&p.user_id, p)))
    }
}

#[cfg(test)]
mod tests {
    use std::borrow::Cow;

    use axum::body::to_bytes;

    use super::*;
    use crate::model::Status;

    #[tokio::test]
    async fn a_read_is_written_as_its_envelope_serializes() {
        #[derive(Serialize)]
        struct Envelope<'a> {
            success: bool,
            data: DataMap<'a>,
        }
        let named = |user: &'static str, status| Presence {
            user_id: Cow::Borrowed(user),
            status,
            message: Some(Cow::Borrowed("a \"quoted\" word")),
            ..Presence::unknown_named("")
        };
        for presences in [
            vec![],
            vec![named("zed", Status::Busy)],
            vec![named("b\\", Status::Away), named("a", Status::Online)],
        ] {
            let expected =
                serde_json::to_string(&Envelope { success: true, data: DataMap(&presences) }).unwrap();
            let response = Reply { presences, stale: false, degraded: false }.into_response();
            let body = to_bytes(response.into_body(), usize::MAX).await.unwrap();
            assert_eq!(std::str::from_utf8(&body).unwrap(), expected);
        }
    }
}
