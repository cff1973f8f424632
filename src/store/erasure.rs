//! The bucket's part in an erasure: a purge whose marker's revision is known, and the check a
//! write makes once its event is stored, when the audit log says its user was erased before
//! (the erasure's marker refused the event): was the key purged after the write? Both are what keep
//! an erasure and a write racing it from leaving half of each (docs/lifecycle.md, "Erasure").

use async_nats::{HeaderMap, jetstream::kv::Operation};
use bytes::Bytes;

use super::{KV_OPERATION, PresenceStore, StoreError, key};
use crate::{model::UserId, nats};

impl PresenceStore {
    /// Removes `user`'s record and its history from the bucket (a purge marker remains): the
    /// marker's revision.
    pub(crate) async fn purge(&self, user: &UserId) -> Result<u64, StoreError> {
        let kv = self.kv.get("purge")?;
        let subject = format!("{}{}", kv.put_to, key(user));
        let mut headers = HeaderMap::new();
        headers.insert(KV_OPERATION, "PURGE");
        headers.insert("Nats-Rollup", "sub");
        Ok(self.caller.call("purge", nats::acked(&kv.client, subject, headers, Bytes::new())).await?)
    }

    /// Whether `user`'s key was purged or deleted after `revision`, asked of the stream's leader
    /// (a replica could lag): then a write at `revision` was erased after it was made.
    pub(crate) async fn erased_since(&self, user: &str, revision: u64) -> Result<bool, StoreError> {
        // Nothing at all under the key: gone since, then.
        let Some((operation, message)) = self.latest(user, "erased_since").await? else { return Ok(true) };
        Ok(message.sequence > revision && matches!(operation, Operation::Purge | Operation::Delete))
    }
}
