//! The presence lifecycle: expiry transitions in the KV with exactly one expire event, update
//! events and the audit log, history, erasure and retention.

use std::time::Duration;

use chrono::{DateTime, Utc};
use futures::StreamExt;
use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::helpers::{NatsServer, TestApp, assert_error, bucket, eventually, external_app, json_of, mint};

fn nats_url(app: &TestApp) -> String {
    app.nats_url()
}

async fn subscribe(url: &str, subject: &str) -> (async_nats::Client, async_nats::Subscriber) {
    let client = crate::helpers::nats_connect(url).await;
    let sub = client.subscribe(subject.to_string()).await.unwrap();
    client.flush().await.unwrap();
    (client, sub)
}

/// Every message that arrives within `quiet` of the previous one (or of the start).
async fn drain(sub: &mut async_nats::Subscriber, quiet: Duration) -> Vec<Value> {
    let mut out = Vec::new();
    while let Ok(Some(m)) = tokio::time::timeout(quiet, sub.next()).await {
        out.push(serde_json::from_slice(&m.payload).unwrap());
    }
    out
}

async fn stored(url: &str, user: &str) -> Option<Value> {
    let kv = bucket(url).await;
    kv.get(format!("user.{user}")).await.unwrap().map(|b| serde_json::from_slice(&b).unwrap())
}

fn time(v: &Value) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(v.as_str().unwrap()).unwrap().with_timezone(&Utc)
}

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
async fn update_events_carry_the_schema_and_increasing_revisions() {
    let app = TestApp::spawn().await;
    let (_client, mut events) = subscribe(&nats_url(&app), "presence.update.ada").await;
    for status in ["online", "busy", "offline"] {
        assert_eq!(app.put("ada", json!({"status": status, "message": "m"})).await.status(), StatusCode::OK);
    }
    let mut seen = Vec::new();
    while seen.len() < 3 {
        let m = tokio::time::timeout(Duration::from_secs(5), events.next()).await.unwrap().unwrap();
        seen.push(serde_json::from_slice::<Value>(&m.payload).unwrap());
    }
    let keys: Vec<&str> = seen[0].as_object().unwrap().keys().map(String::as_str).collect();
    for key in ["kind", "user_id", "presence", "previous_status", "revision", "node_id", "actor", "timestamp"]
    {
        assert!(keys.contains(&key), "{key} in {keys:?}");
    }
    assert!(seen.iter().all(|e| e["kind"] == "update" && e["actor"] == "ada" && e["node_id"] == "test-node"));
    let stamp = seen[0]["timestamp"].as_str().unwrap();
    assert!(
        stamp.len() == 24 && stamp.ends_with('Z'),
        "RFC 3339 UTC with milliseconds, as everywhere: {stamp}"
    );
    let revisions: Vec<u64> = seen.iter().map(|e| e["revision"].as_u64().unwrap()).collect();
    assert!(revisions.windows(2).all(|w| w[0] < w[1]), "{revisions:?}");
    assert_eq!(seen[0]["previous_status"], Value::Null);
    assert_eq!(seen[1]["previous_status"], "online");
    assert_eq!(seen[2]["previous_status"], "busy");
    assert_eq!(seen[2]["presence"]["status"], "offline");

    // The audit log holds them too, and the owner reads them newest first.
    let (status, body) = json_of(app.history("ada", Some(2)).await).await;
    assert_eq!(status, StatusCode::OK);
    let listed: Vec<u64> =
        body["data"]["ada"].as_array().unwrap().iter().map(|e| e["revision"].as_u64().unwrap()).collect();
    assert_eq!(listed, vec![revisions[2], revisions[1]]);
    app.stop().await;
}

#[tokio::test]
async fn history_is_for_its_owner_only() {
    let app = TestApp::spawn().await;
    app.set("bea", json!({"status": "online"})).await;
    let url = app.url("/api/v2/presence/bea/history");
    assert_error(app.http.get(&url).send().await.unwrap(), StatusCode::UNAUTHORIZED).await;
    assert_error(app.http.get(&url).bearer_auth(mint("cid")).send().await.unwrap(), StatusCode::FORBIDDEN)
        .await;
    for bad in ["0", "1001", "x"] {
        let r = app.http.get(format!("{url}?limit={bad}")).bearer_auth(mint("bea")).send().await.unwrap();
        assert_error(r, StatusCode::BAD_REQUEST).await;
    }
    let (status, body) = json_of(app.history("bea", None).await).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["data"]["bea"].as_array().unwrap().len(), 1);
    let (_, empty) = json_of(app.history("cid", None).await).await;
    assert_eq!(empty["data"]["cid"], json!([]));
    app.stop().await;
}

