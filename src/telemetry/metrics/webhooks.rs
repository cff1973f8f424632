//! The webhooks' metrics, per endpoint (docs/webhooks.md, "Operations").

use std::sync::atomic::AtomicU64;

use prometheus_client::{
    encoding::EncodeLabelSet,
    metrics::{counter::Counter, family::Family, gauge::Gauge},
    registry::Registry,
};

/// Which endpoint.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct EndpointLabels {
    pub endpoint: String,
}

#[derive(Default)]
pub(crate) struct WebhookMetrics {
    pub delivered: Family<EndpointLabels, Counter>,
    pub failed: Family<EndpointLabels, Counter>,
    pub retried: Family<EndpointLabels, Counter>,
    pub disabled: Family<EndpointLabels, Gauge>,
    pub pending: Family<EndpointLabels, Gauge>,
    pub oldest_pending: Family<EndpointLabels, Gauge<f64, AtomicU64>>,
}

impl WebhookMetrics {
    pub(super) fn register(&self, r: &mut Registry) {
        r.register("webhook_delivered", "Events an endpoint answered with a 2xx", self.delivered.clone());
        r.register(
            "webhook_failed",
            "Attempts an endpoint did not answer with a 2xx (or did not answer)",
            self.failed.clone(),
        );
        r.register(
            "webhook_retried",
            "Events set to be tried again, after the schedule",
            self.retried.clone(),
        );
        r.register(
            "webhook_disabled",
            "1 while an endpoint is disabled (a 410, or failing past its schedule)",
            self.disabled.clone(),
        );
        r.register(
            "webhook_pending",
            "Events stored for an endpoint and not yet delivered (checked every 2 s)",
            self.pending.clone(),
        );
        r.register(
            "webhook_oldest_pending_seconds",
            "Age of the oldest event not yet delivered to an endpoint (0 when none)",
            self.oldest_pending.clone(),
        );
    }
}
