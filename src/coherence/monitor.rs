//! The monitor: every [`CHECK_EVERY`] it asks whether NATS is connected and JetStream answers
//! (through the leafnode, on a leaf), and compares the bucket's last revision with the watcher's.
//! One slow answer is not an outage; two in a row are.

use std::{sync::Arc, time::Duration};

use tokio::time::MissedTickBehavior;
use tokio_util::sync::CancellationToken;

use crate::{
    link::LinkState,
    store::{Head, PresenceStore},
};

const CHECK_EVERY: Duration = Duration::from_millis(250);
/// Failed checks in a row that make NATS unreachable.
const FAILURES_TO_DOWN: u32 = 2;

/// What the monitor checks.
pub(super) struct Target {
    pub store: PresenceStore,
    pub client: async_nats::Client,
    pub server_name: Option<String>,
}

impl Target {
    /// Connected, and to the right server. `foreign` remembers whether the last look found
    /// another server, so that the error is logged once per episode.
    fn connected(&self, foreign: &mut bool) -> bool {
        if self.client.connection_state() != async_nats::connection::State::Connected {
            return false;
        }
        let Some(expected) = &self.server_name else { return true };
        let name = self.client.server_info().server_name;
        let now_foreign = name != *expected;
        if now_foreign && !*foreign {
            tracing::error!(
                server_name = %name,
                expected = %expected,
                "connected to a nats-server that is not this node's own (another process holds nats.port?); \
                 treating NATS as unreachable"
            );
        }
        *foreign = now_foreign;
        !now_foreign
    }
}

pub(super) async fn run(target: Target, link: Arc<LinkState>, stop: CancellationToken) {
    let mut ticker = tokio::time::interval(CHECK_EVERY);
    ticker.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let (mut failures, mut foreign) = (0u32, false);
    loop {
        tokio::select! {
            () = stop.cancelled() => return,
            _ = ticker.tick() => {}
        }
        let connected = target.connected(&mut foreign);
        // Read before asking, so that changes applied while the answer travels cannot make the
        // bucket look older than the cache.
        let applied = link.applied_revision();
        let head = if connected { target.store.head().await.ok() } else { None };
        failures = if head.is_some() { 0 } else { failures + 1 };
        match head {
            _ if !connected || failures >= FAILURES_TO_DOWN => unreachable(&link),
            Some(head) => reachable(&link, head, applied),
            None => {}
        }
    }
}

fn unreachable(link: &LinkState) {
    if link.set_reachable(false) {
        tracing::warn!("NATS unreachable: serving cached reads marked stale, writes answer 503");
    }
}

fn reachable(link: &LinkState, head: Head, applied: u64) {
    if !link.set_reachable(true) {
        tracing::info!("NATS reachable again");
        link.request_resume();
    }
    if head.last_revision < applied {
        // The bucket is not the one the cache came from (recreated, restored): the node cannot
        // know what it missed, so it starts over from the bucket.
        tracing::warn!(applied, last = head.last_revision, "bucket history changed; rebuilding the cache");
        link.request_rebuild();
        return;
    }
    let applied = link.applied_revision();
    link.set_lag(head.last_revision.saturating_sub(applied));
    if link.is_behind() {
        // Caught up once the watcher applied what the bucket held when the link came back (an
        // empty bucket holds nothing to wait for). A watcher that receives a change with nothing
        // pending behind it also clears this.
        let target = link.catch_up_target(head.last_revision);
        if head.records == 0 || applied >= target {
            link.mark_caught_up();
        }
    }
}
