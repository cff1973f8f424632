//! How each endpoint is doing, for `/health` and `/metrics`, and the one state every center node
//! shares: **disabled**. A disabled endpoint's consumers are paused in JetStream, with the reason
//! in their metadata, so the state holds at every center node and across restarts; its events
//! wait there. It is enabled again by a change of its `url` (at the next start) or by resuming its
//! consumers (`nats consumer resume`), which every node notices within [`CHECK_EVERY`].

use std::{
    collections::{BTreeMap, HashMap},
    sync::{Arc, Mutex},
    time::Duration,
};

use async_nats::jetstream::{self, consumer::pull};
use serde::{Deserialize, Serialize};
use tokio::sync::watch;
use utoipa::ToSchema;

use super::source::{Source, consumer_name};
use crate::{
    config::WebhookConfig,
    telemetry::{Metrics, metrics::EndpointLabels},
};

/// How often each endpoint's consumers are looked at.
pub(crate) const CHECK_EVERY: Duration = Duration::from_secs(2);

const REASON: &str = "presence_disabled_reason";
/// A digest of the url it was disabled for (a url may hold a key; NATS operators read metadata).
const URL: &str = "presence_disabled_url_sha256";

/// An endpoint in `/health`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, ToSchema)]
pub(crate) struct EndpointHealth {
    /// `delivering`, `retrying` (its last attempt failed; tried again by its schedule) or
    /// `disabled` (a 410, or failing past its schedule: nothing goes out until it is enabled).
    pub state: String,
    /// Events stored for it and not delivered yet, as of the last check (every 2 s).
    pub pending: u64,
    /// How long the oldest of them has waited, in seconds (0 when none).
    pub oldest_pending_seconds: f64,
    /// Why it was disabled (an answer's status, or the failure; never a secret).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub disabled_reason: Option<String>,
}

/// Every endpoint's state on this node.
#[derive(Default)]
pub(crate) struct Statuses {
    endpoints: Mutex<BTreeMap<String, EndpointHealth>>,
}

impl Statuses {
    pub(crate) fn report(&self) -> BTreeMap<String, EndpointHealth> {
        self.endpoints.lock().expect("webhook status lock").clone()
    }

    fn update(&self, name: &str, change: impl FnOnce(&mut EndpointHealth)) {
        let mut endpoints = self.endpoints.lock().expect("webhook status lock");
        change(endpoints.entry(name.to_string()).or_default());
    }
}

/// One endpoint's state, shared by its delivery loops and its monitor.
pub(crate) struct Shared {
    pub hook: WebhookConfig,
    pub statuses: Arc<Statuses>,
    pub metrics: Arc<Metrics>,
    /// Why it is disabled, if it is: the loops wait while it is.
    pub disabled: watch::Sender<Option<String>>,
    /// Which sources' last attempt failed.
    retrying: Mutex<HashMap<&'static str, bool>>,
}

impl Shared {
    pub(crate) fn new(hook: WebhookConfig, statuses: Arc<Statuses>, metrics: Arc<Metrics>) -> Arc<Self> {
        let shared = Arc::new(Self {
            hook,
            statuses,
            metrics,
            disabled: watch::Sender::new(None),
            retrying: Mutex::default(),
        });
        shared.show(None);
        shared
    }

    pub(crate) fn labels(&self) -> EndpointLabels {
        EndpointLabels { endpoint: self.hook.name.clone() }
    }

    /// The last attempt from `source` failed (`true`) or succeeded.
    pub(crate) fn retrying(&self, source: Source, failing: bool) {
        let name = if source == Source::Audit { "audit" } else { "notices" };
        let any = {
            let mut retrying = self.retrying.lock().expect("webhook retry lock");
            retrying.insert(name, failing);
            retrying.values().any(|r| *r)
        };
        let disabled = self.disabled.borrow().clone();
        self.statuses.update(&self.hook.name, |h| h.state = state(disabled.as_ref(), any).into());
    }

    /// Shows the endpoint disabled for `reason`, or enabled.
    fn show(&self, reason: Option<String>) {
        let retrying = self.retrying.lock().expect("webhook retry lock").values().any(|r| *r);
        self.metrics.webhooks.disabled.get_or_create(&self.labels()).set(i64::from(reason.is_some()));
        self.statuses.update(&self.hook.name, |h| {
            h.state = state(reason.as_ref(), retrying).into();
            h.disabled_reason = reason.clone();
        });
        self.disabled.send_if_modified(|now| {
            let changed = *now != reason;
            *now = reason;
            changed
        });
    }

