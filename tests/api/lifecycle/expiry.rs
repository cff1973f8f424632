//! Expiry transitions: one per expiry across nodes, refreshes, expiries due while a node was down or NATS away, the schedule's size, retention, the clock.

use super::*;

#[tokio::test]
async fn an_expired_presence_turns_offline_in_the_kv_with_one_event_across_two_nodes() {
    let nats = NatsServer::start().await;
    let a = external_app(&nats, "node-a").await;
    let b = external_app(&nats, "node-b").await;
    let (_client, mut events) = subscribe(&nats.url(), "presence.expire.>").await;
    let (_, put) = json_of(a.put("xena", json!({"status": "busy", "message": "brb", "ttl": 1})).await).await;
    let written = put["data"]["xena"].clone();
    let expires = time(&written["updated_at"]) + chrono::Duration::seconds(1);

    let record = eventually(Duration::from_secs(4), "the KV record turns offline", || async {
        stored(&nats.url(), "xena").await.filter(|v| v["status"] == "offline")
    })
    .await;
    assert!(Utc::now() - expires < chrono::Duration::milliseconds(2000), "within about a second of expiry");
    assert_eq!(record["last_seen"], json!(time(&written["last_seen"])), "last_seen kept");
    assert!(record.get("message").is_none(), "message cleared");

    let seen = drain(&mut events, Duration::from_millis(1500)).await;
    assert_eq!(seen.len(), 1, "exactly one expire event across both nodes: {seen:?}");
    let event = &seen[0];
    assert_eq!(event["kind"], "expire");
    assert_eq!(event["user_id"], "xena");
    assert_eq!(event["actor"], "system");
    assert_eq!(event["previous_status"], "busy");
    assert_eq!(event["presence"]["status"], "offline");
    assert!(["node-a", "node-b"].contains(&event["node_id"].as_str().unwrap()));

    // Both nodes read the same thing, before and after the transition.
    for app in [&a, &b] {
        let (_, body) = json_of(app.get("/api/v2/presence/xena").await).await;
        assert_eq!(body["data"]["xena"]["status"], "offline");
        assert_eq!(body["data"]["xena"]["last_seen"], written["last_seen"]);
    }
    a.stop().await;
    b.stop().await;
}

#[tokio::test]
async fn a_refresh_before_expiry_keeps_it_online_with_no_expire_event() {
    let app = TestApp::spawn().await;
    let (_client, mut events) = subscribe(&nats_url(&app), "presence.expire.yuri").await;
    let (_, first) = json_of(app.put("yuri", json!({"status": "online", "ttl": 2})).await).await;
    let first_expiry = time(&first["data"]["yuri"]["updated_at"]) + chrono::Duration::seconds(2);
    eventually(Duration::from_secs(3), "most of the ttl has passed", || async {
        (Utc::now() > first_expiry - chrono::Duration::milliseconds(500)).then_some(())
    })
    .await;
    assert_eq!(app.put("yuri", json!({"status": "online", "ttl": 30})).await.status(), StatusCode::OK);
    eventually(Duration::from_secs(5), "the first expiry time is well past", || async {
        (Utc::now() > first_expiry + chrono::Duration::milliseconds(1500)).then_some(())
    })
    .await;
    assert!(drain(&mut events, Duration::from_millis(200)).await.is_empty(), "no expire event");
    assert_eq!(stored(&nats_url(&app), "yuri").await.unwrap()["status"], "online");
    app.stop().await;
}

#[tokio::test]
async fn a_node_started_after_expiry_times_passed_still_expires_them() {
    let nats = NatsServer::start().await;
    let first = external_app(&nats, "first").await;
    first.set("zoe", json!({"status": "away", "ttl": 1})).await;
    first.stop().await;
    let (_client, mut events) = subscribe(&nats.url(), "presence.expire.zoe").await;
    let record = stored(&nats.url(), "zoe").await.unwrap();
    let expires = time(&record["expires_at"]);
    eventually(Duration::from_secs(3), "the expiry time passes with no node running", || async {
        (Utc::now() > expires + chrono::Duration::milliseconds(300)).then_some(())
    })
    .await;
    assert_eq!(stored(&nats.url(), "zoe").await.unwrap()["status"], "away", "nobody expired it yet");

    let second = external_app(&nats, "second").await;
    let event =
        tokio::time::timeout(Duration::from_secs(5), events.next()).await.expect("an expire event").unwrap();
    let event: Value = serde_json::from_slice(&event.payload).unwrap();
    assert_eq!(event["node_id"], "second");
    assert_eq!(stored(&nats.url(), "zoe").await.unwrap()["status"], "offline");
    second.stop().await;
}

#[tokio::test]
async fn records_older_than_the_retention_leave_the_bucket_and_the_cache() {
    let app = TestApp::spawn_with(|c| c.nats.kv.retention = Duration::from_secs(2)).await;
    app.set("fay", json!({"status": "online", "ttl": 3600})).await;
    assert_eq!(app.get("/api/v2/presence/fay").await.status(), StatusCode::OK);
    eventually(Duration::from_secs(10), "retention removes the record and the cache follows", || async {
        (app.get("/api/v2/presence/fay").await.status() == StatusCode::NOT_FOUND).then_some(())
    })
    .await;
    assert!(stored(&nats_url(&app), "fay").await.is_none());
    app.stop().await;
}

