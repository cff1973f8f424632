//! A publish to a stream, acknowledged: what async-nats' JetStream `publish` and `kv::Store::update`
//! do, with the acknowledgement read into one plain struct. async-nats reads it through an
//! untagged enum (buffered, tried as an error first, the failed try formatting a message): about
//! 3,500 instructions of each PUT's two acknowledgements, 5 % of the node's work per PUT
//! (BENCHMARKS.md, "Ninth round"). The errors are async-nats' own (`PublishError` of the same
//! kinds, the stream's `jetstream::Error` as their source), so callers tell them apart as before.

use async_nats::{
    Client, HeaderMap, Request, RequestErrorKind,
    jetstream::{
        self, ErrorCode,
        context::{PublishError, PublishErrorKind},
        kv,
    },
};
use bytes::Bytes;
use serde::Deserialize;

/// The JetStream API's prefix in a context without a domain.
pub(crate) const API_PREFIX: &str = "$JS.API";

/// What a stream answers a publish with (`{"stream":..,"seq":..}` or `{"error":{..}}`).
#[derive(Deserialize)]
struct Ack {
    #[serde(default)]
    seq: u64,
    error: Option<jetstream::Error>,
}

/// Publishes `payload` with `headers` to `subject` and returns the stream sequence it was stored
/// at. Unbounded: the caller bounds it ([`super::Caller`]).
pub(crate) async fn acked(
    client: &Client,
    subject: String,
    headers: HeaderMap,
    payload: Bytes,
) -> Result<u64, PublishError> {
    let request = Request::new().headers(headers).payload(payload).timeout(None);
    let reply = client.send_request(subject, request).await.map_err(|e| match e.kind() {
        // Nobody listens on the subject: no stream takes it (one without a leader, say).
        RequestErrorKind::NoResponders => PublishError::new(PublishErrorKind::StreamNotFound),
        RequestErrorKind::TimedOut => PublishError::new(PublishErrorKind::TimedOut),
        _ => PublishError::with_source(PublishErrorKind::Other, e),
    })?;
    let ack: Ack = serde_json::from_slice(&reply.payload)
        .map_err(|e| PublishError::with_source(PublishErrorKind::Other, e))?;
    match ack.error {
        None => Ok(ack.seq),
        Some(error) => Err(PublishError::with_source(kind_of(&error), error)),
    }
}

/// The kind async-nats gives a stream's error.
fn kind_of(error: &jetstream::Error) -> PublishErrorKind {
    match error.error_code() {
        ErrorCode::STREAM_WRONG_LAST_MESSAGE_ID => PublishErrorKind::WrongLastMessageId,
        ErrorCode::STREAM_WRONG_LAST_SEQUENCE => PublishErrorKind::WrongLastSequence,
        _ => PublishErrorKind::Other,
    }
}

/// The subject a put of `key` into `kv` goes to, as async-nats' `kv::Store` makes it, for a
/// bucket opened through a JetStream context whose API prefix is `api` (`$JS.API`, or
/// `$JS.{domain}.API` for a context in another domain).
pub(crate) fn kv_put_prefix(kv: &kv::Store, api: &str) -> String {
    let own = kv.put_prefix.as_ref().unwrap_or(&kv.prefix);
    if kv.use_jetstream_prefix { format!("{api}.{own}") } else { own.clone() }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_acknowledgement_is_read_as_async_nats_reads_it() {
        let read = |json: &str| serde_json::from_slice::<Ack>(json.as_bytes()).unwrap();
        let ack = read(r#"{"stream":"KV_presence","seq":42,"domain":"center","duplicate":true}"#);
        assert_eq!((ack.seq, ack.error.is_none()), (42, true));
        for (json, kind) in [
            (
                r#"{"error":{"code":400,"err_code":10071,"description":"wrong last sequence: 4"}}"#,
                PublishErrorKind::WrongLastSequence,
            ),
            (
                r#"{"error":{"code":400,"err_code":10070,"description":"wrong last msg ID: x"}}"#,
                PublishErrorKind::WrongLastMessageId,
            ),
            (
                r#"{"error":{"code":400,"err_code":10164,"description":"wrong last sequence"}}"#,
                PublishErrorKind::Other,
            ),
        ] {
            let error = read(json).error.expect("an error");
            assert_eq!(kind_of(&error), kind, "{json}");
            let e = PublishError::with_source(kind_of(&error), error);
            assert!(super::super::wrong_last_sequence(&e) == json.contains("sequence"), "{json}");
        }
    }
}