    /// Disables the endpoint for `reason`: its consumers paused, at every node, until enabled.
    pub(crate) async fn disable(&self, js: &jetstream::Context, audit: &str, reason: String) {
        tracing::warn!(endpoint = %self.hook.name, reason = %reason, "webhook endpoint disabled");
        let until = time::OffsetDateTime::now_utc() + time::Duration::days(36500);
        for source in Source::of(&self.hook) {
            let mut config = source.config(&self.hook);
            config.metadata =
                HashMap::from([(REASON.into(), reason.clone()), (URL.into(), url_digest(&self.hook.url))]);
            let paused = async {
                let stream = js.get_stream(source.stream(audit)).await?;
                stream.update_consumer(config).await?;
                stream.pause_consumer(&consumer_name(&self.hook), until).await?;
                Ok::<_, async_nats::Error>(())
            };
            if let Err(e) = paused.await {
                tracing::warn!(endpoint = %self.hook.name, error = %e, "cannot pause a disabled endpoint's consumer; it will be tried again");
            }
        }
        // Shown once paused: a look at the consumers meanwhile would have shown it enabled.
        self.show(Some(reason));
    }

    /// At start: an endpoint disabled for another url than its configuration's now is enabled.
    pub(crate) async fn enable_if_moved(
        &self,
        js: &jetstream::Context,
        audit: &str,
    ) -> Result<(), async_nats::Error> {
        for source in Source::of(&self.hook) {
            let stream = js.get_stream(source.stream(audit)).await?;
            let info = stream.consumer_info(consumer_name(&self.hook)).await?;
            let moved = info.config.metadata.get(URL).is_some_and(|url| *url != url_digest(&self.hook.url));
            if info.paused && moved {
                tracing::info!(endpoint = %self.hook.name, "webhook endpoint enabled: its url changed since it was disabled");
                stream.update_consumer(source.config(&self.hook)).await?;
                stream.resume_consumer(&consumer_name(&self.hook)).await?;
            }
        }
        Ok(())
    }

    /// Looks at the endpoint's consumers every [`CHECK_EVERY`]: disabled or not, what waits.
    pub(crate) async fn monitor(self: Arc<Self>, js: jetstream::Context, audit: String) {
        loop {
            tokio::time::sleep(CHECK_EVERY).await;
            if let Err(e) = self.check(&js, &audit).await {
                tracing::debug!(endpoint = %self.hook.name, error = %e, "cannot look at a webhook endpoint's consumers");
            }
        }
    }

    /// Looks once: disabled or not (at every node), and what waits.
    pub(crate) async fn check(&self, js: &jetstream::Context, audit: &str) -> Result<(), async_nats::Error> {
        let (mut pending, mut oldest, mut reason) = (0, None, None);
        let now = time::OffsetDateTime::now_utc();
        for source in Source::of(&self.hook) {
            let stream = js.get_stream(source.stream(audit)).await?;
            let mut consumer: jetstream::consumer::Consumer<pull::Config> =
                stream.get_consumer(&consumer_name(&self.hook)).await?;
            let info = consumer.info().await?.clone();
            if info.paused {
                reason = Some(info.config.metadata.get(REASON).cloned().unwrap_or_else(|| "paused".into()));
            }
            pending += info.num_pending + info.num_ack_pending as u64;
            if info.num_pending + info.num_ack_pending as u64 == 0 {
                continue;
            }
            for subject in source.subjects() {
                let first =
                    stream.get_first_raw_message_by_subject(&subject, info.ack_floor.stream_sequence + 1);
                if let Ok(message) = first.await {
                    oldest = Some(oldest.map_or(message.time, |o: time::OffsetDateTime| o.min(message.time)));
                }
            }
        }
        let age = oldest.map_or(0.0, |t| (now - t).as_seconds_f64().max(0.0));
        let labels = self.labels();
        self.metrics.webhooks.pending.get_or_create(&labels).set(pending as i64);
        self.metrics.webhooks.oldest_pending.get_or_create(&labels).set(age);
        self.statuses.update(&self.hook.name, |h| (h.pending, h.oldest_pending_seconds) = (pending, age));
        if reason.is_none() && self.disabled.borrow().is_some() {
            tracing::info!(endpoint = %self.hook.name, "webhook endpoint enabled again");
        }
        self.show(reason);
        Ok(())
    }
}

fn url_digest(url: &str) -> String {
    hex::encode(ring::digest::digest(&ring::digest::SHA256, url.as_bytes()))
}

fn state(disabled: Option<&String>, retrying: bool) -> &'static str {
    match (disabled, retrying) {
        (Some(_), _) => "disabled",
        (None, true) => "retrying",
        (None, false) => "delivering",
    }
}