#[tokio::test]
async fn erasure_leaves_nothing_readable() {
    let app = TestApp::spawn().await;
    for status in ["online", "away"] {
        app.set("dan", json!({"status": status, "message": "personal"})).await;
    }
    app.set("eve", json!({"status": "online"})).await;
    let as_eve = app.http.delete(app.url("/api/v2/presence/dan")).bearer_auth(mint("eve"));
    assert_error(as_eve.send().await.unwrap(), StatusCode::FORBIDDEN).await;
    let (status, body) = json_of(app.erase("dan").await).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body, json!({"success": true}));

    assert_error(app.read("dan").await, StatusCode::NOT_FOUND).await;
    let (_, list) = json_of(app.read_many(&["dan"]).await).await;
    assert_eq!(list["data"]["dan"], json!({"user_id": "dan", "status": "offline"}));
    let (_, history) = json_of(app.history("dan", None).await).await;
    assert_eq!(history["data"]["dan"], json!([]));
    let kv = bucket(&nats_url(&app)).await;
    let mut revisions = kv.history("user.dan").await.unwrap();
    while let Some(entry) = revisions.next().await {
        let entry = entry.unwrap();
        assert!(entry.value.is_empty(), "no value survives erasure: {:?}", entry.operation);
    }
    // Another user's data is untouched, and erasing again is fine.
    assert_eq!(app.get("/api/v2/presence/eve").await.status(), StatusCode::OK);
    assert_eq!(app.erase("dan").await.status(), StatusCode::OK);
    app.stop().await;
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
        (app.nats_health().await.1["watcher"]["applied_revision"].as_u64() >= Some(1)).then_some(())
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
        (second.nats_health().await.1["watcher"]["applied_revision"].as_u64() >= Some(1)).then_some(())
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

/// A history read is bounded: the audit log keeps the newest `events.max_per_user` events of
/// each kind per user, and the read leaves no consumer behind.
#[tokio::test]
async fn history_reads_are_bounded_and_leave_nothing_behind() {
    let app = TestApp::spawn_with(|c| {
        c.events.max_per_user = 5;
        c.rate_limit.enabled = false;
    })
    .await;
    for i in 0..12 {
        app.set("hal", json!({"status": "online", "message": format!("m{i}")})).await;
    }
    let js = async_nats::jetstream::new(crate::helpers::nats_connect(&nats_url(&app)).await);
    let state = |js: async_nats::jetstream::Context| async move {
        js.get_stream("PRESENCE_EVENTS").await.ok()?.info().await.ok().map(|i| i.state.clone())
    };
    eventually(Duration::from_secs(5), "the log holds the newest five", || async {
        (state(js.clone()).await?.messages == 5).then_some(())
    })
    .await;
    let (status, body) = json_of(app.history("hal", Some(1000)).await).await;
    assert_eq!(status, StatusCode::OK);
    let messages: Vec<&str> = body["data"]["hal"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["presence"]["message"].as_str().unwrap())
        .collect();
    assert_eq!(messages, ["m11", "m10", "m9", "m8", "m7"]);
    eventually(Duration::from_secs(3), "no consumer left behind", || async {
        (state(js.clone()).await?.consumer_count == 0).then_some(())
    })
    .await;
    app.stop().await;
}

/// History reads and erasures are owner operations under the per-user limit.
#[tokio::test]
async fn history_and_erasure_are_rate_limited_per_user() {
    let app = TestApp::spawn_with(|c| {
        c.rate_limit.writes_per_second = 1;
        c.rate_limit.write_burst = 2;
    })
    .await;
    let statuses =
        |responses: Vec<reqwest::Response>| responses.iter().map(|r| r.status().as_u16()).collect::<Vec<_>>();
    let history =
        vec![app.history("ned", None).await, app.history("ned", None).await, app.history("ned", None).await];
    assert_eq!(statuses(history), [200, 200, 429]);
    let erasures = vec![app.erase("ole").await, app.erase("ole").await, app.erase("ole").await];
    assert_eq!(statuses(erasures), [200, 200, 429]);
    app.stop().await;
}

