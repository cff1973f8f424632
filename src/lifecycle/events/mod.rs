//! Presence events on `presence.update.{user_id}` and `presence.expire.{user_id}`, and the
//! JetStream stream that keeps them as the audit log.
//!
//! Every event is one JSON schema, [`PresenceEvent`]: the presence after the change, the status
//! before it, the KV revision of the change (consumers order and de-duplicate by it), the node
//! that made it, the actor (the token's `sub`, or `system` for expiry) and a timestamp.
//!
//! The stream also keeps the marker each erasure leaves on `presence.erased.user.{user_id}`
//! ([`erase`]), which lets a write's event be stored only if its user was never erased.

mod erase;
mod history;
mod latest;
mod notice;

pub(crate) use notice::{NOTICE_SUBJECTS, erased as erased_notice, notices_stream, room_notice, user_notice};

use std::{sync::Arc, time::Duration};

use async_nats::{
    HeaderMap, HeaderValue, header,
    jetstream::{
        self,
        stream::{self, StorageType},
    },
};
use bytes::Bytes;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::{
    model::{Presence, Status},
    nats::{
        self, Binding, CallError, Caller, Placement, ScanError, retry_for,
        settings::{Authority, SettingsError, SharedStream},
    },
    telemetry::{Metrics, chain},
};

/// How long an event that the audit log did not confirm is sent again.
pub(crate) const RETRY_FOR: Duration = Duration::from_secs(30);

/// The subjects of the audit log: the two kinds of event, and the erasures' markers.
const SUBJECTS: [&str; 3] = ["presence.update.>", "presence.expire.>", "presence.erased.>"];

/// The shortest retention under which a stored event relies on the erasures' markers (see
/// [`Events::publish_unless`]): a marker must outlive by far every write that was under way when
/// it was left, so that none can miss it. Under a shorter one every event is checked after it is
/// stored, as the bucket stands.
const MARKERS_KEPT_FOR: Duration = Duration::from_secs(600);

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
    #[error(transparent)]
    Scan(#[from] ScanError),
}

/// Publishes events and reads or erases a user's history.
#[derive(Clone)]
pub(crate) struct Events {
    js: jetstream::Context,
    /// The context's client, which publishes the events ([`nats::acked`]).
    client: async_nats::Client,
    /// The audit-log stream, once reached (a leaf may start before its center answers; events
    /// are published to their subjects all the same, and the center's stream stores them).
    stream: Arc<Binding<stream::Stream>>,
    /// The notices stream, on a center with webhooks (see [`notice`]).
    notices: Arc<Binding<stream::Stream>>,
    caller: Caller,
    metrics: Arc<Metrics>,
}