#[tokio::test]
async fn health_reports_the_clock_offset_to_the_nats_server() {
    let app = TestApp::spawn().await;
    // A write from before the watcher started counts as history; the next one is fresh.
    app.set("gus", json!({"status": "online"})).await;
    eventually(Duration::from_secs(5), "the watcher runs", || async {
        let watcher = app.nats_health().await.1["watcher"].clone();
        (watcher["connected"] == true && watcher["lag"] == 0).then_some(())
    })
    .await;
    app.set("gus", json!({"status": "away"})).await;
    let offset = eventually(Duration::from_secs(5), "the watcher estimated the offset", || async {
        let health = app.health().await;
        health["clock_offset_ms"].as_i64()
    })
    .await;
    assert!(offset.abs() < 1000, "same machine, same clock: {offset} ms");
    let health = app.health().await;
    assert_eq!(health["status"], "ok");
    app.stop().await;
}

#[tokio::test]
async fn expiries_that_come_due_while_nats_is_away_happen_when_it_returns() {
    let mut nats = NatsServer::start().await;
    let app = external_app(&nats, "patient").await;
    app.set("ola", json!({"status": "online", "ttl": 1})).await;
    let expires = time(&stored(&nats.url(), "ola").await.unwrap()["expires_at"]);
    nats.kill();
    app.wait_health("degraded", Duration::from_secs(5)).await;
    eventually(Duration::from_secs(3), "the expiry time passes during the outage", || async {
        (Utc::now() > expires + chrono::Duration::milliseconds(500)).then_some(())
    })
    .await;
    let (_, body) = json_of(app.get("/api/v2/presence/ola").await).await;
    assert_eq!(body["data"]["ola"]["status"], "offline", "reads are exact at read time, outage or not");

    nats.restart().await;
    let (_client, mut events) = subscribe(&nats.url(), "presence.expire.ola").await;
    let record =
        eventually(Duration::from_secs(15), "the transition is written once NATS is back", || async {
            stored(&nats.url(), "ola").await.filter(|v| v["status"] == "offline")
        })
        .await;
    assert!(record.get("message").is_none());
    let event =
        tokio::time::timeout(Duration::from_secs(5), events.next()).await.expect("an expire event").unwrap();
    assert_eq!(serde_json::from_slice::<Value>(&event.payload).unwrap()["node_id"], "patient");
    app.stop().await;
}

/// A node that starts on a bucket whose last write is seconds old replays that history; its
/// timestamps say nothing about the clocks, so `/health` stays `ok` (the offset is estimated from
/// the first fresh write on).
#[tokio::test]
async fn a_restarted_node_is_not_degraded_by_old_history() {
    let nats = NatsServer::start().await;
    let first = external_app(&nats, "before").await;
    first.set("uma", json!({"status": "online"})).await;
    first.stop().await;
    let written = time(&stored(&nats.url(), "uma").await.unwrap()["updated_at"]);
    eventually(Duration::from_secs(5), "the last write is over a second old", || async {
        (Utc::now() > written + chrono::Duration::milliseconds(1500)).then_some(())
    })
    .await;
    let second = external_app(&nats, "after").await;
    second.wait_health("ok", Duration::from_secs(5)).await;
    eventually(Duration::from_secs(5), "the watcher replayed the history", || async {
        (second.cache_health().await["entries"].as_u64() >= Some(1)).then_some(())
    })
    .await;
    let health = second.health().await;
    assert_eq!(health["status"], "ok", "{health}");
    assert!(health["clock_offset_ms"].as_i64().is_none_or(|ms| ms.abs() < 1000), "{health}");
    second.set("uma", json!({"status": "away"})).await;
    let offset = eventually(Duration::from_secs(5), "a fresh write tells the offset", || async {
        second.health().await["clock_offset_ms"].as_i64()
    })
    .await;
    assert!(offset.abs() < 1000, "same machine, same clock: {offset} ms");
    assert_eq!(second.health().await["status"], "ok");
    second.stop().await;
}

/// The expiry schedule holds one entry per live user, however often the user writes, on the node
/// that takes the writes and on a node that learns of them through its watcher.
#[tokio::test]
async fn the_expiry_schedule_holds_one_entry_per_user_not_per_write() {
    let nats = NatsServer::start().await;
    let node = |id: &'static str| {
        let url = nats.url();
        TestApp::spawn_with(move |c| {
            c.nats.embedded = false;
            c.nats.url = url;
            c.service.node_id = id.into();
            c.rate_limit.enabled = false;
        })
    };
    let (writer, watcher) = (node("writer").await, node("watcher").await);
    for i in 0..500 {
        writer.set("ivy", json!({"status": "online", "ttl": 600 + i})).await;
    }
    for app in [&writer, &watcher] {
        eventually(Duration::from_secs(10), "one scheduled expiry", || async {
            let text = app.metrics().await;
            let scheduled = text.lines().find_map(|l| l.strip_prefix("presence_expiry_scheduled "))?;
            (scheduled.trim() == "1").then_some(())
        })
        .await;
    }
    writer.set("ivy", json!({"status": "offline"})).await;
    eventually(Duration::from_secs(10), "nothing left to expire", || async {
        let text = watcher.metrics().await;
        (text.lines().any(|l| l == "presence_expiry_scheduled 0")).then_some(())
    })
    .await;
    writer.stop().await;
    watcher.stop().await;
}
