//! What the audit log last said: a user's newest event, when the newest event was stored, and
//! an event stored unless the user was erased after the change it tells of.

use chrono::{DateTime, Utc};

use super::{EventError, Events, PresenceEvent, Sent};
use crate::{model::UserId, nats::last_on, store::PresenceStore, telemetry::chain};

impl Events {
    /// `user`'s newest event of either kind (by revision), asked of the stream's leader.
    pub(crate) async fn latest(&self, user: &UserId) -> Result<Option<PresenceEvent>, EventError> {
        let (update, expire) = tokio::try_join!(
            self.last_on(format!("presence.update.{user}")),
            self.last_on(format!("presence.expire.{user}"))
        )?;
        Ok(update.into_iter().chain(expire).max_by_key(|e| e.revision))
    }

    async fn last_on(&self, subject: String) -> Result<Option<PresenceEvent>, EventError> {
        let stream = self.stream.get("events_last")?;
        let last = last_on(stream, &subject);
        let Some(message) = self.caller.bounded("events_last", last).await? else { return Ok(None) };
        Ok(serde_json::from_slice(&message.payload).ok())
    }

    /// When the audit log's newest event was stored (none while it is empty).
    pub(crate) async fn last_stored_at(&self) -> Result<Option<DateTime<Utc>>, EventError> {
        let mut stream = self.stream.get("events_info")?.clone();
        let state = self.caller.bounded("events_info", stream.info()).await?.state.clone();
        let nanos = state.last_timestamp.unix_timestamp_nanos();
        Ok((state.messages > 0).then(|| DateTime::from_timestamp_nanos(nanos as i64)))
    }

    /// Stores `event` (see [`Events::publish`]); then, if `user`'s record was purged after the
    /// change it tells of, removes it again: an erasure that came after the change may have swept
    /// the audit log before this event was stored. The event's sequence, if it was stored now.
    pub(crate) async fn publish_unless_erased(
        &self,
        event: &PresenceEvent,
        id: String,
        (user, store): (&str, &PresenceStore),
    ) -> Option<u64> {
        let erased = async || store.erased_since(user, event.revision).await.unwrap_or(false);
        self.publish_unless(event, id, user, erased).await
    }

    /// [`Events::publish_unless_erased`], with `erased` saying, once the event is stored, whether
    /// the record was purged or deleted after the change (as the leader would say at a moment
    /// after the event was stored).
    ///
    /// The event is first sent on condition that the audit log holds no marker of an erasure of
    /// `user`; stored so, nothing is left to ask. Every erasure leaves its marker after its purge
    /// and before it sweeps the audit log, so an erasure that purged this change either left its
    /// marker before the event was stored (then the event is refused) or sweeps after it was
    /// stored (then the sweep removes it). Refused (the user was erased once, within the audit
    /// log's retention), it is stored without the condition and `erased` decides.
    pub(crate) async fn publish_unless(
        &self,
        event: &PresenceEvent,
        id: String,
        user: &str,
        erased: impl AsyncFnOnce() -> bool,
    ) -> Option<u64> {
        if self.marked() {
            match self.publish_if(event, &id, true).await {
                Sent::Stored(sequence) => return Some(sequence),
                Sent::Later => return None,
                Sent::Marked => {}
            }
        }
        let sequence = self.publish(event, id).await?;
        if erased().await
            && let Err(e) = self.remove(sequence).await
        {
            tracing::warn!(user = %user, error = %chain(&e), "the event of an erased write remains until the sweep");
        }
        Some(sequence)
    }
}
