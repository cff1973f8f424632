//! Presence events on `presence.update.{user_id}` and `presence.expire.{user_id}`, and the
//! JetStream stream that keeps them as the audit log.
//!
//! Every event is one JSON schema, [`PresenceEvent`]: the presence after the change, the status
//! before it, the KV revision of the change (consumers order and de-duplicate by it), the node
//! that made it, the actor (the token's `sub`, or `system` for expiry) and a timestamp.

use std::{sync::Arc, time::Duration};

use async_nats::jetstream::{
    self,
    consumer::DeliverPolicy,
    message::PublishMessage,
    stream::{self, StorageType},
};
use bytes::Bytes;
use chrono::{DateTime, Utc};
use futures::StreamExt;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::{
    model::{Presence, Status, UserId},
    nats::{
        self, Binding, CallError, Caller, Placement, retry_for,
        settings::{Authority, SettingsError, SharedStream},
    },
    telemetry::{Metrics, chain},
};

/// How long an event that the audit log did not confirm is sent again.
const RETRY_FOR: Duration = Duration::from_secs(30);

/// The actor of system-made changes (expiry).
pub(crate) const SYSTEM_ACTOR: &str = "system";

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub(crate) enum EventKind {
    Update,
    Expire,
}

/// One presence event, as published and as kept in the audit log.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub(crate) struct PresenceEvent {
    pub kind: EventKind,
    pub user_id: String,
    /// The presence after the change.
    pub presence: Presence<'static>,
    /// The status before the change, as this node knew it; absent when it knew none.
    pub previous_status: Option<Status>,
    /// The KV revision the change produced.
    pub revision: u64,
    /// The node that made the change.
    pub node_id: String,
    /// The token's `sub` for a write, `system` for an expiry.
    pub actor: String,
    #[schema(value_type = String, format = DateTime)]
    #[serde(serialize_with = "crate::model::rfc3339_millis")]
    pub timestamp: DateTime<Utc>,
}

impl PresenceEvent {
    pub(crate) fn subject(&self) -> String {
        let kind = match self.kind {
            EventKind::Update => "update",
            EventKind::Expire => "expire",
        };
        format!("presence.{kind}.{}", self.user_id)
    }
}

#[derive(Debug, thiserror::Error)]
pub(crate) enum EventError {
    #[error(transparent)]
    Call(#[from] CallError),
    #[error(transparent)]
    Settings(#[from] SettingsError),
    #[error("the history read was cut short after {read} of {pending} events")]
    CutShort { read: usize, pending: usize },
}

/// Publishes events and reads or erases a user's history.
#[derive(Clone)]
pub(crate) struct Events {
    js: jetstream::Context,
    /// The audit-log stream, once reached (a leaf may start before its center answers; events
    /// are published to their subjects all the same, and the center's stream stores them).
    stream: Arc<Binding<stream::Stream>>,
    caller: Caller,
    metrics: Arc<Metrics>,
}

/// The audit-log stream's settings, and who may change them.
pub(crate) struct StreamSettings<'a> {
    pub name: &'a str,
    pub retention: Duration,
    pub replicas: usize,
    /// The newest events of each kind kept per user.
    pub max_per_user: u32,
    pub authority: Authority,
}

impl Events {
    /// A handle on the audit log, bound to its stream by [`Events::bind`].
    pub(crate) fn unbound(js: jetstream::Context, caller: Caller, metrics: Arc<Metrics>) -> Self {
        Self { js, stream: Arc::new(Binding::unbound()), caller, metrics }
    }

    /// Binds to the audit-log stream, creating (or updating) it with [`Authority::Manage`].
    pub(crate) async fn bind(&self, settings: &StreamSettings<'_>) -> Result<(), EventError> {
        let (js, caller) = (&self.js, &self.caller);
        let StreamSettings { name, retention, replicas, max_per_user, authority } = *settings;
        let config = stream::Config {
            name: name.to_string(),
            description: Some("Presence audit log: every update and expire event".into()),
            subjects: vec!["presence.update.>".into(), "presence.expire.>".into()],
            storage: StorageType::File,
            max_age: retention,
            duplicate_window: Duration::from_secs(120),
            num_replicas: replicas,
            max_messages_per_subject: i64::from(max_per_user),
            ..Default::default()
        };
        let wanted = SharedStream { replicas, retention, per_subject: i64::from(max_per_user) };
        let existing = nats::settings::check(js, caller, name, authority, wanted).await?;
        let stream = match existing {
            None => caller.bounded("stream_create", js.create_stream(config)).await?,
            Some(current) if authority != Authority::Bind && current != wanted => {
                caller.bounded("stream_update", js.update_stream(config)).await?;
                caller.bounded("stream_open", js.get_stream(name)).await?
            }
            Some(_) => caller.bounded("stream_open", js.get_stream(name)).await?,
        };
        self.stream.bind(stream);
        Ok(())
    }

    /// Publishes `event` under the message id `id` and waits until the audit log stored it. If
    /// that fails, the same message is sent again in the background for a while (JetStream
    /// stores it once, however often it arrives within its duplicate window).
    pub(crate) async fn publish(&self, event: &PresenceEvent, id: String) {
        let payload = Bytes::from(serde_json::to_vec(event).expect("events serialize"));
        let subject = event.subject();
        let Err(e) = self.send(&subject, &payload, &id).await else { return };
        tracing::warn!(user = %event.user_id, error = %chain(&e), "presence event not stored yet; retrying");
        let this = self.clone();
        let user = event.user_id.clone();
        tokio::spawn(async move {
            if retry_for(RETRY_FOR, || this.send(&subject, &payload, &id)).await.is_none() {
                this.metrics.events_failed.inc();
                tracing::error!(user = %user, id = %id, "presence event lost: the audit log did not store it");
            }
        });
    }

    async fn send(&self, subject: &str, payload: &Bytes, id: &str) -> Result<(), CallError> {
        let message = PublishMessage::build().payload(payload.clone()).message_id(id);
        let ack = self.caller.bounded("publish", self.js.send_publish(subject.to_string(), message)).await?;
        self.caller.bounded("publish_ack", ack).await?;
        Ok(())
    }

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

    /// The audit log's leader and replicas, from a fresh stream-info request.
    pub(crate) async fn placement(&self) -> Result<Option<Placement>, EventError> {
        let mut stream = self.stream.get("events_info")?.clone();
        let info = self.caller.bounded("events_info", stream.info()).await?;
        Ok(Placement::of(info.cluster.as_ref()))
    }

    /// Removes every event of `user` from the audit log.
    pub(crate) async fn erase(&self, user: &UserId) -> Result<u64, EventError> {
        let stream = self.stream.get("events_purge")?;
        let purge = async { stream.purge().filter(format!("presence.*.{user}")).await };
        Ok(self.caller.call("events_purge", purge).await?.purged)
    }
}
