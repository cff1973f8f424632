//! The webhooks' metrics, per endpoint (docs/webhooks.md, "Operations").

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
            "1 while an endpoint is disabled (a 410, or failing past its schedule), until the node restarts",
            self.disabled.clone(),
        );
    }
}
