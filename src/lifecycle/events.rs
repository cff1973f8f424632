//! Presence events on `presence.update.{user_id}` and `presence.expire.{user_id}`, and the
//! JetStream stream that keeps them as the audit log.
//!
//! Every event is one JSON schema, [`PresenceEvent`]: the presence after the change, the status
//! before it, the KV revision of the change (consumers order and de-duplicate by it), the node
//! that made it, the actor (the token's `sub`, or `system` for expiry) and a timestamp.

use std::time::Duration;

use async_nats::jetstream::{
    self,
    consumer::DeliverPolicy,
    message::PublishMessage,
    stream::{self, StorageType},
};
use chrono::{DateTime, Utc};
use futures::StreamExt;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::{
    model::{Presence, Status, UserId},
    telemetry::Metrics,
};

/// The actor of system-made changes (expiry).
pub const SYSTEM_ACTOR: &str = "system";

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum EventKind {
    Update,
    Expire,
}

/// One presence event, as published and as kept in the audit log.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct PresenceEvent {
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
    pub fn subject(&self) -> String {
        let kind = match self.kind {
            EventKind::Update => "update",
            EventKind::Expire => "expire",
        };
        format!("presence.{kind}.{}", self.user_id)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum EventError {
    #[error("NATS: {0}")]
    Nats(String),
    #[error("NATS did not answer within {0:?}")]
    Timeout(Duration),
}

/// Publishes events and reads or erases a user's history.
#[derive(Clone)]
pub struct Events {
    js: jetstream::Context,
    stream: stream::Stream,
    timeout: Duration,
}

impl Events {
    /// Creates (or updates) the audit-log stream.
    pub async fn open(
        js: jetstream::Context,
        name: &str,
        retention: Duration,
        replicas: usize,
        timeout: Duration,
    ) -> Result<Self, EventError> {
        let config = stream::Config {
            name: name.to_string(),
            description: Some("Presence audit log: every update and expire event".into()),
            subjects: vec!["presence.update.>".into(), "presence.expire.>".into()],
            storage: StorageType::File,
            max_age: retention,
            duplicate_window: Duration::from_secs(120),
            num_replicas: replicas,
            ..Default::default()
        };
        let stream = bounded(timeout, js.get_or_create_stream(config.clone())).await?;
        // Bring an existing stream's retention up to date.
        if stream.cached_info().config.max_age != retention {
            bounded(timeout, js.update_stream(config)).await?;
        }
        Ok(Self { js, stream, timeout })
    }

    /// Publishes `event` and, unless `wait` is false, waits for the stream's acknowledgement.
    /// `dedup` becomes the message id, so that a retried publish is stored once.
    pub async fn publish(&self, event: &PresenceEvent, dedup: Option<String>, wait: bool, metrics: &Metrics) {
        let payload = serde_json::to_vec(event).expect("events serialize");
        let mut publish = PublishMessage::build().payload(payload.into());
        if let Some(id) = dedup {
            publish = publish.message_id(id);
        }
        let sent = tokio::time::timeout(self.timeout, self.js.send_publish(event.subject(), publish)).await;
        let ack = match sent {
            Ok(Ok(ack)) => ack,
            Ok(Err(e)) => return failed(metrics, &event.user_id, &e.to_string()),
            Err(_) => return failed(metrics, &event.user_id, "publish timed out"),
        };
        let timeout = self.timeout;
        let user = event.user_id.clone();
        let confirm = async move {
            match tokio::time::timeout(timeout, ack).await {
                Ok(Ok(_)) => None,
                Ok(Err(e)) => Some(e.to_string()),
                Err(_) => Some("no acknowledgement".to_string()),
            }
        };
        if wait {
            if let Some(e) = confirm.await {
                failed(metrics, &user, &e);
            }
        } else {
            let failures = metrics.events_failed.clone();
            tokio::spawn(async move {
                if let Some(e) = confirm.await {
                    failures.inc();
                    tracing::warn!(user = %user, error = %e, "audit log did not confirm an event");
                }
            });
        }
    }

    /// The newest `limit` events of `user`, newest first.
    pub async fn history(&self, user: &UserId, limit: usize) -> Result<Vec<PresenceEvent>, EventError> {
        let config = jetstream::consumer::push::OrderedConfig {
            deliver_subject: self.js.client().new_inbox(),
            filter_subjects: vec![format!("presence.update.{user}"), format!("presence.expire.{user}")],
            deliver_policy: DeliverPolicy::All,
            ..Default::default()
        };
        let mut consumer = bounded(self.timeout, self.stream.create_consumer(config)).await?;
        let pending = bounded(self.timeout, consumer.info()).await?.num_pending as usize;
        let mut newest = std::collections::VecDeque::with_capacity(limit.min(pending));
        if pending > 0 {
            let mut messages = bounded(self.timeout, consumer.messages()).await?;
            let mut seen = 0;
            while seen < pending {
                let next = tokio::time::timeout(self.timeout, messages.next()).await;
                let Ok(Some(Ok(message))) = next else {
                    return Err(EventError::Nats("history read was cut short".into()));
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

    /// Removes every event of `user` from the audit log.
    pub async fn erase(&self, user: &UserId) -> Result<u64, EventError> {
        let purged =
            bounded(self.timeout, async { self.stream.purge().filter(format!("presence.*.{user}")).await })
                .await?;
        Ok(purged.purged)
    }
}

fn failed(metrics: &Metrics, user: &str, error: &str) {
    metrics.events_failed.inc();
    tracing::warn!(user, error, "could not publish a presence event");
}

async fn bounded<T, E: std::fmt::Display>(
    limit: Duration,
    fut: impl Future<Output = Result<T, E>>,
) -> Result<T, EventError> {
    match tokio::time::timeout(limit, fut).await {
        Ok(result) => result.map_err(|e| EventError::Nats(e.to_string())),
        Err(_) => Err(EventError::Timeout(limit)),
    }
}
