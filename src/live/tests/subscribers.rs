//! Subscribers: snapshots, caps, slow clients, batches, unfollowing, shutdown.

use super::*;

#[test]
fn a_snapshot_drops_what_it_shows_and_keeps_what_is_newer() {
    let hub = hub(StreamConfig::default());
    let now = Utc::now();
    let a = open(&hub, &["alice", "bob"]);
    hub.publish("alice", None, record(5, "online", 60, now), Source::Node);
    hub.publish("bob", None, record(7, "busy", 60, now), Source::Node);
    // The snapshot read found alice at 5 and bob still at 6.
    a.seen(&[("alice", record(5, "online", 60, now)), ("bob", record(6, "away", 60, now))], now, true);
    assert_eq!(revisions(&a.subscriber().take()), [("bob".into(), 7, ChangeKind::Update)]);
}

#[test]
fn caps_refuse_and_a_closed_subscription_frees_its_place() {
    let hub = hub(StreamConfig { max_connections: 2, max_connections_per_ip: 1, ..StreamConfig::default() });
    let other = IpAddr::V4(Ipv4Addr::new(10, 0, 0, 1));
    let one = hub.subscribe(StreamKind::Sse, IP, CancellationToken::new()).unwrap();
    assert_eq!(hub.subscribe(StreamKind::Sse, IP, CancellationToken::new()).err(), Some(Refused::PerIp));
    let two = hub.subscribe(StreamKind::WebSocket, other, CancellationToken::new()).unwrap();
    let third = IpAddr::V4(Ipv4Addr::new(10, 0, 0, 2));
    assert_eq!(hub.subscribe(StreamKind::Sse, third, CancellationToken::new()).err(), Some(Refused::Full));
    assert_eq!(hub.open(), 2);
    drop(one);
    assert!(hub.subscribe(StreamKind::Sse, IP, CancellationToken::new()).is_ok());
    drop(two);
}

#[test]
fn a_subscriber_that_leaves_changes_unread_is_dropped_and_its_connection_closed() {
    let hub = hub(StreamConfig { write_timeout: Duration::from_millis(100), ..StreamConfig::default() });
    let closer = CancellationToken::new();
    let slow = hub.subscribe(StreamKind::Sse, IP, closer.clone()).unwrap();
    slow.follow(&["alice"], None);
    let fine = open(&hub, &["alice"]);
    hub.publish("alice", None, record(1, "online", 60, Utc::now()), Source::Watcher);
    fine.subscriber().take();
    hub.drop_slow(Instant::now() + Duration::from_millis(50));
    assert_eq!(slow.subscriber().dropped(), None, "not yet");
    hub.drop_slow(Instant::now() + Duration::from_millis(150));
    assert_eq!(slow.subscriber().dropped(), Some(Dropped::Slow));
    assert!(closer.is_cancelled(), "its connection is closed");
    assert_eq!(fine.subscriber().dropped(), None, "a client that reads is not");
}

#[test]
fn a_batch_says_what_it_holds_and_its_last_sequence_number() {
    let hub = hub(StreamConfig::default());
    let a = open(&hub, &["alice", "bob"]);
    assert!(a.subscriber().ready().now_or_never().is_none(), "nothing queued: it waits");
    for (user, revision) in [("alice", 7), ("bob", 8)] {
        hub.publish(user, None, record(revision, "online", 60, Utc::now()), Source::Watcher);
    }
    let batch = a.subscriber().take();
    assert!(!batch.is_empty());
    assert_eq!(batch.last_seq(), Some(2), "two changes numbered 1 and 2");
    hub.delivered(batch.changes.len());
    assert_eq!(hub.metrics.stream_changes_delivered.get(), 2);
    assert!(a.subscriber().take().is_empty() && a.subscriber().take().last_seq().is_none());
}

#[test]
fn unfollowing_a_user_drops_what_was_queued_for_them() {
    let hub = hub(StreamConfig::default());
    let a = open(&hub, &["alice", "bob"]);
    hub.publish("alice", None, record(1, "online", 60, Utc::now()), Source::Watcher);
    hub.publish("bob", None, record(2, "online", 60, Utc::now()), Source::Watcher);
    a.unfollow(&["alice"]);
    assert_eq!(revisions(&a.subscriber().take()), [("bob".into(), 2, ChangeKind::Update)]);
}

#[test]
fn shutdown_ends_every_subscription_and_names_why() {
    let hub = hub(StreamConfig::default());
    let closer = CancellationToken::new();
    let a = hub.subscribe(StreamKind::Sse, IP, closer.clone()).unwrap();
    hub.shutdown();
    assert_eq!(a.subscriber().dropped(), Some(Dropped::Shutdown));
    assert!(!closer.is_cancelled(), "the stream says why and ends by itself");
    assert!(a.subscriber().ready().now_or_never().is_some(), "a dropped subscriber waits for nothing");
    assert_eq!(Dropped::Shutdown.as_str(), "shutdown");
    assert_eq!(Dropped::Slow.as_str(), "slow");
}

