//! The feed: order, expiry, resume, the link's stale and fresh.

use super::*;

#[test]
fn watchers_get_their_users_changes_in_order_and_nothing_older() {
    let hub = hub(StreamConfig::default());
    let a = open(&hub, &["alice", "bob"]);
    let b = open(&hub, &["bob"]);
    let now = Utc::now();
    hub.publish("alice", None, record(2, "online", 60, now), Source::Node);
    hub.publish("alice", None, record(2, "online", 60, now), Source::Watcher);
    hub.publish("alice", None, record(1, "busy", 60, now), Source::Watcher);
    hub.publish("carol", None, record(3, "online", 60, now), Source::Watcher);
    hub.publish("bob", None, record(4, "away", 60, now), Source::Watcher);
    let taken = a.subscriber().take();
    assert_eq!(
        revisions(&taken),
        [("alice".into(), 2, ChangeKind::Update), ("bob".into(), 4, ChangeKind::Update)],
        "once each, never older, in feed order"
    );
    assert_eq!(revisions(&b.subscriber().take()), [("bob".into(), 4, ChangeKind::Update)]);
    // Newer replaces older while unread: one pending change per user.
    hub.publish("bob", None, record(5, "busy", 60, now), Source::Watcher);
    hub.publish("bob", None, record(6, "online", 60, now), Source::Watcher);
    assert_eq!(revisions(&b.subscriber().take()), [("bob".into(), 6, ChangeKind::Update)]);
    // The resume buffer holds every change of the bucket, watched or not, but nothing twice.
    let users: Vec<String> = hub.lock().log.iter().map(|c| format!("{}{}", c.user, c.revision)).collect();
    assert_eq!(users, ["alice2", "carol3", "bob4", "bob5", "bob6"]);
    // Never seen: not a change.
    a.subscriber().take();
    hub.publish("alice", None, Arc::new(Record::NEVER_SEEN), Source::Watcher);
    assert!(a.subscriber().take().is_empty());
}

#[test]
fn an_expiry_is_announced_once_when_it_happens_and_timers_do_not_pile_up() {
    let hub = hub(StreamConfig::default());
    let a = open(&hub, &["alice"]);
    let written = Utc::now() - chrono::Duration::seconds(30);
    for (revision, ttl) in [(1, 40), (2, 50), (3, 60)] {
        hub.publish("alice", None, record(revision, "online", ttl, written), Source::Watcher);
    }
    assert_eq!(hub.lock().timers.len(), 1, "a refresh replaces the expiry it supersedes");
    a.subscriber().take();
    let expires = written + chrono::Duration::seconds(60);
    hub.expire_due(expires - chrono::Duration::milliseconds(1));
    assert!(a.subscriber().take().is_empty(), "not before its time");
    hub.expire_due(expires);
    let expired = a.subscriber().take();
    assert_eq!(revisions(&expired), [("alice".into(), 3, ChangeKind::Expire)]);
    assert_eq!(expired.changes[0].presence.status, Status::Offline);
    // The expiry job's record of the same presence says nothing new.
    let mut job = Record::clone(&record(3, "online", 60, written));
    job.revision = 4;
    job.presence.as_mut().unwrap().status = Status::Offline;
    hub.publish("alice", Some(&record(3, "online", 60, written)), Arc::new(job), Source::Watcher);
    assert!(a.subscriber().take().is_empty(), "one announcement per expiry");
    drop(a);
    assert!(hub.lock().timers.is_empty() && hub.lock().users.is_empty(), "nothing left of alice");
}

