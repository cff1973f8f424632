//! Delivery, at least once, from one place: on center nodes only, each endpoint reads each of its
//! sources through its durable consumer (shared by every center node, so each event goes out from
//! one of them) and acknowledges an event only after a 2xx. A failure is tried again after the
//! endpoint's schedule (±10 % jitter; `Retry-After` when longer, up to a day); a 410, or a
//! failure past the schedule, disables the endpoint (see [`super::status`]). Each request's
//! `webhook-id` is the event's own id, the same on every attempt and at every node; a batch's is
//! made of its events'.

use std::{sync::Arc, time::Duration};

use async_nats::jetstream::{self, AckKind, Message, consumer::pull};
use futures::StreamExt;
use ring::digest;
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

use super::{Endpoint, source::Source, status::Shared};
use crate::model::{millis, room_matches};

/// How long a center waits before it reaches for a stream again after failing to.
const AGAIN_AFTER: Duration = Duration::from_secs(1);

/// The longest an endpoint's `Retry-After` is honoured for (the default schedule's longest wait).
const LONGEST_RETRY_AFTER: Duration = Duration::from_secs(24 * 3600);

/// How long events still arriving are waited for, to be handed back (the endpoint was disabled,
/// or the node stops).
const HAND_BACK: Duration = Duration::from_millis(100);
/// The longest a node spends handing events back.
const HAND_BACK_FOR: Duration = Duration::from_secs(1);
/// How long a stopping node lets a request in flight finish before it hands its events back.
const FINISH_ON_STOP: Duration = Duration::from_secs(2);

/// One endpoint's delivery from one source.
pub(crate) struct Delivery {
    pub endpoint: Endpoint,
    pub shared: Arc<Shared>,
    pub source: Source,
    pub schedule: Vec<Duration>,
    /// The audit log's name (the notices stream's is made from it).
    pub audit: String,
}

/// What became of one request.
enum Outcome {
    Delivered,
    /// Tried again after this long.
    Again(Duration),
    /// The endpoint is disabled: this reason.
    Disabled(String),
}

/// One event read from the source, with what its attempt needs.
struct Held {
    message: Message,
    id: String,
    attempt: usize,
    body: Option<Value>,
}

impl Delivery {
    pub(crate) async fn run(self, js: jetstream::Context, stop: CancellationToken) {
        let mut disabled = self.shared.disabled.subscribe();
        loop {
            // A disabled endpoint's consumer is paused; this node waits for it to be enabled.
            tokio::select! {
                () = stop.cancelled() => return,
                _ = disabled.wait_for(Option::is_none) => {}
            }
            let outcome = tokio::select! {
                _ = disabled.wait_for(Option::is_some) => continue,
                outcome = self.follow(&js, &stop) => outcome,
            };
            if stop.is_cancelled() {
                return;
            }
            match outcome {
                Ok(()) => {}
                Err(e) => {
                    let endpoint = &self.shared.hook.name;
                    tracing::debug!(endpoint = %endpoint, error = %e, "webhook delivery interrupted; resuming");
                    tokio::select! {
                        () = stop.cancelled() => return,
                        () = tokio::time::sleep(AGAIN_AFTER) => {}
                    }
                }
            }
        }
    }

    /// Delivers the endpoint's events as they come; returns once it disabled the endpoint or the
    /// node stops, or fails when the stream cannot be reached (the caller starts over). A stopping
    /// node lets the request in flight finish (for a moment) and hands back every event it holds
    /// unanswered, so that the next center to read them sends them within seconds, not once their
    /// acknowledgement is overdue.
    async fn follow(
        &self,
        js: &jetstream::Context,
        stop: &CancellationToken,
    ) -> Result<(), async_nats::Error> {
        let setup = async {
            let consumer = self.source.consumer(js, &self.audit, &self.shared.hook).await?;
            Ok::<_, async_nats::Error>(consumer.messages().await?)
        };
        let mut messages = tokio::select! {
            () = stop.cancelled() => return Ok(()),
            messages = setup => messages?,
        };
        let batch = self.shared.hook.batch;
        loop {
            let first = tokio::select! {
                biased;
                () = stop.cancelled() => return hand_back(&mut messages, &[]).await,
                first = messages.next() => first,
            };
            let Some(first) = first else { return Err("the consumer ended".into()) };
            let mut held = vec![self.hold(first?)];
            if let Some(batch) = batch {
                let deadline = tokio::time::Instant::now() + batch.max_wait;
                while held.len() < batch.max_events && !stop.is_cancelled() {
                    match tokio::time::timeout_at(deadline, messages.next()).await {
                        Ok(Some(message)) => held.push(self.hold(message?)),
                        Ok(None) => return Err("the consumer ended".into()),
                        Err(_) => break,
                    }
                }
            }
            // Events the endpoint does not hear of are done with at once.
            let (wanted, unwanted): (Vec<Held>, Vec<Held>) = held.into_iter().partition(|h| h.body.is_some());
            for h in unwanted {
                h.message.ack().await?;
            }
            if wanted.is_empty() {
                continue;
            }
            let attempt = self.attempt(&wanted, batch.is_some());
            tokio::pin!(attempt);
            let outcome = tokio::select! {
                outcome = &mut attempt => outcome,
                () = stop.cancelled() => match tokio::time::timeout(FINISH_ON_STOP, &mut attempt).await {
                    Ok(outcome) => outcome,
                    Err(_) => return hand_back(&mut messages, &wanted).await,
                },
            };
            for h in &wanted {
                match &outcome {
                    Outcome::Delivered => h.message.ack().await?,
                    Outcome::Again(after) => h.message.ack_with(AckKind::Nak(Some(*after))).await?,
                    Outcome::Disabled(_) => h.message.ack_with(AckKind::Term).await?,
                }
            }
            if let Outcome::Disabled(reason) = outcome {
                // Paused first, then what was handed to this node meanwhile is handed back: it
                // waits with the rest instead of for its acknowledgement to be overdue.
                self.shared.disable(js, &self.audit, reason).await;
                return hand_back(&mut messages, &[]).await;
            }
            if stop.is_cancelled() {
                return hand_back(&mut messages, &[]).await;
            }
        }
    }