#[test]
fn a_snapshot_newer_than_what_the_hub_told_orders_what_comes_after_it() {
    let hub = hub(StreamConfig::default());
    let a = open(&hub, &["alice"]);
    let now = Utc::now();
    hub.publish("alice", None, record(3, "online", 60, now), Source::Node);
    a.subscriber().take();
    a.seen(&[("alice", record(5, "busy", 60, now))], now, true);
    hub.publish("alice", None, record(4, "away", 60, now), Source::Watcher);
    assert!(a.subscriber().take().is_empty(), "older than the snapshot the client was shown");
}

#[test]
fn a_presence_that_expired_while_a_client_was_away_is_announced_after_its_resume_only() {
    let hub = hub(StreamConfig::default());
    let expired = written_ago(1, "busy", 60, chrono::Duration::seconds(61));
    let resumed = open(&hub, &["alice"]);
    resumed.seen(&[("alice", expired.clone())], Utc::now(), false);
    hub.expire_due(Utc::now());
    assert_eq!(revisions(&resumed.subscriber().take()), [("alice".into(), 1, ChangeKind::Expire)]);
    // A snapshot shows it offline already: nothing to announce.
    let hub2 = self::hub(StreamConfig::default());
    let shown = open(&hub2, &["alice"]);
    shown.seen(&[("alice", expired)], Utc::now(), true);
    hub2.expire_due(Utc::now());
    assert!(shown.subscriber().take().is_empty());
}

#[test]
fn a_queued_expiry_survives_a_snapshot_read_before_it_and_older_changes_do_not() {
    let hub = hub(StreamConfig::default());
    let a = open(&hub, &["alice", "bob"]);
    let now = Utc::now();
    let alice = record(5, "online", 60, now);
    let at = alice.presence.as_ref().unwrap().expires_at();
    hub.publish("alice", None, alice.clone(), Source::Watcher);
    hub.publish("bob", None, record(6, "online", 60, now), Source::Watcher);
    a.subscriber().take();
    hub.expire_due(at);
    hub.publish("bob", None, record(7, "away", 60, now), Source::Watcher);
    // The snapshot read alice at 5 while still online, and bob at 8.
    let before = at - chrono::Duration::milliseconds(1);
    a.seen(&[("alice", alice), ("bob", record(8, "busy", 60, now))], before, true);
    assert_eq!(revisions(&a.subscriber().take()), [("alice".into(), 5, ChangeKind::Expire)]);
}

#[test]
fn the_per_address_cap_counts_what_is_still_open() {
    let hub = hub(StreamConfig { max_connections_per_ip: 2, ..StreamConfig::default() });
    let one = hub.subscribe(StreamKind::Sse, IP, CancellationToken::new()).unwrap();
    let _two = hub.subscribe(StreamKind::Sse, IP, CancellationToken::new()).unwrap();
    drop(one);
    let _three = hub.subscribe(StreamKind::Sse, IP, CancellationToken::new()).unwrap();
    assert_eq!(hub.subscribe(StreamKind::Sse, IP, CancellationToken::new()).err(), Some(Refused::PerIp));
}

#[test]
fn a_slow_client_stays_slow_when_it_unfollows_some_of_its_users() {
    let hub = hub(StreamConfig { write_timeout: Duration::from_millis(100), ..StreamConfig::default() });
    let a = open(&hub, &["alice", "bob"]);
    hub.publish("alice", None, record(1, "online", 60, Utc::now()), Source::Watcher);
    hub.publish("bob", None, record(2, "online", 60, Utc::now()), Source::Watcher);
    a.unfollow(&["alice"]);
    hub.drop_slow(Instant::now() + Duration::from_millis(150));
    assert_eq!(a.subscriber().dropped(), Some(Dropped::Slow), "bob's change still waits");
}

#[test]
fn a_snapshot_drops_queued_expiries_older_than_what_it_shows_and_keeps_the_queue_timed() {
    let hub = hub(StreamConfig { write_timeout: Duration::from_millis(100), ..StreamConfig::default() });
    let a = open(&hub, &["alice", "bob"]);
    let now = Utc::now();
    let alice = record(5, "online", 60, now);
    let at = alice.presence.as_ref().unwrap().expires_at();
    hub.publish("alice", None, alice, Source::Watcher);
    hub.publish("bob", None, record(6, "online", 60, now), Source::Watcher);
    a.subscriber().take();
    hub.expire_due(at);
    hub.publish("bob", None, record(9, "away", 60, now), Source::Watcher);
    // The snapshot read alice after a newer write (7, online) and bob before his (at 6).
    let before = at - chrono::Duration::milliseconds(1);
    a.seen(&[("alice", record(7, "online", 60, now)), ("bob", record(6, "online", 60, now))], before, true);
    hub.drop_slow(Instant::now() + Duration::from_millis(150));
    assert_eq!(a.subscriber().dropped(), Some(Dropped::Slow), "bob's change still waits unread");
    assert_eq!(revisions(&a.subscriber().take()), [("bob".into(), 9, ChangeKind::Update)]);
}