#[tokio::test]
async fn an_invisible_user_reads_offline_to_everyone_but_themselves() {
    let app = TestApp::spawn().await;
    let seen = app.set("ivy", json!({"status": "online", "message": "here"})).await;
    let last_seen = seen["last_seen"].clone();
    let mut stream = crate::helpers::live::Sse::open(&app, "ivy", None).await;
    stream.expect("snapshot", Duration::from_secs(5)).await;
    let (_client, mut events) = subscribe(&nats_url(&app), "presence.*.ivy").await;

    // Going invisible: the writer sees what they wrote.
    let wrote = app.set("ivy", json!({"status": "invisible", "message": "hiding", "ttl": 2})).await;
    assert_eq!(wrote["status"], "invisible");
    assert_eq!(wrote["last_seen"], last_seen, "last_seen does not advance");

    // Everyone else: offline, as if their last write had been when they were last seen.
    let public = json!({"user_id": "ivy", "status": "offline", "last_seen": last_seen,
                        "updated_at": last_seen, "node_id": "test-node"});
    let (_, body) = json_of(app.read("ivy").await).await;
    assert_eq!(body["data"]["ivy"], public, "a read without a token");
    let other = app.http.get(app.url("/api/v2/presence/ivy")).bearer_auth(mint("eve")).send().await.unwrap();
    assert_eq!(json_of(other).await.1["data"]["ivy"], public, "a read with someone else's token");
    let (_, many) = json_of(app.read_many(&["ivy"]).await).await;
    assert_eq!(many["data"]["ivy"], public, "a multi-user read");
    let change = stream.expect("change", Duration::from_secs(5)).await;
    assert_eq!(change.data["changes"][0]["presence"], public, "a live change");
    let event = tokio::time::timeout(Duration::from_secs(5), events.next()).await.unwrap().unwrap();
    let event: Value = serde_json::from_slice(&event.payload).unwrap();
    assert_eq!(event["presence"], public, "the event others receive");
    assert_eq!(event["previous_status"], "online");
    let forged =
        app.http.get(app.url("/api/v2/presence/ivy")).bearer_auth("ivy-says-so").send().await.unwrap();
    assert_eq!(json_of(forged).await.1["data"]["ivy"], public, "a token that does not verify");

    // The owner, with their own token, sees it as it is.
    let own = app.http.get(app.url("/api/v2/presence/ivy")).bearer_auth(mint("ivy")).send().await.unwrap();
    let (_, own) = json_of(own).await;
    assert_eq!(
        (&own["data"]["ivy"]["status"], &own["data"]["ivy"]["message"]),
        (&json!("invisible"), &json!("hiding"))
    );

    // Its ttl runs out: offline for the owner too, and nothing is announced (to others it was
    // offline already). A visible user expiring at the same moment is announced meanwhile.
    app.set("lux", json!({"status": "online", "ttl": 2})).await;
    let (_lux_client, mut lux) = subscribe(&nats_url(&app), "presence.expire.lux").await;
    let announced = tokio::time::timeout(Duration::from_secs(10), lux.next()).await;
    assert!(announced.is_ok_and(|m| m.is_some()), "the expiry job has run past both");
    let own = app.http.get(app.url("/api/v2/presence/ivy")).bearer_auth(mint("ivy")).send().await.unwrap();
    assert_eq!(json_of(own).await.1["data"]["ivy"]["status"], "offline");
    let quiet = drain(&mut events, Duration::from_millis(300)).await;
    assert!(quiet.is_empty(), "an invisible presence's expiry is not announced: {quiet:?}");
    let late = stream.next_within(Duration::from_millis(300)).await;
    assert!(late.is_none(), "nor on the live stream: {late:?}");

    // Visible again: last_seen moves on.
    let back = app.set("ivy", json!({"status": "online"})).await;
    assert_ne!(back["last_seen"], last_seen);
    app.stop().await;
}
