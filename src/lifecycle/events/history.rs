//! A user's history: the newest events of one user, read with an ordered consumer that is
//! deleted after the read.

use async_nats::jetstream::{self, consumer::DeliverPolicy};
use futures::StreamExt;

use super::{EventError, Events, PresenceEvent};
use crate::model::UserId;

impl Events {
    /// The newest `limit` events of `user`, newest first.
    pub(crate) async fn history(
        &self,
        user: &UserId,
        limit: usize,
    ) -> Result<Vec<PresenceEvent>, EventError> {
        let config = jetstream::consumer::push::OrderedConfig {
            deliver_subject: self.js.client().new_inbox(),
            filter_subjects: vec![format!("presence.update.{user}"), format!("presence.expire.{user}")],
            deliver_policy: DeliverPolicy::All,
            ..Default::default()
        };
        let caller = &self.caller;
        let stream = self.stream.get("history_consumer")?;
        let consumer = caller.call_read("history_consumer", stream.create_consumer(config)).await?;
        let name = consumer.cached_info().name.clone();
        let read = self.newest(consumer, limit).await;
        // Not left behind for the server to time out: one consumer per history read would pile up.
        let _ = caller.bounded("history_cleanup", stream.delete_consumer(&name)).await;
        read
    }

    /// Reads the consumer to its end, keeping the newest `limit` events, within a deadline of
    /// twice the request timeout. The stream keeps at most `events.max_per_user` events of each
    /// kind per user, which bounds the read.
    async fn newest(
        &self,
        mut consumer: jetstream::consumer::Consumer<jetstream::consumer::push::OrderedConfig>,
        limit: usize,
    ) -> Result<Vec<PresenceEvent>, EventError> {
        let caller = &self.caller;
        let deadline = tokio::time::Instant::now() + caller.timeout() * 2;
        let pending = caller.call_read("history_info", consumer.info()).await?.num_pending as usize;
        let mut newest = std::collections::VecDeque::with_capacity(limit.min(pending));
        if pending > 0 {
            let mut messages = caller.call_read("history_messages", consumer.messages()).await?;
            let mut seen = 0;
            while seen < pending {
                let next = tokio::time::timeout_at(deadline, messages.next()).await;
                let Ok(Some(Ok(message))) = next else {
                    return Err(EventError::CutShort { read: seen, pending });
                };
                seen += 1;
                match serde_json::from_slice::<PresenceEvent>(&message.payload) {
                    Ok(event) => {
                        if newest.len() == limit {
                            newest.pop_front();
                        }
                        newest.push_back(event);
                    }
                    Err(e) => tracing::warn!(error = %e, "an audit-log message does not decode; skipped"),
                }
            }
        }
        Ok(newest.into_iter().rev().collect())
    }
}