    fn hold(&self, message: Message) -> Held {
        let (attempt, sequence) =
            message.info().map_or((1, 0), |i| (i.delivered.max(1) as usize, i.stream_sequence));
        // The event's own id; one without (not written by a node) is named by its place in the
        // stream, which every attempt shares too.
        let id = match message.headers.as_ref().and_then(|h| h.get("Nats-Msg-Id")) {
            Some(id) => id.as_str().to_string(),
            None => format!("{}-{sequence}", self.source.stream(&self.audit)),
        };
        let event = self.source.event(&message.payload).filter(|e| self.wants(&e.kind, (&e.user, &e.room)));
        Held { message, id, attempt, body: event.map(|e| e.body) }
    }

    fn wants(&self, kind: &str, (user, room): (&Option<String>, &Option<String>)) -> bool {
        let hook = &self.shared.hook;
        let matches = |patterns: &[String], name: &Option<String>| {
            patterns.is_empty() || name.as_ref().is_none_or(|n| patterns.iter().any(|p| room_matches(p, n)))
        };
        hook.hears(kind) && matches(&hook.users, user) && matches(&hook.rooms, room)
    }

    /// One attempt at delivering `held`: alone, or as one batch.
    async fn attempt(&self, held: &[Held], batched: bool) -> Outcome {
        let attempt = held.iter().map(|h| h.attempt).max().unwrap_or(1);
        if !batched {
            let h = &held[0];
            let body = h.body.as_ref().expect("wanted").to_string();
            return self.deliver(&h.id, body, (attempt, 1)).await;
        }
        let ids: Vec<&str> = held.iter().map(|h| h.id.as_str()).collect();
        let events: Vec<Value> = held
            .iter()
            .map(|h| {
                let mut event = h.body.clone().expect("wanted");
                event["id"] = json!(h.id);
                event
            })
            .collect();
        let body = json!({"type": "batch", "timestamp": millis(&chrono::Utc::now()), "data": events});
        self.deliver(&batch_id(&ids), body.to_string(), (attempt, held.len())).await
    }

    /// The `attempt`th attempt at delivering `body` (`events` of them) as message `id`.
    async fn deliver(&self, id: &str, body: String, (attempt, events): (usize, usize)) -> Outcome {
        let (metrics, labels) = (&self.shared.metrics.webhooks, self.shared.labels());
        let answer = self.endpoint.post(id, body.into()).await;
        let (status, retry_after) = match &answer {
            Ok(a) if (200..300).contains(&a.status) => {
                metrics.delivered.get_or_create(&labels).inc_by(events as u64);
                self.shared.retrying(self.source, false);
                return Outcome::Delivered;
            }
            Ok(a) if a.status == 410 => return Outcome::Disabled(format!("it answered 410 Gone to {id}")),
            Ok(a) => (a.status.to_string(), a.retry_after),
            Err(e) => (crate::telemetry::chain(e).to_string(), None),
        };
        metrics.failed.get_or_create(&labels).inc();
        let Some(wait) = self.schedule.get(attempt - 1) else {
            return Outcome::Disabled(format!(
                "{id} failed {attempt} times, past its retry schedule: {status}"
            ));
        };
        let jitter = 0.9 + rand::random::<f64>() * 0.2;
        let asked = retry_after.unwrap_or_default().min(LONGEST_RETRY_AFTER);
        let wait = wait.mul_f64(jitter).max(asked);
        let endpoint = &self.shared.hook.name;
        tracing::info!(endpoint = %endpoint, id, attempt, answer = %status, retry_in_ms = wait.as_millis() as u64, "webhook not delivered; trying again");
        metrics.retried.get_or_create(&labels).inc_by(events as u64);
        self.shared.retrying(self.source, true);
        Outcome::Again(wait)
    }
}

/// Hands `held` back to the consumer, and every event still arriving for this node (pulled
/// before it stopped asking), for up to [`HAND_BACK_FOR`]. Each is handed back for twice that, so
/// that none comes straight back to this node's own outstanding pull: the next reader gets them
/// 2 s later, not once their acknowledgement is overdue (30 s).
async fn hand_back(messages: &mut pull::Stream, held: &[Held]) -> Result<(), async_nats::Error> {
    let back = AckKind::Nak(Some(HAND_BACK_FOR * 2));
    for h in held {
        h.message.ack_with(back).await?;
    }
    let until = tokio::time::Instant::now() + HAND_BACK_FOR;
    while let Ok(Some(Ok(message))) = tokio::time::timeout(HAND_BACK, messages.next()).await {
        message.ack_with(back).await?;
        if tokio::time::Instant::now() >= until {
            break;
        }
    }
    Ok(())
}

/// A batch's id: made of its events' ids, so that the same events sent again have the same one.
fn batch_id(ids: &[&str]) -> String {
    let digest = digest::digest(&digest::SHA256, ids.join("\n").as_bytes());
    format!("batch_{}", hex::encode(&digest.as_ref()[..16]))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_batch_id_is_its_events_ids_and_nothing_else() {
        assert_eq!(batch_id(&["a", "b"]), batch_id(&["a", "b"]));
        assert_ne!(batch_id(&["a", "b"]), batch_id(&["a"]));
        assert_ne!(batch_id(&["a\nb"]), batch_id(&["a", "c"]));
        assert!(batch_id(&["a"]).starts_with("batch_"));
    }
}
