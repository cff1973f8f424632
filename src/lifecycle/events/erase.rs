//! Taking a user's events out of the audit log, in the steps that let an erasure and a write
//! racing it end as one of the two orders, never half of each (docs/lifecycle.md, "Erasure"):
//! everything stored before the erasure began goes at once; after that, only the events of
//! writes older than the erasure's purge marker, one by one, so that a write made after the
//! erasure keeps its event.
//!
//! Between the purge and the sweeps, the erasure leaves a marker of its own in the audit log, on
//! [`marker`]: an event stored on condition that no such marker exists came before the sweeps
//! (which then find it) or belongs to a user never erased (`Events::publish_unless`).

use async_nats::jetstream::{
    ErrorCode,
    stream::{DeleteMessageErrorKind, RawMessageErrorKind},
};

use bytes::Bytes;

use super::{EventError, Events, PresenceEvent};
use crate::model::UserId;

/// The subject of the markers that erasures of `user` leave (four tokens: the sweeps' filter
/// `presence.*.{user}` does not take them).
pub(super) fn marker(user: &str) -> String {
    format!("presence.erased.user.{user}")
}

impl Events {
    /// Leaves the marker of an erasure of `user` whose purge has revision `revision`, once the
    /// audit log stored it. From then on, an event of `user` sent on condition that none exists is
    /// refused.
    pub(crate) async fn mark(&self, user: &UserId, revision: u64) -> Result<(), EventError> {
        let body = Bytes::from(format!("{{\"purge_revision\":{revision}}}"));
        let publish = async { self.js.publish(marker(user), body).await?.await };
        self.caller.call("erasure_mark", publish).await?;
        Ok(())
    }

    /// The audit log's last sequence, asked now.
    pub(crate) async fn last_sequence(&self) -> Result<u64, EventError> {
        let mut stream = self.stream.get("events_info")?.clone();
        Ok(self.caller.call("events_info", stream.info()).await?.state.last_sequence)
    }

    /// Removes `user`'s events up to sequence `last` (included): the number removed.
    pub(crate) async fn erase_through(&self, user: &UserId, last: u64) -> Result<u64, EventError> {
        let stream = self.stream.get("events_purge")?;
        let purge = async { stream.purge().filter(format!("presence.*.{user}")).sequence(last + 1).await };
        Ok(self.caller.call("events_purge", purge).await?.purged)
    }

    /// Removes `user`'s events after sequence `after` that a change older than `revision` made
    /// (the writes an erasure at `revision` came after): the number removed. A later change's
    /// event stays. Read one by one from the stream's leader: after the erasure began there are
    /// few, and one deleted meanwhile is simply not found.
    pub(crate) async fn erase_older(
        &self,
        user: &UserId,
        after: u64,
        revision: u64,
    ) -> Result<u64, EventError> {
        let stream = self.stream.get("events_sweep")?;
        let filter = format!("presence.*.{user}");
        let mut next = after + 1;
        let mut removed = 0;
        loop {
            let read = async {
                match stream.get_first_raw_message_by_subject(&filter, next).await {
                    Ok(message) => Ok(Some(message)),
                    Err(e) if e.kind() == RawMessageErrorKind::NoMessageFound => Ok(None),
                    Err(e) => Err(e),
                }
            };
            let Some(message) = self.caller.call("events_sweep", read).await? else { return Ok(removed) };
            let event = serde_json::from_slice::<PresenceEvent>(&message.payload);
            if event.is_ok_and(|e| e.revision < revision) {
                self.remove(message.sequence).await?;
                removed += 1;
            }
            next = message.sequence + 1;
        }
    }

    /// Removes the event at `sequence` (gone already is as good).
    pub(crate) async fn remove(&self, sequence: u64) -> Result<(), EventError> {
        let stream = self.stream.get("events_delete")?;
        let delete = async {
            match stream.delete_message(sequence).await {
                Err(e) if matches!(e.kind(), DeleteMessageErrorKind::JetStream(j) if j.error_code() == ErrorCode::SEQUENCE_NOT_FOUND) => {
                    Ok(true)
                }
                done => done,
            }
        };
        self.caller.call("events_delete", delete).await?;
        Ok(())
    }
}
