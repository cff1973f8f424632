//! The caps on live streams: `stream.max_connections` per node and
//! `stream.max_connections_per_ip` per client address, checked when a subscription opens and
//! released when it drops.

use std::{net::IpAddr, sync::Arc};

use tokio_util::sync::CancellationToken;

use super::{Hub, LinkEvent, Registered, Subscriber, Subscription};
use crate::telemetry::metrics::{ReasonLabels, StreamLabels};

/// The protocol a subscription speaks (for limits and metrics).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum StreamKind {
    Sse,
    WebSocket,
}

impl StreamKind {
    pub(super) fn label(self) -> StreamLabels {
        StreamLabels {
            kind: match self {
                StreamKind::Sse => "sse",
                StreamKind::WebSocket => "websocket",
            },
        }
    }
}

/// Why a subscription was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Refused {
    /// `stream.max_connections` streams are open on this node.
    Full,
    /// `stream.max_connections_per_ip` streams are open from the client's address.
    PerIp,
}

impl Hub {
    /// A new subscription from `ip`, watching nobody yet, within the caps. `closer` is cancelled
    /// if the node drops the subscriber (see [`Subscriber::new`]).
    pub(crate) fn subscribe(
        self: &Arc<Self>,
        kind: StreamKind,
        ip: IpAddr,
        closer: CancellationToken,
    ) -> Result<Subscription, Refused> {
        let mut state = self.lock();
        if state.open >= self.settings.max_connections {
            self.metrics.streams_refused.get_or_create(&ReasonLabels { reason: "total" }).inc();
            return Err(Refused::Full);
        }
        let from_ip = state.per_ip.entry(ip).or_default();
        if *from_ip >= self.settings.max_connections_per_ip {
            self.metrics.streams_refused.get_or_create(&ReasonLabels { reason: "per_ip" }).inc();
            return Err(Refused::PerIp);
        }
        *from_ip += 1;
        state.open += 1;
        state.next_id += 1;
        let subscriber = Arc::new(Subscriber::new(state.next_id, closer));
        let registered = Registered { subscriber: subscriber.clone(), users: Vec::new(), ip, kind };
        state.subscribers.insert(subscriber.id, registered);
        if state.stale {
            subscriber.push_link(LinkEvent::Stale);
        }
        self.metrics.streams_open.get_or_create(&kind.label()).inc();
        Ok(Subscription { hub: self.clone(), subscriber })
    }
}
