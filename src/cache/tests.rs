//! The cache's rules: costs and the bound, revisions, expiry, "nothing here" entries.

use super::*;
use std::time::Instant;

use chrono::Utc;

use super::cost::{DEVICE_OVERHEAD, ROOM_OVERHEAD};
use crate::model::{CompactPresence, Meta, PresenceUpdate, Status, StoredPresence, StoredRoom};

fn presence(status: &str, ttl: i64) -> CompactPresence {
    let update = PresenceUpdate::new(status, None, Some(ttl), Duration::from_secs(60)).unwrap();
    let stored = StoredPresence::from_update(&UserId::parse("u").unwrap(), update, None, "n", Utc::now());
    CompactPresence::from(&stored)
}

#[tokio::test]
async fn an_entry_costs_its_overhead_key_message_and_devices() {
    let cache = PresenceCache::new(1 << 20);
    let user = UserId::parse("costly").unwrap();
    let update =
        PresenceUpdate::new("busy", Some("in a meeting".into()), Some(60), Duration::from_secs(60)).unwrap();
    let mut stored = StoredPresence::from_update(&user, update, None, "n", Utc::now());
    let mut device = crate::model::StoredDevice::new(crate::model::DeviceKind::Web, "n".into(), false);
    let meta = Meta::parse(serde_json::json!({"a": 1}), 1024).unwrap();
    device.rooms.insert("doc-1".into(), StoredRoom { meta, joined_at: Utc::now() });
    stored.devices.insert("tab-1".into(), device);
    let record = Record { revision: 1, presence: Some(CompactPresence::from(&stored)) };
    let room = ROOM_OVERHEAD + "doc-1".len() as u64 + r#"{"a":1}"#.len() as u64;
    let devices = DEVICE_OVERHEAD + "tab-1".len() as u64 + room;
    let expected = ENTRY_OVERHEAD + "costly".len() as u64 + "in a meeting".len() as u64 + devices;
    assert_eq!(u64::from(cost("costly", &record)), expected);
    cache.upsert(&user, record).await;
    cache.cleanup().await;
    assert_eq!(cache.weighted_size(), expected, "what /health/cache and the bound count");
}

#[tokio::test]
async fn an_older_revision_never_replaces_a_newer_one() {
    let cache = PresenceCache::new(1 << 20);
    cache.upsert("u", Record { revision: 5, presence: Some(presence("busy", 60)) }).await;
    cache.upsert("u", Record { revision: 4, presence: Some(presence("away", 60)) }).await;
    assert_eq!(cache.get("u").await.unwrap().presence.as_ref().unwrap().status, Status::Busy);
    cache.upsert("u", Record { revision: 6, presence: None }).await;
    assert_eq!(cache.get("u").await.unwrap().presence, None);
    let m = cache.metrics();
    assert_eq!((m.hits, m.misses, m.keys_added), (2, 0, 1));
}

#[tokio::test]
async fn a_live_entry_outlives_its_expiry_shown_offline_until_its_offline_record_lands() {
    let cache = PresenceCache::new(1 << 20);
    let update = PresenceUpdate::new("busy", None, Some(1), Duration::from_secs(60)).unwrap();
    let written = Utc::now() - chrono::Duration::seconds(5);
    let stored = StoredPresence::from_update(&UserId::parse("u").unwrap(), update, None, "n", written);
    let expired = CompactPresence::from(&stored);
    cache.upsert("u", Record { revision: 1, presence: Some(expired.clone()) }).await;
    cache.cleanup().await;
    let entry = cache.get("u").await.expect("kept past its expiry: no read of the bucket for it");
    let view = entry.presence.as_ref().unwrap().view("u", Utc::now());
    assert_eq!(view.status, Status::Offline, "shown as expired");
    assert_eq!(cache.metrics().keys_evicted, 0);
    let offline = CompactPresence { status: Status::Offline, ..expired };
    cache.upsert("u", Record { revision: 2, presence: Some(offline) }).await;
    assert_eq!(cache.get("u").await.unwrap().revision, 2, "the expiry job's record replaces it");
}

