//! The hub's unit tests: ordering, expiry, resume, snapshots, caps and slow clients.

mod feed;
mod subscribers;

use std::net::Ipv4Addr;

use futures::FutureExt;

use super::*;
use crate::model::{
    CompactPresence, DeviceKind, PresenceUpdate, Status, StoredDevice, StoredPresence, UserId,
};

fn hub(settings: StreamConfig) -> Arc<Hub> {
    Hub::new(settings, LinkState::new(), Arc::new(Metrics::new()))
}

fn record(revision: u64, status: &str, ttl: i64, at: DateTime<Utc>) -> Arc<Record> {
    let user = UserId::parse("u").unwrap();
    let update = PresenceUpdate::new(status, None, Some(ttl), Duration::from_secs(60)).unwrap();
    let stored = StoredPresence::from_update(&user, update, None, "n", at);
    Arc::new(Record { revision, presence: Some(CompactPresence::from(&stored)) })
}

const IP: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);

fn open(hub: &Arc<Hub>, users: &[&str]) -> Subscription {
    let subscription = hub.subscribe(StreamKind::Sse, IP, CancellationToken::new()).unwrap();
    subscription.follow(users, None);
    subscription
}

fn revisions(batch: &Batch) -> Vec<(String, u64, ChangeKind)> {
    batch.changes.iter().map(|c| (c.user.to_string(), c.revision, c.kind)).collect()
}

/// A presence written `ago` before now with `ttl` seconds: expired once `ago` passes `ttl`.
fn written_ago(revision: u64, status: &str, ttl: i64, ago: chrono::Duration) -> Arc<Record> {
    record(revision, status, ttl, Utc::now() - ago)
}