#[test]
fn a_change_nobody_else_can_see_is_not_announced() {
    let hub = hub(StreamConfig::default());
    let a = open(&hub, &["alice"]);
    let now = Utc::now();
    let on = |revision, node: &str| {
        let mut record = Record::clone(&record(revision, "offline", 60, now));
        let device = StoredDevice::new(DeviceKind::Web, node.into(), false);
        let mut stored = record.presence.as_ref().unwrap().to_stored("alice");
        stored.devices.insert("tab".into(), device);
        record.presence = Some(CompactPresence::from(&stored));
        Arc::new(record)
    };
    hub.publish("alice", None, on(1, "n1"), Source::Watcher);
    assert_eq!(revisions(&a.subscriber().take()), [("alice".into(), 1, ChangeKind::Update)]);
    hub.publish("alice", None, on(2, "n2"), Source::Watcher);
    assert!(a.subscriber().take().is_empty(), "the device moved to another node: nothing to see");
    assert_eq!(hub.lock().users["alice"].record.as_ref().unwrap().revision, 2, "but it is remembered");
    // The expiry job's record before the hub's own tick: the expiry is announced.
    let written = now;
    hub.publish("alice", None, record(3, "busy", 60, written), Source::Watcher);
    a.subscriber().take();
    let mut job = Record::clone(&record(3, "busy", 60, written));
    job.revision = 4;
    job.presence.as_mut().unwrap().status = Status::Offline;
    hub.publish("alice", None, Arc::new(job), Source::Watcher);
    assert_eq!(revisions(&a.subscriber().take()), [("alice".into(), 4, ChangeKind::Expire)]);
}

#[test]
fn a_cursor_resumes_only_on_this_run_and_within_the_buffer() {
    let hub = hub(StreamConfig { resume_buffer: 3, ..StreamConfig::default() });
    let now = Utc::now();
    let first = open(&hub, &["alice"]);
    hub.publish("alice", None, record(1, "online", 60, now), Source::Watcher);
    let cursor = Cursor::parse(&hub.cursor(1)).unwrap();
    hub.publish("bob", None, record(2, "online", 60, now), Source::Watcher);
    hub.publish("alice", None, record(3, "away", 60, now), Source::Watcher);
    drop(first);

    let back = hub.subscribe(StreamKind::Sse, IP, CancellationToken::new()).unwrap();
    let watching = back.follow(&["alice"], Some(&cursor));
    assert!(watching.resumed);
    assert_eq!(revisions(&back.subscriber().take()), [("alice".into(), 3, ChangeKind::Update)]);
    assert_eq!(watching.cursor, hub.cursor(3));

    let elsewhere = Cursor::parse("0badcafe-1").unwrap();
    assert!(!back.follow(&["alice"], Some(&elsewhere)).resumed, "another run's cursor");
    for revision in 4..=6 {
        hub.publish("carol", None, record(revision, "online", 60, now), Source::Watcher);
    }
    assert!(!back.follow(&["alice"], Some(&cursor)).resumed, "older than the buffer");
    let ahead = Cursor::parse(&hub.cursor(99)).unwrap();
    assert!(!back.follow(&["alice"], Some(&ahead)).resumed, "a cursor from the future");
    assert_eq!(Cursor::parse("garbage"), None);
}

#[test]
fn what_this_node_learns_first_of_users_nobody_watches_is_not_kept_for_resuming() {
    let hub = hub(StreamConfig::default());
    hub.publish("alice", None, record(1, "online", 60, Utc::now()), Source::Node);
    assert!(hub.lock().log.is_empty(), "the watcher brings it, once");
    hub.publish("alice", None, record(1, "online", 60, Utc::now()), Source::Watcher);
    assert_eq!(hub.lock().log.len(), 1);
}

#[test]
fn an_expiry_the_ticker_has_not_announced_yet_is_announced_with_the_expiry_jobs_record() {
    let hub = hub(StreamConfig::default());
    let a = open(&hub, &["alice"]);
    // Live when the hub hears of it, expired 50 ms later; the ticker does not run here.
    let live = written_ago(1, "busy", 60, chrono::Duration::milliseconds(59_950));
    hub.publish("alice", None, live.clone(), Source::Watcher);
    a.subscriber().take();
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while !live.presence.as_ref().unwrap().is_expired(Utc::now()) {
        assert!(std::time::Instant::now() < deadline, "the presence expires");
        std::thread::yield_now();
    }
    let mut job = Record::clone(&live);
    job.revision = 2;
    job.presence.as_mut().unwrap().status = Status::Offline;
    hub.publish("alice", Some(&live), Arc::new(job), Source::Watcher);
    let told = a.subscriber().take();
    assert_eq!(revisions(&told), [("alice".into(), 2, ChangeKind::Expire)], "subscribers saw it busy");
}

