//! Races a real client can cause: reads against writes, erasures against in-flight work.

use std::time::Duration;

use futures::StreamExt;
use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::helpers::{ChaosProxy, NatsServer, TestApp, assert_error, bucket, eventually, json_of};

/// A read of a user nobody has written yet, racing that user's first write. The read's KV answer
/// ("never seen") may come back after the write is in the cache; it must not replace it. Once the
/// write answered 200, this node serves it. (The window is narrow on loopback; the deterministic
/// check of the same rule is `cache::load`'s unit test, which holds the load back on purpose.)
#[tokio::test]
async fn a_read_racing_the_first_write_never_leaves_a_stale_answer() {
    let app = TestApp::spawn_with(|c| c.rate_limit.enabled = false).await;
    let trials = 2000;
    futures::stream::iter(0..trials)
        .for_each_concurrent(32, |i| {
            let app = &app;
            async move {
                let user = format!("race{i}");
                let (read, write) = tokio::join!(app.read(&user), app.put(&user, json!({"status": "busy"})));
                assert!(matches!(read.status(), StatusCode::OK | StatusCode::NOT_FOUND), "{}", read.status());
                assert_eq!(write.status(), StatusCode::OK);
                let after = app.read(&user).await;
                assert_eq!(after.status(), StatusCode::OK, "trial {i}: the acknowledged write is not served");
            }
        })
        .await;
    app.stop().await;
}

/// A standalone nats-server, a chaos proxy in front of it, and a node that reaches NATS through
/// the proxy with `request_timeout`.
async fn behind_a_proxy(request_timeout: Duration) -> (NatsServer, ChaosProxy, TestApp) {
    let nats = NatsServer::start().await;
    let proxy = ChaosProxy::start(nats.port).await;
    let url = format!("nats://127.0.0.1:{}", proxy.port);
    let app = TestApp::spawn_with(move |c| {
        c.nats.embedded = false;
        c.nats.url = url;
        c.nats.request_timeout = request_timeout;
        c.service.node_id = "slow-link".into();
    })
    .await;
    (nats, proxy, app)
}

/// A write whose acknowledgement is lost: NATS stores it, but its answer takes longer than
/// `nats.request_timeout`. The client hears that the outcome is unknown and that repeating the
/// write is safe (not "nothing was stored"), and once NATS answers again the write is completed:
/// its update event is published, once, so the record and the audit log agree.
#[tokio::test]
async fn a_write_whose_acknowledgement_is_lost_says_so_and_its_event_follows() {
    let (nats, proxy, app) = behind_a_proxy(Duration::from_millis(300)).await;
    app.set("kai", json!({"status": "online"})).await;
    let watcher = async_nats::connect(nats.url()).await.unwrap();
    let mut events = watcher.subscribe("presence.update.kai").await.unwrap();
    watcher.flush().await.unwrap();

    proxy.delay(Duration::ZERO, Duration::from_millis(1500));
    let error = assert_error(
        app.put("kai", json!({"status": "busy", "message": "in flight"})).await,
        StatusCode::SERVICE_UNAVAILABLE,
    )
    .await;
    assert!(error.contains("may or may not have been stored") && error.contains("safe"), "{error}");
    let kv = bucket(&nats.url()).await;
    let stored = eventually(Duration::from_secs(5), "NATS stored the write", || async {
        let entry = kv.get("user.kai").await.ok().flatten()?;
        let value: Value = serde_json::from_slice(&entry).unwrap();
        (value["status"] == "busy").then_some(value)
    })
    .await;
    proxy.delay(Duration::ZERO, Duration::ZERO);

    let event = tokio::time::timeout(Duration::from_secs(15), async {
        loop {
            let message = events.next().await.expect("the subscription lives");
            let event: Value = serde_json::from_slice(&message.payload).unwrap();
            if event["presence"]["message"] == "in flight" {
                return event;
            }
        }
    })
    .await
    .expect("the write's update event within 15 s");
    assert_eq!(event["presence"]["status"], "busy");
    assert_eq!(event["presence"]["updated_at"], stored["updated_at"]);
    assert_eq!(event["previous_status"], "online");
    // One event in the audit log (a retried publish may reach core subscribers twice, with the
    // same message id; JetStream stores it once).
    let (_, history) = json_of(app.history("kai", None).await).await;
    let stored: Vec<&Value> = history["data"]["kai"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["presence"]["message"] == "in flight")
        .collect();
    assert_eq!(stored.len(), 1, "one event for the write, not two: {history}");
    let (_, body) = json_of(app.read("kai").await).await;
    assert_eq!(body["data"]["kai"]["message"], "in flight", "{body}");
    app.stop().await;
}

