//! The label sets of the node's metrics, and the method label made without allocating.

use std::hash::{Hash, Hasher};

use prometheus_client::encoding::EncodeLabelSet;

#[derive(Clone, Debug, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct HttpLabels {
    pub method: &'static str,
    pub route: String,
    pub status: u16,
}

/// One `write_u64` (an FNV-1a of the route, the status and the method folded in) instead of
/// three writes of text into the families' SipHash: every request looks up two families.
/// Equal label sets hash alike; the maps still compare every field.
impl Hash for HttpLabels {
    fn hash<H: Hasher>(&self, state: &mut H) {
        let fnv = |h: u64, b: u8| (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3);
        let route = self.route.bytes().fold(0xcbf2_9ce4_8422_2325, fnv);
        let method = self.method.bytes().fold(route, fnv);
        state.write_u64(method ^ (u64::from(self.status) << 48));
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct NatsLabels {
    pub op: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct OutcomeLabels {
    pub outcome: &'static str,
}

/// Which link a certificate secures: `https`, `leafnode`, `nats`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct LinkLabels {
    pub link: &'static str,
}

/// Which protocol a live stream speaks: `sse`, `websocket`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct StreamLabels {
    pub kind: &'static str,
}

/// Why a connection was refused or closed.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct ReasonLabels {
    pub reason: &'static str,
}

/// What kind of thing was counted (a rate limit's, a room message's, a typing signal's).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct KindLabels {
    pub kind: &'static str,
}

/// A method's name without allocating; other methods share one label value.
pub(crate) fn method_label(method: &axum::http::Method) -> &'static str {
    use axum::http::Method;
    match *method {
        Method::GET => "GET",
        Method::PUT => "PUT",
        Method::POST => "POST",
        Method::DELETE => "DELETE",
        Method::HEAD => "HEAD",
        Method::OPTIONS => "OPTIONS",
        Method::PATCH => "PATCH",
        _ => "OTHER",
    }
}

/// Which shared JetStream stream: `bucket` (the presence KV) or `audit_log`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct JetStreamLabels {
    pub stream: &'static str,
}

/// A shared stream and the server that leads it.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct JetStreamLeaderLabels {
    pub stream: &'static str,
    pub server: String,
}
