//! Events, the audit log and what reads it: the event schema, history, erasure, limits, and invisible.

use super::*;

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

/// A user who only ever wrote `invisible` cannot be told apart from one never seen: 404 to a
/// single read, the unknown's `offline` in a multi-user read; to themselves, `invisible`.
#[tokio::test]
async fn a_user_only_ever_invisible_reads_like_one_never_seen() {
    let app = TestApp::spawn().await;
    app.set("shy", json!({"status": "invisible", "message": "not here"})).await;
    let (status, shy) = json_of(app.read("shy").await).await;
    let (unknown_status, unknown) = json_of(app.read("nobody").await).await;
    assert_eq!((status, unknown_status), (StatusCode::NOT_FOUND, StatusCode::NOT_FOUND), "{shy}");
    assert_eq!(shy["error"], unknown["error"].as_str().unwrap().replace("nobody", "shy"));
    let (_, many) = json_of(app.read_many(&["shy", "nobody"]).await).await;
    let mut as_unknown = many["data"]["nobody"].clone();
    as_unknown["user_id"] = json!("shy");
    assert_eq!(many["data"]["shy"], as_unknown, "the same entry as a user never seen");
    let own = app.http.get(app.url("/api/v2/presence/shy")).bearer_auth(mint("shy")).send().await.unwrap();
    assert_eq!(json_of(own).await.1["data"]["shy"]["status"], "invisible");
    app.stop().await;
}