/// The amplification attack: batches of 1000 ids nobody has ever written. Each miss costs a KV
/// read, so each is charged to the client's read limit, and the "never seen" answers the cache
/// keeps are capped.
#[tokio::test]
async fn a_flood_of_unknown_ids_is_charged_per_miss_and_cannot_fill_the_cache() {
    let app = TestApp::spawn_with(|c| c.cache.max_negative_entries = 1500).await;
    let started = std::time::Instant::now();
    let mut refused = 0;
    for round in 0..10 {
        let ids: Vec<String> = (0..1000).map(|i| format!("flood{round}x{i}")).collect();
        match app.batch(json!(ids)).await.status() {
            StatusCode::OK => {}
            StatusCode::TOO_MANY_REQUESTS => refused += 1,
            other => panic!("{other}"),
        }
    }
    let seconds = started.elapsed().as_secs_f64();
    assert!(refused >= 5, "most batches are refused once the misses used up the burst: {refused}");
    let metrics = app.metrics().await;
    let kv_gets: f64 = metrics
        .lines()
        .find_map(|l| l.strip_prefix("presence_nats_request_duration_seconds_count{op=\"get\"} "))
        .map_or(0.0, |v| v.trim().parse().unwrap());
    let allowed = 2000.0 + 1000.0 * seconds;
    assert!(kv_gets <= allowed, "{kv_gets} KV reads in {seconds:.1} s; the limit allows {allowed:.0}");
    let cache = app.cache_health().await;
    assert!(cache["entries"].as_u64().unwrap() <= 1500, "{cache}");
    app.stop().await;
}