#[tokio::test]
async fn the_cost_bound_holds_and_what_it_pushes_out_is_counted() {
    let cache = PresenceCache::new(32 * 1024);
    for i in 0..1000 {
        cache.upsert(&format!("user{i}"), Record { revision: 1, presence: Some(presence("busy", 60)) }).await;
    }
    cache.cleanup().await;
    let m = cache.metrics();
    assert!(cache.weighted_size() <= 32 * 1024, "{} bytes held", cache.weighted_size());
    assert_eq!(m.keys_added, 1000);
    assert_eq!(m.keys_evicted, 1000 - cache.entry_count(), "every entry pushed out is counted");
    assert!(m.cost_evicted >= m.keys_evicted * ENTRY_OVERHEAD);
}

#[tokio::test]
async fn nothing_here_entries_are_capped_and_short_lived_but_erasures_always_land() {
    let cache = PresenceCache::with_counters(
        1 << 20,
        Negative { ttl: Duration::from_secs(1), max: 3 },
        Counters::default(),
    );
    for i in 0..10 {
        cache.upsert(&format!("nobody{i}"), Record::NEVER_SEEN).await;
    }
    cache.cleanup().await;
    assert_eq!(cache.entry_count(), 3, "at most 3 entries for users nobody knows");
    cache.upsert("real", Record { revision: 1, presence: Some(presence("online", 60)) }).await;
    cache.upsert("real", Record { revision: 2, presence: None }).await;
    assert_eq!(cache.peek("real").await.unwrap().revision, 2, "an erasure replaces, cap or not");
    let deadline = Instant::now() + Duration::from_secs(5);
    while cache.peek("nobody0").await.is_some() {
        assert!(Instant::now() < deadline, "a nothing-here entry outlived its ttl");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // The others went in at the same moment: the housekeeping lets them go without a read.
    cache.cleanup().await;
    assert!(cache.entry_count() <= 1, "{} entries left", cache.entry_count());
    // Once they left (housekeeping, or a read that found them gone), there is room again.
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        cache.cleanup().await;
        cache.upsert("nobody-new", Record::NEVER_SEEN).await;
        if cache.peek("nobody-new").await.is_some() {
            break;
        }
        assert!(Instant::now() < deadline, "no room again after the old ones left");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn a_nothing_here_entry_replaced_after_its_time_still_frees_its_place() {
    let cache = PresenceCache::with_counters(
        1 << 20,
        Negative { ttl: Duration::from_secs(1), max: 1 },
        Counters::default(),
    );
    cache.upsert("ghost", Record::NEVER_SEEN).await;
    // Its time runs out with nobody reading it (the cache's own clock, polled).
    let until = cache.inner.peek("ghost").unwrap().until;
    let deadline = Instant::now() + Duration::from_secs(5);
    while cache.clock.now() < until {
        assert!(Instant::now() < deadline, "the cache's clock stands still");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    cache.upsert("ghost", Record { revision: 3, presence: Some(presence("online", 60)) }).await;
    assert_eq!(cache.counters.negative.load(Relaxed), 0, "the old entry's place is free");
    assert_eq!(cache.metrics().keys_evicted, 1, "and it is counted as gone");
    cache.upsert("other", Record::NEVER_SEEN).await;
    assert!(cache.peek("other").await.is_some(), "room for another nothing-here entry");
}

#[tokio::test]
async fn a_newer_record_replaces_without_counting_an_eviction() {
    let cache = PresenceCache::new(1 << 20);
    cache.upsert("u", Record::NEVER_SEEN).await;
    for revision in 1..=3 {
        cache.upsert("u", Record { revision, presence: Some(presence("busy", 60)) }).await;
    }
    cache.upsert("nobody", Record::NEVER_SEEN).await;
    let m = cache.metrics();
    assert_eq!((m.keys_added, m.keys_evicted, m.cost_evicted), (2, 0, 0), "replacements are not evictions");
    assert_eq!(cache.counters.negative.load(Relaxed), 1, "only nobody's entry says nothing here");
}

#[tokio::test]
async fn an_entry_heavier_than_the_cache_is_not_kept_and_counted_as_gone() {
    let cache = PresenceCache::new(1024);
    let heavy = CompactPresence { message: Some("x".repeat(2000).into()), ..presence("busy", 60) };
    cache.upsert("big", Record { revision: 1, presence: Some(heavy) }).await;
    assert!(cache.peek("big").await.is_none());
    assert_eq!(cache.metrics().keys_evicted, 1);
}
