//! A user's history: the newest events of one user, read with an ordered consumer that is
//! deleted after the read.

use std::collections::VecDeque;

use async_nats::jetstream::consumer::DeliverPolicy;

use super::{EventError, Events, PresenceEvent};
use crate::{model::UserId, nats::Scan};

impl Events {
    /// The newest `limit` events of `user`, newest first. The stream keeps at most
    /// `events.max_per_user` events of each kind per user, which bounds the read; it must end
    /// within twice the request timeout.
    pub(crate) async fn history(
        &self,
        user: &UserId,
        limit: usize,
    ) -> Result<Vec<PresenceEvent>, EventError> {
        let scan = Scan {
            op: "history",
            inbox: self.js.client().new_inbox(),
            subjects: vec![format!("presence.update.{user}"), format!("presence.expire.{user}")],
            from: DeliverPolicy::All,
            within: self.caller.timeout() * 2,
            for_client: true,
        };
        let stream = self.stream.get("history_consumer")?;
        let mut newest = VecDeque::with_capacity(limit.min(64));
        scan.run(&self.caller, stream, |message| {
            match serde_json::from_slice::<PresenceEvent>(&message.payload) {
                Ok(event) => {
                    if newest.len() == limit {
                        newest.pop_front();
                    }
                    newest.push_back(event);
                }
                Err(e) => tracing::warn!(error = %e, "an audit-log message does not decode; skipped"),
            }
        })
        .await?;
        Ok(newest.into_iter().rev().collect())
    }
}