/// An erasure right after a write whose event crossed a slow link: a write at a leaf (40 ms of
/// latency each way to the center, and more) answered 200, then the user is erased at the center.
/// Nothing of the write may turn up afterwards: not the record, not its event in the audit log.
#[tokio::test]
async fn an_erasure_right_after_a_write_across_a_slow_link_leaves_nothing() {
    let center = TestApp::spawn().await;
    let proxy = ChaosProxy::start(center.config.nats.leaf_port).await;
    let leaf = crate::helpers::leaf_app(proxy.port, "slow-leaf", "far-away").await;
    leaf.set("eva", json!({"status": "online"})).await;
    proxy.delay(Duration::from_millis(300), Duration::from_millis(300));
    leaf.set("eva", json!({"status": "busy", "message": "secret"})).await;
    assert_eq!(center.erase("eva").await.status(), StatusCode::OK);
    proxy.delay(Duration::ZERO, Duration::ZERO);
    // A late event would land within the link's delay; watch the history for three times that.
    let until = std::time::Instant::now() + Duration::from_millis(1500);
    while std::time::Instant::now() < until {
        let (status, body) = json_of(center.history("eva", None).await).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(body["data"]["eva"], json!([]), "an event outlived the erasure");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    eventually(Duration::from_secs(10), "the leaf lets go of the user", || async {
        (leaf.read("eva").await.status() == StatusCode::NOT_FOUND).then_some(())
    })
    .await;
    leaf.stop().await;
    center.stop().await;
}

/// Read your writes while the watcher lags: the node's cache holds the user's previous presence
/// and its watcher is held back (its consumer deleted under it, so that the bucket's changes stop
/// reaching the node until it notices and resumes). The write path put the new presence into
/// this node's cache before its 200, so the read serves it anyway. The test checks that the
/// watcher really could not have applied the write at the time of the read (it had no consumer
/// yet), and tries again if it could.
#[tokio::test]
async fn a_write_is_read_back_at_once_even_while_the_watcher_lags_behind() {
    let app = TestApp::spawn_with(|c| c.rate_limit.enabled = false).await;
    app.set("rya", json!({"status": "online", "message": "before"})).await;
    assert_eq!(json_of(app.read("rya").await).await.1["data"]["rya"]["message"], "before", "cached");
    let operator = crate::helpers::nats_connect(&app.nats_url()).await;
    let js = async_nats::jetstream::new(operator);
    for attempt in 0..10 {
        // Hold the watcher back: delete its consumer. It resumes once it notices.
        let stream = js.get_stream("KV_presence").await.unwrap();
        let names: Vec<String> = stream.consumer_names().map(|n| n.unwrap()).collect().await;
        assert!(!names.is_empty(), "the watcher has a consumer");
        for name in &names {
            let _ = stream.delete_consumer(name).await;
        }
        let message = format!("after {attempt}");
        let (status, body) =
            json_of(app.put("rya", json!({"status": "busy", "message": message})).await).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        let (_, read) = json_of(app.read("rya").await).await;
        // Its consumer deleted before the write and no new one made yet: the watcher cannot
        // have applied the write.
        let stream = js.get_stream("KV_presence").await.unwrap();
        let behind = stream.consumer_names().collect::<Vec<_>>().await.is_empty();
        assert_eq!(
            read["data"]["rya"]["message"],
            message.as_str(),
            "the node served its previous presence: {read}"
        );
        if behind {
            app.stop().await;
            return;
        }
        // The watcher had applied the write already: the read proved nothing. Again, once the
        // watcher is back.
        eventually(Duration::from_secs(30), "the watcher resumes", || async {
            let (_, health) = app.nats_health().await;
            (health["watcher"]["lag"] == 0 && health["watcher"]["connected"] == true).then_some(())
        })
        .await;
    }
    panic!("the watcher was never behind the write; the test could not hold it back");
}

/// Waits until the bucket holds `user` with `status`, and returns the stored value.
async fn stored_with(kv: &async_nats::jetstream::kv::Store, user: &str, status: &str) -> Value {
    eventually(Duration::from_secs(5), "the write is in the bucket", || async {
        let entry = kv.get(format!("user.{user}")).await.ok().flatten()?;
        let value: Value = serde_json::from_slice(&entry).ok()?;
        (value["status"] == status).then_some(value)
    })
    .await
}

/// A write whose acknowledgement comes late, but whose record the node finds in the bucket at
/// once: that is a success, and the client hears 200 (not "outcome unknown"). The link delays
/// what NATS sends by 1.5 s, longer than `nats.request_timeout` (1 s), so the put times out;
/// the delay is lifted as soon as the record is in the bucket, so the node's look-up right after
/// the timeout is answered in time.
#[tokio::test]
async fn a_late_acknowledgement_with_the_record_in_the_bucket_is_a_success() {
    let (nats, proxy, app) = behind_a_proxy(Duration::from_secs(1)).await;
    app.set("lia", json!({"status": "online"})).await;
    let kv = bucket(&nats.url()).await;
    proxy.delay(Duration::ZERO, Duration::from_millis(1500));
    let lift = async {
        stored_with(&kv, "lia", "busy").await;
        proxy.delay(Duration::ZERO, Duration::ZERO);
    };
    let started = std::time::Instant::now();
    let (response, ()) = tokio::join!(app.put("lia", json!({"status": "busy", "message": "late"})), lift);
    let (status, body) = json_of(response).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["data"]["lia"]["message"], "late");
    assert!(started.elapsed() >= Duration::from_secs(1), "the put did time out first");
    app.stop().await;
}

/// A write whose acknowledgement comes late, and by the time the node looks, the bucket holds
/// another record for the user (another node's write came after it): the node cannot tell
/// whether its write landed, so the client hears "outcome unknown", not a 200 for a record that
/// is not there.
#[tokio::test]
async fn a_late_acknowledgement_with_another_record_in_the_bucket_is_an_unknown_outcome() {
    let (nats, proxy, app) = behind_a_proxy(Duration::from_secs(1)).await;
    app.set("mo", json!({"status": "online"})).await;
    let kv = bucket(&nats.url()).await;
    proxy.delay(Duration::ZERO, Duration::from_millis(1500));
    let overwrite = async {
        let landed = stored_with(&kv, "mo", "busy").await;
        let mut other = landed.clone();
        other["status"] = json!("away");
        other["message"] = json!("from another node");
        other["node_id"] = json!("another-node");
        kv.put("user.mo", serde_json::to_vec(&other).unwrap().into()).await.unwrap();
        proxy.delay(Duration::ZERO, Duration::ZERO);
    };
    let (response, ()) = tokio::join!(app.put("mo", json!({"status": "busy", "message": "mine"})), overwrite);
    let error = assert_error(response, StatusCode::SERVICE_UNAVAILABLE).await;
    assert!(error.contains("may or may not have been stored"), "{error}");
    app.stop().await;
}
