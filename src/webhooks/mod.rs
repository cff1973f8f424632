//! Webhooks (docs/webhooks.md): the application's endpoints, each a name, a URL and a Standard
//! Webhooks secret. `sign` makes the signatures, `address` says which addresses an endpoint may
//! reach, `send` makes one signed request; `event` turns an audit-log event into what endpoints
//! are told, `source` says where each kind of event is read from (the audit log, the notices
//! stream), `deliver` delivers them at least once from the center, and `status` keeps what
//! `/health` and `/metrics` show and the disabled state all center nodes share.
//! `presence webhooks test NAME` sends a signed test event through the same path.

mod address;
mod deliver;
mod event;
mod send;
mod sign;
mod source;
mod status;

use std::sync::Arc;

use async_nats::jetstream;
use tokio::{sync::mpsc, task::JoinSet};
use tokio_util::sync::CancellationToken;

pub(crate) use send::Endpoint;
pub(crate) use status::{EndpointHealth, Statuses};

use self::{deliver::Delivery, source::Source, status::Shared};
use crate::{
    config::{Config, NodeType},
    lifecycle::Events,
    rooms::{Notice, Occupancy},
    telemetry::Metrics,
};

/// A node's webhooks: on a center with endpoints, the notices stream bound and (when an endpoint
/// hears rooms) the rooms' occupancy ready for the watcher; elsewhere nothing.
pub(crate) struct Webhooks {
    config: Arc<Config>,
    events: Events,
    occupancy: Option<(Arc<Occupancy>, mpsc::UnboundedReceiver<Notice>)>,
    statuses: Arc<Statuses>,
}

impl Webhooks {
    /// Makes (or updates) the notices stream on a center with endpoints; before the watcher starts,
    /// which then tells the occupancy of every change.
    pub(crate) async fn prepare(config: &Config, events: &Events) -> anyhow::Result<Self> {
        let delivers = config.service.node_type == NodeType::Center && !config.webhooks.is_empty();
        let mut occupancy = None;
        if delivers {
            let kept = (config.events.retention, config.nats.kv.replicas);
            events.bind_notices(&config.events.stream, kept).await.map_err(|e| {
                anyhow::anyhow!("cannot make the webhooks' notices stream: {}", crate::telemetry::chain(&e))
            })?;
            occupancy = config.webhooks.iter().any(|w| w.hears_rooms()).then(Occupancy::new);
        }
        let config = Arc::new(if delivers { config.clone() } else { Config::default() });
        Ok(Self { config, events: events.clone(), occupancy, statuses: Arc::default() })
    }

    /// The rooms' occupancy the watcher tells, if an endpoint hears rooms.
    pub(crate) fn occupancy(&self) -> Option<Arc<Occupancy>> {
        self.occupancy.as_ref().map(|(o, _)| o.clone())
    }

    /// What `/health` shows of the endpoints.
    pub(crate) fn statuses(&self) -> Arc<Statuses> {
        self.statuses.clone()
    }

    /// Delivers every endpoint's events until `stop`. Each endpoint's consumers exist when this
    /// returns: an event stored from then on reaches it.
    pub(crate) async fn start(
        self,
        tasks: &mut JoinSet<()>,
        (js, metrics): (&jetstream::Context, &Arc<Metrics>),
        stop: &CancellationToken,
    ) -> anyhow::Result<()> {
        let audit = self.config.events.stream.clone();
        for hook in &self.config.webhooks {
            let shared = Shared::new(hook.clone(), self.statuses.clone(), metrics.clone());
            let named = |e: async_nats::Error| anyhow::anyhow!("webhook {}: {e}", hook.name);
            for source in Source::of(hook) {
                source.configure(js, &audit, hook).await.map_err(named)?;
            }
            shared.enable_if_moved(js, &audit).await.map_err(named)?;
            shared.check(js, &audit).await.map_err(named)?;
            for source in Source::of(hook) {
                let endpoint = Endpoint::new(hook)?;
                let delivery = Delivery {
                    endpoint,
                    shared: shared.clone(),
                    source,
                    schedule: hook.schedule(),
                    audit: audit.clone(),
                };
                tasks.spawn(delivery.run(js.clone(), stop.clone()));
            }
            let monitor = shared.monitor(js.clone(), audit.clone());
            let stop = stop.clone();
            tasks.spawn(async move {
                tokio::select! {
                    () = stop.cancelled() => {}
                    () = monitor => {}
                }
            });
        }
        if let Some((_, notices)) = self.occupancy {
            tasks.spawn(publish(self.events, notices, stop.clone()));
        }
        Ok(())
    }
}

/// Stores the occupancy's notices in the order they were made.
async fn publish(events: Events, mut notices: mpsc::UnboundedReceiver<Notice>, stop: CancellationToken) {
    loop {
        let notice = tokio::select! {
            () = stop.cancelled() => return,
            notice = notices.recv() => notice,
        };
        let Some((subject, id, body)) = notice else { return };
        events.notice(subject, id, body).await;
    }
}
