//! Delivery from the audit log, at least once, from one place: on center nodes only, one durable
//! JetStream consumer per endpoint (`webhook-{name}`, shared by every center node, so each event
//! goes out from one of them), acknowledged only after a 2xx. A failure is tried again after the
//! endpoint's schedule (with ±10 % jitter; `Retry-After` when longer); a 410, or a failure past
//! the schedule, disables the endpoint until the node restarts. Each request's `webhook-id` is the
//! audit event's own id, the same on every attempt and at every node.

use std::{sync::Arc, time::Duration};

use async_nats::jetstream::{
    self, AckKind,
    consumer::{AckPolicy, DeliverPolicy, pull},
};
use futures::StreamExt;
use tokio_util::sync::CancellationToken;

use super::{Endpoint, event::of_audit, send::TIMEOUT};
use crate::{
    config::WebhookConfig,
    model::room_matches,
    telemetry::{Metrics, metrics::EndpointLabels},
};

/// How long a center waits before it reaches for the audit log again after failing to.
const AGAIN_AFTER: Duration = Duration::from_secs(1);

/// One endpoint's delivery.
struct Delivery {
    endpoint: Endpoint,
    config: WebhookConfig,
    schedule: Vec<Duration>,
    metrics: Arc<Metrics>,
}

/// What became of one event.
enum Outcome {
    Delivered,
    /// Tried again after this long.
    Again(Duration),
    /// The endpoint is disabled: this reason.
    Disabled(String),
}

/// Delivers every endpoint's events until `stop`. Each endpoint's consumer exists when this
/// returns: an event stored from then on reaches it.
pub(crate) async fn start(
    tasks: &mut tokio::task::JoinSet<()>,
    hooks: &[WebhookConfig],
    (js, stream): (jetstream::Context, String),
    metrics: &Arc<Metrics>,
    stop: &CancellationToken,
) -> anyhow::Result<()> {
    for hook in hooks {
        let delivery = Delivery {
            endpoint: Endpoint::new(hook)?,
            config: hook.clone(),
            schedule: hook.schedule(),
            metrics: metrics.clone(),
        };
        delivery.metrics.webhooks.disabled.get_or_create(&delivery.labels()).set(0);
        delivery.consumer(&js, &stream).await.map_err(|e| anyhow::anyhow!("webhook {}: {e}", hook.name))?;
        tasks.spawn(delivery.run(js.clone(), stream.clone(), stop.clone()));
    }
    Ok(())
}

impl Delivery {
    fn labels(&self) -> EndpointLabels {
        EndpointLabels { endpoint: self.config.name.clone() }
    }

    async fn run(self, js: jetstream::Context, stream: String, stop: CancellationToken) {
        loop {
            let outcome = tokio::select! {
                () = stop.cancelled() => return,
                outcome = self.follow(&js, &stream) => outcome,
            };
            match outcome {
                Ok(reason) => {
                    tracing::warn!(endpoint = %self.config.name, reason = %reason, "webhook endpoint disabled");
                    self.metrics.webhooks.disabled.get_or_create(&self.labels()).set(1);
                    return;
                }
                Err(e) => {
                    tracing::debug!(endpoint = %self.config.name, error = %e, "webhook delivery interrupted; resuming")
                }
            }
            tokio::select! {
                () = stop.cancelled() => return,
                () = tokio::time::sleep(AGAIN_AFTER) => {}
            }
        }
    }

    /// Delivers the endpoint's events as they come; returns why it was disabled, or fails when the
    /// audit log cannot be reached (the caller starts over).
    async fn consumer(
        &self,
        js: &jetstream::Context,
        stream: &str,
    ) -> Result<jetstream::consumer::Consumer<pull::Config>, async_nats::Error> {
        let stream = js.get_stream(stream).await?;
        let config = pull::Config {
            durable_name: Some(format!("webhook-{}", self.config.name)),
            description: Some(format!("Presence webhook endpoint {}", self.config.name)),
            filter_subjects: vec!["presence.update.>".into(), "presence.expire.>".into()],
            ack_policy: AckPolicy::Explicit,
            ack_wait: TIMEOUT + Duration::from_secs(15),
            deliver_policy: DeliverPolicy::New,
            max_ack_pending: 64,
            ..Default::default()
        };
        Ok(stream.get_or_create_consumer(&format!("webhook-{}", self.config.name), config).await?)
    }

    async fn follow(&self, js: &jetstream::Context, stream: &str) -> Result<String, async_nats::Error> {
        let mut messages = self.consumer(js, stream).await?.messages().await?;
        while let Some(message) = messages.next().await {
            let message = message?;
            let (attempt, sequence) =
                message.info().map_or((1, 0), |i| (i.delivered.max(1) as usize, i.stream_sequence));
            // The event's own id; one without (not written by a node) is named by its place in the
            // audit log, which every attempt shares too.
            let id = message
                .headers
                .as_ref()
                .and_then(|h| h.get("Nats-Msg-Id"))
                .map(|v| v.as_str().to_string())
                .unwrap_or_else(|| format!("{stream}-{sequence}"));
            let outcome = match of_audit(&message.payload).filter(|e| self.wants(e.kind, &e.user)) {
                None => Outcome::Delivered,
                Some(event) => self.deliver(&id, event.body.to_string(), attempt).await,
            };
            match outcome {
                Outcome::Delivered => message.ack().await?,
                Outcome::Again(after) => message.ack_with(AckKind::Nak(Some(after))).await?,
                Outcome::Disabled(reason) => {
                    message.ack_with(AckKind::Term).await?;
                    return Ok(reason);
                }
            }
        }
        Err("the audit log's consumer ended".into())
    }

    fn wants(&self, kind: &str, user: &str) -> bool {
        (self.config.events.is_empty() || self.config.events.iter().any(|e| e == kind))
            && (self.config.users.is_empty() || self.config.users.iter().any(|p| room_matches(p, user)))
    }

    /// One attempt (the `attempt`th) at delivering `body` as message `id`.
    async fn deliver(&self, id: &str, body: String, attempt: usize) -> Outcome {
        let labels = self.labels();
        let answer = self.endpoint.post(id, body.into()).await;
        let (status, retry_after) = match &answer {
            Ok(a) if (200..300).contains(&a.status) => {
                self.metrics.webhooks.delivered.get_or_create(&labels).inc();
                return Outcome::Delivered;
            }
            Ok(a) if a.status == 410 => return Outcome::Disabled(format!("it answered 410 Gone to {id}")),
            Ok(a) => (a.status.to_string(), a.retry_after),
            Err(e) => (crate::telemetry::chain(e).to_string(), None),
        };
        self.metrics.webhooks.failed.get_or_create(&labels).inc();
        let Some(wait) = self.schedule.get(attempt - 1) else {
            return Outcome::Disabled(format!(
                "{id} failed {attempt} times, past its retry schedule: {status}"
            ));
        };
        let jitter = 0.9 + rand::random::<f64>() * 0.2;
        let wait = wait.mul_f64(jitter).max(retry_after.unwrap_or_default());
        tracing::info!(endpoint = %self.config.name, id, attempt, answer = %status, retry_in_ms = wait.as_millis() as u64, "webhook not delivered; trying again");
        self.metrics.webhooks.retried.get_or_create(&labels).inc();
        Outcome::Again(wait)
    }
}