#[test]
fn an_erasure_and_a_write_after_it_are_announced() {
    let hub = hub(StreamConfig::default());
    let a = open(&hub, &["alice"]);
    hub.publish("alice", None, record(1, "online", 60, Utc::now()), Source::Watcher);
    a.subscriber().take();
    hub.publish("alice", None, Arc::new(Record { revision: 2, presence: None }), Source::Watcher);
    assert_eq!(revisions(&a.subscriber().take()), [("alice".into(), 2, ChangeKind::Erase)]);
    hub.publish("alice", None, record(3, "online", 60, Utc::now()), Source::Watcher);
    assert_eq!(revisions(&a.subscriber().take()), [("alice".into(), 3, ChangeKind::Update)]);
}

#[test]
fn the_resume_buffer_keeps_exactly_its_size_and_a_reset_forgets_it_all() {
    let hub = hub(StreamConfig { resume_buffer: 3, ..StreamConfig::default() });
    let a = open(&hub, &["alice"]);
    for (revision, status) in (1..=5).zip(["online", "away", "busy", "online", "away"]) {
        hub.publish("alice", None, record(revision, status, 60, Utc::now()), Source::Watcher);
    }
    assert_eq!(hub.lock().log.len(), 3);
    assert_eq!(hub.lock().resumable_from(), 2, "changes 3 to 5 are kept");
    let kept = Cursor::parse(&hub.cursor(2)).unwrap();
    a.subscriber().take();
    assert!(a.follow(&["alice"], Some(&kept)).resumed, "the oldest cursor still resumable");
    assert_eq!(revisions(&a.subscriber().take()), [("alice".into(), 5, ChangeKind::Update)]);
    let now_cursor = Cursor::parse(&hub.cursor(5)).unwrap();
    assert!(a.follow(&["alice"], Some(&now_cursor)).resumed, "nothing since: resumed, nothing queued");
    assert!(a.subscriber().take().is_empty());
    // The bucket was replaced: its revisions start over, and no cursor resumes.
    hub.reset();
    assert!(!a.follow(&["alice"], Some(&kept)).resumed);
    hub.publish("alice", None, record(1, "busy", 60, Utc::now()), Source::Watcher);
    assert_eq!(revisions(&a.subscriber().take()), [("alice".into(), 1, ChangeKind::Update)]);
}

#[test]
fn subscribers_hear_when_the_link_goes_stale_and_fresh_once_each() {
    let link = LinkState::new();
    let hub = Hub::new(StreamConfig::default(), link.clone(), Arc::new(Metrics::new()));
    let a = open(&hub, &["alice"]);
    hub.follow_link();
    assert!(a.subscriber().take().is_empty(), "fresh from the start: nothing to say");
    link.mark_behind();
    hub.follow_link();
    let told = a.subscriber().take();
    assert_eq!((told.link, told.changes.len()), (Some(LinkEvent::Stale), 0));
    assert!(!told.is_empty() && told.last_seq().is_none());
    hub.follow_link();
    assert!(a.subscriber().take().is_empty(), "told once");
    link.mark_caught_up();
    hub.follow_link();
    assert_eq!(a.subscriber().take().link, Some(LinkEvent::Fresh));
    let late = open(&hub, &["bob"]);
    link.mark_behind();
    hub.follow_link();
    assert_eq!(late.subscriber().take().link, Some(LinkEvent::Stale), "every subscriber");
}

#[test]
fn a_presence_expired_when_the_hub_hears_of_it_is_not_announced_again() {
    let hub = hub(StreamConfig::default());
    let a = open(&hub, &["alice"]);
    hub.publish("alice", None, written_ago(1, "busy", 60, chrono::Duration::seconds(61)), Source::Watcher);
    a.subscriber().take();
    hub.expire_due(Utc::now());
    assert!(a.subscriber().take().is_empty(), "its change already showed it offline");
    assert!(hub.lock().timers.is_empty());
}

#[test]
fn an_expiry_comes_due_at_its_exact_time() {
    let hub = hub(StreamConfig::default());
    let a = open(&hub, &["alice"]);
    let live = record(1, "online", 60, Utc::now());
    let at = live.presence.as_ref().unwrap().expires_at();
    hub.publish("alice", None, live, Source::Watcher);
    a.subscriber().take();
    hub.expire_due(at - chrono::Duration::milliseconds(1));
    assert!(a.subscriber().take().is_empty());
    hub.expire_due(at);
    assert_eq!(revisions(&a.subscriber().take()), [("alice".into(), 1, ChangeKind::Expire)]);
}
