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

pub(super) async fn run(
    store: PresenceStore,
    client: async_nats::Client,
    link: Arc<LinkState>,
    stop: CancellationToken,
) {
    let mut ticker = tokio::time::interval(CHECK_EVERY);
    ticker.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let mut failures = 0u32;
    loop {
        tokio::select! {
            () = stop.cancelled() => return,
            _ = ticker.tick() => {}
        }
        let connected = client.connection_state() == async_nats::connection::State::Connected;
        // Read before asking, so that changes applied while the answer travels cannot make the
        // bucket look older than the cache.
        let applied = link.applied_revision();
        let head = if connected { store.head().await.ok() } else { None };
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
