//! Where an endpoint's events come from: the audit log (`presence.changed`, `presence.expired`,
//! made from its events by [`of_audit`]) and the notices stream (`presence.erased` and the room
//! events, stored whole). Each endpoint has one durable consumer on each it hears of,
//! `webhook-{name}`, shared by every center node.

use std::time::Duration;

use async_nats::jetstream::{
    self,
    consumer::{AckPolicy, Consumer, DeliverPolicy, pull},
};
use serde_json::Value;

use super::{event::Event, event::of_audit, send::TIMEOUT};
use crate::{
    config::{WEBHOOK_EVENTS, WebhookConfig},
    lifecycle::{NOTICE_SUBJECTS, notices_stream},
};

/// One of the two streams.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Source {
    Audit,
    Notices,
}

impl Source {
    /// The sources an endpoint needs, by the events it hears.
    pub(crate) fn of(hook: &WebhookConfig) -> Vec<Self> {
        let audit = ["presence.changed", "presence.expired"].iter().any(|e| hook.hears(e));
        let notices = WEBHOOK_EVENTS
            .iter()
            .filter(|e| e.starts_with("room.") || **e == "presence.erased")
            .any(|e| hook.hears(e));
        [(audit, Self::Audit), (notices, Self::Notices)]
            .into_iter()
            .filter(|(on, _)| *on)
            .map(|(_, s)| s)
            .collect()
    }

    /// The stream's name, beside the audit log `audit`.
    pub(crate) fn stream(self, audit: &str) -> String {
        match self {
            Self::Audit => audit.to_string(),
            Self::Notices => notices_stream(audit),
        }
    }

    /// The subjects the consumer reads.
    pub(crate) fn subjects(self) -> Vec<String> {
        match self {
            Self::Audit => vec!["presence.update.>".into(), "presence.expire.>".into()],
            Self::Notices => vec![NOTICE_SUBJECTS.into()],
        }
    }

    /// The endpoint's consumer: `max_ack_pending` leaves room for a whole batch and the next.
    pub(crate) fn config(self, hook: &WebhookConfig) -> pull::Config {
        let batch = hook.batch.map_or(1, |b| b.max_events);
        pull::Config {
            durable_name: Some(consumer_name(hook)),
            description: Some(format!("Presence webhook endpoint {}", hook.name)),
            filter_subjects: self.subjects(),
            ack_policy: AckPolicy::Explicit,
            ack_wait: TIMEOUT + Duration::from_secs(15),
            deliver_policy: DeliverPolicy::New,
            max_ack_pending: (2 * batch).max(64) as i64,
            ..Default::default()
        }
    }

    /// The consumer, made if it is not there.
    pub(crate) async fn consumer(
        self,
        js: &jetstream::Context,
        audit: &str,
        hook: &WebhookConfig,
    ) -> Result<Consumer<pull::Config>, async_nats::Error> {
        let stream = js.get_stream(self.stream(audit)).await?;
        Ok(stream.get_or_create_consumer(&consumer_name(hook), self.config(hook)).await?)
    }

    /// At start: the consumer made, or brought to the endpoint's configuration now (a batch
    /// size changed since), keeping whether it is paused and why.
    pub(crate) async fn configure(
        self,
        js: &jetstream::Context,
        audit: &str,
        hook: &WebhookConfig,
    ) -> Result<(), async_nats::Error> {
        let mut consumer = self.consumer(js, audit, hook).await?;
        let current = consumer.info().await?.config.clone();
        let mut wanted = self.config(hook);
        if (current.max_ack_pending, current.ack_wait) != (wanted.max_ack_pending, wanted.ack_wait) {
            (wanted.pause_until, wanted.metadata) = (current.pause_until, current.metadata);
            let stream = js.get_stream(self.stream(audit)).await?;
            stream.update_consumer(wanted).await?;
            // An update may not keep a pause (the server takes a pause from its own request).
            if let Some(until) = current.pause_until.filter(|u| *u > time::OffsetDateTime::now_utc()) {
                stream.pause_consumer(&consumer_name(hook), until).await?;
            }
        }
        Ok(())
    }

    /// The event a stored message makes, if any.
    pub(crate) fn event(self, payload: &[u8]) -> Option<Event> {
        match self {
            Self::Audit => of_audit(payload),
            Self::Notices => {
                let body: Value = serde_json::from_slice(payload).ok()?;
                let kind = body["type"].as_str()?.to_string();
                let text = |key: &str| body["data"][key].as_str().map(String::from);
                Some(Event { kind, user: text("user_id"), room: text("room_id"), body })
            }
        }
    }
}

/// An endpoint's consumer's name, on either stream.
pub(crate) fn consumer_name(hook: &WebhookConfig) -> String {
    format!("webhook-{}", hook.name)
}
