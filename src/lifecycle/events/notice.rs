//! Notices: what only the webhooks hear of, kept in a stream of their own beside the audit log
//! (`{events.stream}_NOTICES`, subjects `presence.notice.>`, made by the center when an endpoint
//! is configured): an erasure (`presence.notice.user.{user}`), and the rooms' comings and goings
//! that the center's nodes see in the records (a user's on `presence.notice.user.{user}`, a room's
//! on `presence.notice.room.{room}`). A notice's id is derived from the change that made it, so
//! that every center node publishing the same one stores it once (the duplicate window).

use std::time::Duration;

use async_nats::{
    HeaderMap, header,
    jetstream::stream::{self, StorageType},
};
use bytes::Bytes;

use super::{EventError, Events, RETRY_FOR};
use crate::nats::{self, retry_for};

/// Every notice's subject.
pub(crate) const NOTICE_SUBJECTS: &str = "presence.notice.>";

/// Where a notice about `user` goes.
pub(crate) fn user_notice(user: &str) -> String {
    format!("presence.notice.user.{user}")
}

/// Where a notice about `room` (and nobody in it) goes.
pub(crate) fn room_notice(room: &str) -> String {
    format!("presence.notice.room.{room}")
}

/// The notices stream's name beside the audit log `events`.
pub(crate) fn notices_stream(events: &str) -> String {
    format!("{events}_NOTICES")
}

impl Events {
    /// Creates (or updates) the notices stream beside the audit log, kept as long and on as many
    /// replicas, and binds to it: from now on erasures are told of.
    pub(crate) async fn bind_notices(
        &self,
        audit: &str,
        (retention, replicas): (Duration, usize),
    ) -> Result<(), EventError> {
        let config = stream::Config {
            name: notices_stream(audit),
            description: Some("Presence notices for webhooks: erasures, rooms' comings and goings".into()),
            subjects: vec![NOTICE_SUBJECTS.into()],
            storage: StorageType::File,
            max_age: retention,
            duplicate_window: Duration::from_secs(120),
            num_replicas: replicas,
            ..Default::default()
        };
        let name = config.name.clone();
        self.caller.bounded("notices_create", self.js.create_or_update_stream(config)).await?;
        self.notices.bind(self.caller.bounded("notices_open", self.js.get_stream(&name)).await?);
        Ok(())
    }

    /// Stores a notice under the id `id`, trying for a while (a lost one is logged and counted).
    /// Nothing when no endpoint is configured (the stream was never made).
    pub(crate) async fn notice(&self, subject: String, id: String, body: Bytes) {
        if !self.notices.is_bound() {
            return;
        }
        let send = || async {
            let mut headers = HeaderMap::new();
            headers.insert(header::NATS_MESSAGE_ID, id.as_str());
            let stored = nats::acked(&self.client, subject.clone(), headers, body.clone());
            self.caller.bounded("notice", stored).await.map(drop)
        };
        if send().await.is_err() && retry_for(RETRY_FOR, send).await.is_none() {
            self.metrics.events_failed.inc();
            tracing::error!(id = %id, "webhook notice lost: its stream did not store it");
        }
    }

    /// Removes every notice about `user` (an erasure): the number removed.
    pub(crate) async fn erase_notices(&self, user: &str) -> Result<u64, EventError> {
        let Ok(stream) = self.notices.get("notices_purge") else { return Ok(0) };
        let purge = async { stream.purge().filter(user_notice(user)).await };
        Ok(self.caller.call("notices_purge", purge).await?.purged)
    }
}

/// The notice of `user`'s erasure at `revision` on node `node`: subject, id, body.
pub(crate) fn erased(user: &str, revision: u64, node: &str) -> (String, String, Bytes) {
    let body = serde_json::json!({
        "type": "presence.erased",
        "timestamp": crate::model::millis(&chrono::Utc::now()),
        "data": {"user_id": user, "revision": revision, "node_id": node},
    });
    (user_notice(user), format!("erased-{user}-{revision}"), Bytes::from(body.to_string()))
}
