//! The latest entry of a key, read from the stream's leader. A direct get may be answered by a
//! replica that lags (NATS documents that KV does not guarantee reading one's writes); a
//! compare-and-set that lost must retry from the revision that beat it, and a write whose
//! acknowledgement was lost must see whether it landed. Both read here.

use async_nats::jetstream::stream::LastRawMessageErrorKind;

use super::{PresenceStore, StoreError, decode, key, watch::operation_of};
use crate::model::{StoredPresence, UserId};

impl PresenceStore {
    /// The latest entry for `user`: the decoded presence (None for a delete or purge marker, or a
    /// value that does not decode) and its revision.
    pub(super) async fn entry(
        &self,
        user: &UserId,
    ) -> Result<Option<(Option<StoredPresence>, u64)>, StoreError> {
        let kv = self.kv.get("get_latest")?;
        let key = key(user);
        let subject = format!("{}{key}", kv.prefix);
        let last = async {
            match kv.stream.get_last_raw_message_by_subject(&subject).await {
                Ok(message) => Ok(Some(message)),
                Err(e) if e.kind() == LastRawMessageErrorKind::NoMessageFound => Ok(None),
                Err(e) => Err(e),
            }
        };
        let Some(message) = self.caller.call("get_latest", last).await? else { return Ok(None) };
        let Some(operation) = operation_of(Some(&message.headers)) else { return Ok(None) };
        Ok(Some((decode(&key, operation, &message.payload), message.sequence)))
    }
}
