//! The latest entry of a key, read from the stream's leader. A direct get may be answered by a
//! replica that lags (NATS documents that KV does not guarantee reading one's writes); a
//! compare-and-set that lost must retry from the revision that beat it, a write whose
//! acknowledgement was lost must see whether it landed, and a write must see whether an erasure
//! came after it. All read here.

use async_nats::jetstream::{kv::Operation, message::StreamMessage};

use super::{PresenceStore, StoreError, decode, key, watch::operation_of};
use crate::{
    model::{StoredPresence, UserId},
    nats::last_on,
};

impl PresenceStore {
    /// The latest message under `user`'s key with its operation (a value whose operation header
    /// makes no sense counts as a put, and then does not decode), or `None` for a key never written.
    pub(super) async fn latest(
        &self,
        user: &str,
        op: &'static str,
    ) -> Result<Option<(Operation, StreamMessage)>, StoreError> {
        let kv = self.kv.get(op)?;
        let subject = format!("{}{}", kv.prefix, key(user));
        let Some(message) = self.caller.call(op, last_on(&kv.stream, &subject)).await? else {
            return Ok(None);
        };
        let operation = operation_of(Some(&message.headers)).unwrap_or(Operation::Put);
        Ok(Some((operation, message)))
    }

    /// The latest entry for `user`: the decoded presence (None for a delete or purge marker, or a
    /// value that does not decode) and its revision.
    pub(super) async fn entry(
        &self,
        user: &UserId,
    ) -> Result<Option<(Option<StoredPresence>, u64)>, StoreError> {
        let Some((operation, message)) = self.latest(user, "get_latest").await? else { return Ok(None) };
        Ok(Some((decode(&key(user), operation, &message.payload), message.sequence)))
    }
}
