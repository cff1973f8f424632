//! The bucket's changes as a stream, for the watcher that keeps a node's cache coherent.
//!
//! async-nats resumes a watch across reconnects by itself; when the stream ends or fails, the
//! watcher starts a new one after the last revision it applied, so nothing is missed.

use std::sync::Arc;

use async_nats::jetstream::kv::{self, Operation};
use chrono::{DateTime, Utc};
use futures::{StreamExt, stream::BoxStream};

use super::{KV_OPERATION, StoreError, decode, sent::Sent, user_of};
use crate::{
    model::{CompactPresence, StoredPresence},
    nats::{BoxError, CallError, Caller},
};

/// The header of a message the server wrote in place of removed ones (a limit marker).
const NATS_MARKER_REASON: &str = "Nats-Marker-Reason";

/// The bucket's changes, in revision order.
pub(crate) type BucketChanges = BoxStream<'static, Result<BucketChange, StoreError>>;

/// One change of one key. The value is decoded only when asked for; a node's own write comes
/// with the record it was made from ([`super::sent`]).
#[derive(Debug, Clone)]
pub(crate) struct BucketChange {
    key: String,
    pub revision: u64,
    /// Changes the server holds after this one (0: the watcher is caught up).
    pub pending: u64,
    /// When the server stored it, by the server's clock.
    pub stored_at: DateTime<Utc>,
    operation: Operation,
    value: bytes::Bytes,
    /// The record this node wrote these bytes from, if it did.
    sent: Option<CompactPresence>,
}

impl BucketChange {
    /// The record this node made the change's bytes from, if it did (taken once).
    pub(crate) fn take_sent(&mut self) -> Option<CompactPresence> {
        self.sent.take()
    }

    /// The user whose presence changed; `None` for a key that is not a presence.
    pub(crate) fn user(&self) -> Option<&str> {
        user_of(&self.key)
    }

    /// Whether the change is an erasure (a purge).
    pub(crate) fn erased(&self) -> bool {
        self.operation == Operation::Purge
    }

    /// The presence after the change: `None` after an erasure (purge), a deletion, or for a value
    /// that does not decode.
    pub(crate) fn presence(&self) -> Option<StoredPresence> {
        decode(&self.key, self.operation, &self.value)
    }
}

impl BucketChange {
    /// A change read from the bucket's stream directly: the key is the subject after `prefix`; a
    /// message with no KV operation and no marker header is a put.
    pub(super) fn of_message(prefix: &str, message: async_nats::jetstream::Message) -> Option<Self> {
        let info = message.info().ok()?;
        let (revision, published) = (info.stream_sequence, info.published);
        let key = message.subject.strip_prefix(prefix)?.to_string();
        let operation = operation_of(message.headers.as_ref())?;
        let stored_at = utc(published.unix_timestamp_nanos());
        let value = message.payload.clone();
        Some(Self { key, revision, pending: 0, stored_at, operation, value, sent: None })
    }
}

/// The operation a KV message stands for, from its headers: none names a put; a limit marker
/// (the server's, in place of removed messages) counts as a purge.
pub(super) fn operation_of(headers: Option<&async_nats::HeaderMap>) -> Option<Operation> {
    match headers.and_then(|h| h.get(KV_OPERATION)).map(|v| v.as_str()) {
        Some(op) => op.parse().ok(),
        None if headers.and_then(|h| h.get(NATS_MARKER_REASON)).is_some() => Some(Operation::Purge),
        None => Some(Operation::Put),
    }
}

pub(super) fn utc(nanos: i128) -> DateTime<Utc> {
    DateTime::from_timestamp_nanos(nanos.clamp(i64::MIN as i128, i64::MAX as i128) as i64)
}

impl From<kv::Entry> for BucketChange {
    fn from(entry: kv::Entry) -> Self {
        let stored_at = utc(entry.created.unix_timestamp_nanos());
        Self {
            key: entry.key,
            revision: entry.revision,
            pending: entry.delta,
            stored_at,
            operation: entry.operation,
            value: entry.value,
            sent: None,
        }
    }
}

pub(super) async fn start(
    kv: &kv::Store,
    caller: &Caller,
    after: u64,
    sent: Arc<Sent>,
) -> Result<BucketChanges, StoreError> {
    let watch = if after == 0 {
        caller.bounded("watch", kv.watch_with_history(">")).await?
    } else {
        caller.bounded("watch", kv.watch_all_from_revision(after + 1)).await?
    };
    Ok(watch
        .map(move |next| {
            next.map(|entry| {
                let mut change = BucketChange::from(entry);
                if change.operation == Operation::Put {
                    change.sent = sent.take(&change.key, &change.value);
                }
                change
            })
            .map_err(|e| StoreError::from(CallError::Failed { op: "watch", source: BoxError::from(e) }))
        })
        .boxed())
}