/// What became of an event sent on condition that its user was never erased.
enum Sent {
    /// Stored, at this sequence.
    Stored(u64),
    /// Refused: the audit log holds a marker of an erasure of the user. Nothing was stored.
    Marked,
    /// Not confirmed: sent again in the background (without the condition).
    Later,
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
        let (stream, notices) = (Arc::new(Binding::unbound()), Arc::new(Binding::unbound()));
        Self { client: js.client(), js, stream, notices, caller, metrics }
    }

    /// Binds to the audit-log stream, creating (or updating) it with [`Authority::Manage`].
    pub(crate) async fn bind(&self, settings: &StreamSettings<'_>) -> Result<(), EventError> {
        let (js, caller) = (&self.js, &self.caller);
        let StreamSettings { name, retention, replicas, max_per_user, authority } = *settings;
        let config = stream::Config {
            name: name.to_string(),
            description: Some("Presence audit log: every update and expire event".into()),
            subjects: SUBJECTS.map(String::from).to_vec(),
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
            Some(current) => {
                let stream = caller.bounded("stream_open", js.get_stream(name)).await?;
                // A stream made before the erasures' markers takes their subject from now on.
                let stale = current != wanted || !takes_markers(&stream.cached_info().config);
                if authority != Authority::Bind && stale {
                    caller.bounded("stream_update", js.update_stream(config)).await?;
                    caller.bounded("stream_open", js.get_stream(name)).await?
                } else {
                    stream
                }
            }
        };
        self.stream.bind(stream);
        Ok(())
    }

    /// Publishes `event` under the message id `id` and waits until the audit log stored it. If
    /// that fails, the same message is sent again in the background for a while (JetStream
    /// stores it once, however often it arrives within its duplicate window). The event's
    /// sequence in the audit log, if it was stored before this returned.
    pub(crate) async fn publish(&self, event: &PresenceEvent, id: String) -> Option<u64> {
        match self.publish_if(event, &id, false).await {
            Sent::Stored(sequence) => Some(sequence),
            Sent::Marked | Sent::Later => None,
        }
    }

    /// [`Events::publish`]; with `unmarked`, on condition that the audit log holds no erasure
    /// marker of the event's user (a send again in the background goes without it).
    async fn publish_if(&self, event: &PresenceEvent, id: &str, unmarked: bool) -> Sent {
        let payload = Bytes::from(serde_json::to_vec(event).expect("events serialize"));
        let subject = event.subject();
        let marker = unmarked.then(|| erase::marker(&event.user_id));
        let e = match self.send(&subject, &payload, id, marker.as_deref()).await {
            Ok(Some(sequence)) => return Sent::Stored(sequence),
            Ok(None) => return Sent::Marked,
            Err(e) => e,
        };
        tracing::warn!(user = %event.user_id, error = %chain(&e), "presence event not stored yet; retrying");
        let (this, user, id) = (self.clone(), event.user_id.clone(), id.to_string());
        tokio::spawn(async move {
            if retry_for(RETRY_FOR, || this.send(&subject, &payload, &id, None)).await.is_none() {
                this.metrics.events_failed.inc();
                tracing::error!(user = %user, id = %id, "presence event lost: the audit log did not store it");
            }
        });
        Sent::Later
    }

    /// Stores one event: its sequence in the audit log. With `unmarked` (a marker's subject), on
    /// condition that the audit log holds no message on that subject: `None` if it holds one.
    async fn send(
        &self,
        subject: &str,
        payload: &Bytes,
        id: &str,
        unmarked: Option<&str>,
    ) -> Result<Option<u64>, CallError> {
        let mut headers = HeaderMap::new();
        headers.insert(header::NATS_MESSAGE_ID, id);
        if let Some(marker) = unmarked {
            headers.insert(header::NATS_EXPECTED_LAST_SUBJECT_SEQUENCE, HeaderValue::from(0u64));
            headers.insert("Nats-Expected-Last-Subject-Sequence-Subject", marker);
        }
        let stored = async {
            match nats::acked(&self.client, subject.to_string(), headers, payload.clone()).await {
                Err(e) if unmarked.is_some() && nats::wrong_last_sequence(&e) => Ok(None),
                done => done.map(Some),
            }
        };
        self.caller.bounded("publish", stored).await
    }

    /// Whether events may be stored on condition that their user was never erased (see
    /// [`Events::publish_unless`]): the bound audit log keeps the erasures' markers.
    fn marked(&self) -> bool {
        self.stream.get("publish").is_ok_and(|stream| keeps_markers(&stream.cached_info().config))
    }

    /// The audit log's leader and replicas, from a fresh stream-info request.
    pub(crate) async fn placement(&self) -> Result<Option<Placement>, EventError> {
        let mut stream = self.stream.get("events_info")?.clone();
        let info = self.caller.bounded("events_info", stream.info()).await?;
        Ok(Placement::of(info.cluster.as_ref()))
    }
}

/// Whether a stream's subjects take the erasures' markers.
fn takes_markers(config: &stream::Config) -> bool {
    config.subjects.iter().any(|s| s == SUBJECTS[2])
}

/// Whether a stream keeps the erasures' markers long enough for events to rely on them: it takes
/// their subject, keeps messages at least [`MARKERS_KEPT_FOR`], and drops them for no other
/// reason than their age and the newest per subject (no limit on the whole stream's messages or
/// bytes, which someone managing the stream by hand could set: it would drop markers early).
fn keeps_markers(config: &stream::Config) -> bool {
    let age = config.max_age.is_zero() || config.max_age >= MARKERS_KEPT_FOR;
    takes_markers(config) && age && config.max_messages <= 0 && config.max_bytes <= 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_rely_on_markers_only_where_the_stream_keeps_them() {
        let config = |adjust: fn(&mut stream::Config)| {
            let mut c = stream::Config {
                subjects: SUBJECTS.map(String::from).to_vec(),
                max_age: Duration::from_secs(30 * 86_400),
                max_messages: -1,
                max_bytes: -1,
                ..Default::default()
            };
            adjust(&mut c);
            keeps_markers(&c)
        };
        assert!(config(|_| {}));
        assert!(config(|c| c.max_age = Duration::ZERO), "no limit of age");
        assert!(config(|c| c.max_age = MARKERS_KEPT_FOR));
        assert!(!config(|c| c.max_age = MARKERS_KEPT_FOR - Duration::from_secs(1)));
        assert!(!config(|c| c.subjects.truncate(2)), "a stream made before the markers");
        assert!(!config(|c| c.max_messages = 1_000_000), "a limit on the whole stream drops markers early");
        assert!(!config(|c| c.max_bytes = 1 << 30));
    }
}
