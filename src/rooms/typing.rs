//! Typing across nodes: each node publishes its clients' signals on `presence.typing.{room}` (NATS
//! core: never stored, gone if nobody listens) and applies the other nodes'. The task also runs
//! the rooms' clock: batches whose window ended, signals not renewed.

use std::{sync::Arc, time::Duration};

use futures::StreamExt;
use serde::{Deserialize, Serialize};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::Rooms;
use crate::telemetry::metrics::KindLabels;

/// The subjects of typing signals: one token for the room.
const SUBJECTS: &str = "presence.typing.*";
/// How often batches and typing are looked at.
const TICK: Duration = Duration::from_millis(10);
/// How often (in ticks) typing signals are checked for their end, and the gauges set.
const TYPING_EVERY: u32 = 10;
const GAUGES_EVERY: u32 = 100;

/// One typing signal, as nodes send it to each other.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct Signal {
    pub node: String,
    pub user: String,
    pub room: String,
    pub active: bool,
}

impl Rooms {
    /// Until `stop`: this node's signals out, the other nodes' in, and the clock.
    pub(crate) async fn run(self: Arc<Self>, client: async_nats::Client, stop: CancellationToken) {
        let Some(mut outgoing) = self.outgoing.lock().expect("rooms lock").take() else { return };
        let mut incoming = match client.subscribe(SUBJECTS).await {
            Ok(subscriber) => Some(subscriber),
            Err(e) => {
                tracing::warn!(error = %e, "typing from other nodes will not arrive: subscribing failed");
                None
            }
        };
        let mut every = tokio::time::interval(TICK);
        every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut ticks = 0u32;
        loop {
            let next = async {
                match incoming.as_mut() {
                    Some(s) => s.next().await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                () = stop.cancelled() => return,
                message = next => match message {
                    Some(message) => self.received(&message.payload),
                    None => incoming = None,
                },
                signal = outgoing.recv() => {
                    let Some(signal) = signal else { return };
                    let subject = format!("presence.typing.{}", signal.room);
                    let payload = serde_json::to_vec(&signal).expect("a signal serializes");
                    if let Err(e) = client.publish(subject, payload.into()).await {
                        tracing::debug!(error = %e, "a typing signal was not sent");
                    }
                }
                _ = every.tick() => {
                    ticks = ticks.wrapping_add(1);
                    let (typing, gauges) = (ticks.is_multiple_of(TYPING_EVERY), ticks.is_multiple_of(GAUGES_EVERY));
                    self.tick(Instant::now().into_std(), (typing, gauges));
                }
            }
        }
    }

    /// Another node's signal (this node's own come back too, and are skipped).
    fn received(&self, payload: &[u8]) {
        let Ok(signal) = serde_json::from_slice::<Signal>(payload) else { return };
        if *signal.node == *self.node {
            return;
        }
        self.metrics.rooms.typing_signals.get_or_create(&KindLabels { kind: "remote" }).inc();
        self.apply_typing(&signal.user, &signal.room, signal.active);
    }
}
