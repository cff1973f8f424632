//! Live presence over Server-Sent Events: snapshots, changes from every node, expiry and erasure, a leaf cut off, resuming, slow clients, refusals, keep-alives and shutdown.

use super::*;

#[tokio::test]
async fn a_stream_starts_with_the_snapshot_a_read_shows_then_delivers_each_change() {
    let app = TestApp::spawn().await;
    app.set("alice", json!({"status": "busy", "message": "In a meeting"})).await;
    let mut sse = Sse::open(&app, "alice,bob,never-seen", None).await;
    let snapshot = sse.expect("snapshot", FIVE).await;
    let read = json_of(app.read_many(&["alice", "bob", "never-seen"]).await).await.1;
    assert_eq!(snapshot.data["data"], read["data"], "the snapshot is what a multi-user read shows");
    assert_eq!(snapshot.data["data"]["never-seen"], json!({"user_id": "never-seen", "status": "offline"}));
    assert!(snapshot.id.is_some(), "a snapshot carries a resume cursor");
    assert_eq!(app.health().await["streams"], 1);

    app.set("carol", json!({"status": "online"})).await; // nobody watches carol
    let answered = app.set("bob", json!({"status": "online", "message": "hi"})).await;
    let change = sse.expect("change", FIVE).await;
    let changes = change.data["changes"].as_array().unwrap();
    assert_eq!(changes.len(), 1, "only watched users: {changes:?}");
    assert_eq!(changes[0]["user_id"], "bob");
    assert_eq!(changes[0]["kind"], "update");
    assert_eq!(changes[0]["presence"], answered, "the change shows what the write answered");
    assert!(changes[0]["revision"].as_u64().unwrap() > 0);
    assert_ne!(change.id, snapshot.id);

    let metrics = app.metrics().await;
    assert_eq!(metric(&metrics, "presence_streams_open{kind=\"sse\"}"), 1.0);
    assert!(metric(&metrics, "presence_stream_changes_delivered_total") >= 1.0);
    drop(sse);
    streams_open(&app, 0).await;
    app.stop().await;
}

#[tokio::test]
async fn a_change_made_at_another_node_arrives_and_a_burst_costs_few_messages() {
    let center = TestApp::spawn().await;
    let leaf = leaf_app(center.config.nats.leaf_port, "leaf-live", "eu-west-1").await;
    let mut at_leaf = Sse::open(&leaf, "dana", None).await;
    at_leaf.expect("snapshot", FIVE).await;
    let mut at_center = Sse::open(&center, "dana", None).await;
    at_center.expect("snapshot", FIVE).await;

    center.set("dana", json!({"status": "away"})).await;
    let seen = at_leaf.changes_until(FIVE, |c| c["presence"]["status"] == "away").await;
    assert_eq!(seen.len(), 1, "{seen:?}");
    leaf.set("dana", json!({"status": "busy"})).await;
    at_center.changes_until(FIVE, |c| c["presence"]["status"] == "busy").await;

    // Ten writes as fast as they go: fewer messages than writes, the last state last, and
    // revisions only going up.
    for i in 0..10 {
        center.set("dana", json!({"status": "online", "message": format!("burst {i}")})).await;
    }
    let mut events = 0;
    let mut changes = Vec::new();
    while !changes.iter().any(|c: &Value| c["presence"]["message"] == "burst 9") {
        let event = at_leaf.expect("change", FIVE).await;
        events += 1;
        changes.extend(event.data["changes"].as_array().unwrap().iter().cloned());
    }
    assert!(events < 10, "a burst is coalesced: {events} messages for 10 writes");
    assert_revisions_only_grow(&changes);
    leaf.stop().await;
    center.stop().await;
}

#[tokio::test]
async fn expiry_and_erasure_arrive_live() {
    let app = TestApp::spawn().await;
    let mut sse = Sse::open(&app, "erin", None).await;
    sse.expect("snapshot", FIVE).await;
    let written = app.set("erin", json!({"status": "online", "ttl": 2})).await;
    sse.changes_until(FIVE, |c| c["kind"] == "update").await;
    let expires_at: DateTime<Utc> = written["updated_at"].as_str().unwrap().parse::<DateTime<Utc>>().unwrap()
        + chrono::Duration::seconds(2);
    let expired = sse.changes_until(FIVE, |c| c["kind"] == "expire").await;
    let late = Utc::now() - expires_at;
    assert!(late < chrono::Duration::seconds(1), "the expiry arrived {late} after its time");
    let expire = expired.last().unwrap();
    assert_eq!(expire["presence"]["status"], "offline");
    assert_eq!(expire["presence"]["last_seen"], written["last_seen"]);
    // The expiry job's own `offline` record says nothing new: no second message about it.
    let again = sse.next_within(Duration::from_millis(1500)).await;
    assert!(again.is_none(), "one message per expiry: {again:?}");

    assert_eq!(app.erase("erin").await.status(), StatusCode::OK);
    let erased = sse.changes_until(FIVE, |c| c["kind"] == "erase").await;
    assert_eq!(erased.last().unwrap()["presence"], json!({"user_id": "erin", "status": "offline"}));
    app.stop().await;
}

#[tokio::test]
async fn a_leaf_cut_off_from_the_center_says_so_and_still_expires_live() {
    let center = TestApp::spawn().await;
    let proxy = ChaosProxy::start(center.config.nats.leaf_port).await;
    let leaf = leaf_app(proxy.port, "leaf-cut", "ap-south-1").await;
    let mut sse = Sse::open(&leaf, "finn", None).await;
    sse.expect("snapshot", FIVE).await;
    let written = center.set("finn", json!({"status": "busy", "ttl": 4})).await;
    sse.changes_until(FIVE, |c| c["presence"]["status"] == "busy").await;

    proxy.cut();
    sse.expect("stale", FIVE).await;
    let expires_at = written["updated_at"].as_str().unwrap().parse::<DateTime<Utc>>().unwrap()
        + chrono::Duration::seconds(4);
    let expired = sse.changes_until(Duration::from_secs(8), |c| c["kind"] == "expire").await;
    assert_eq!(expired.last().unwrap()["presence"]["status"], "offline");
    let late = Utc::now() - expires_at;
    assert!(late < chrono::Duration::seconds(1), "cut off, the expiry still came on time (late by {late})");

    proxy.heal();
    let fresh = sse.next_within(Duration::from_secs(15)).await.expect("an event after the heal");
    assert_eq!(fresh.name, "fresh", "{fresh:?}");
    leaf.stop().await;
    center.stop().await;
}

#[tokio::test]
async fn a_client_resumes_with_last_event_id_without_a_gap_or_going_back() {
    let app = TestApp::spawn().await;
    app.set("gus", json!({"status": "online"})).await;
    let mut sse = Sse::open(&app, "gus,hal", None).await;
    let snapshot = sse.expect("snapshot", FIVE).await;
    app.set("gus", json!({"status": "away"})).await;
    let change = sse.expect("change", FIVE).await;
    let seen_revision = change.data["changes"][0]["revision"].as_u64().unwrap();
    let cursor = change.id.clone().unwrap();
    drop(sse);

    // While the client is away.
    app.set("gus", json!({"status": "busy"})).await;
    app.set("hal", json!({"status": "online"})).await;
    app.set("ivy", json!({"status": "online"})).await; // not watched
    let last = app.set("gus", json!({"status": "online", "message": "back"})).await;

    let mut resumed = Sse::open(&app, "gus,hal", Some(&cursor)).await;
    let changes = resumed.changes_until(FIVE, |c| c["presence"]["message"] == "back").await;
    let hal = resumed_or_more(&mut resumed, changes, "hal").await;
    assert!(hal.iter().all(|c| c["user_id"] != "ivy"));
    assert!(
        hal.iter().all(|c| c["revision"].as_u64().unwrap() > seen_revision),
        "nothing at or before the cursor comes again: {hal:#?}"
    );
    let gus: Vec<_> = hal.iter().filter(|c| c["user_id"] == "gus").collect();
    assert_eq!(gus.last().unwrap()["presence"], last, "the latest state of gus");
    assert_revisions_only_grow(&hal);

    // A cursor this node cannot resume from (another node's, or nonsense) gets a snapshot.
    for cursor in ["deadbeef-1", "garbage", snapshot.id.as_deref().unwrap().replace('-', "x").as_str()] {
        let mut other = Sse::open(&app, "gus", Some(cursor)).await;
        let first = other.expect("snapshot", FIVE).await;
        assert_eq!(first.data["data"]["gus"], last);
    }
    app.stop().await;
}

#[tokio::test]
async fn a_subscriber_that_stops_reading_is_dropped_and_delays_nobody() {
    let app = TestApp::spawn_with(|c| {
        c.rate_limit.enabled = false;
        c.stream.write_timeout = Duration::from_secs(1);
    })
    .await;
    let users: Vec<String> = (0..20).map(|i| format!("load{i}")).collect();
    let list = users.join(",");

    // A client with a tiny receive window that sends its request and never reads.
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    let mut stuck = socket.connect(app.addr).await.unwrap();
    let request = format!("GET /api/v2/presence/stream?users={list} HTTP/1.1\r\nHost: x\r\n\r\n");
    stuck.write_all(request.as_bytes()).await.unwrap();
    let mut reader = Sse::open(&app, &list, None).await;
    reader.expect("snapshot", FIVE).await;

    let message = "m".repeat(250);
    let mut worst = Duration::ZERO;
    let started = Instant::now();
    let mut round = 0;
    loop {
        round += 1;
        for user in &users {
            app.set(user, json!({"status": "online", "message": format!("{round:03}{message}")})).await;
        }
        let sent = Instant::now();
        let want = format!("{round:03}{message}");
        let last = users.last().unwrap().clone();
        reader
            .changes_until(FIVE, |c| {
                c["user_id"] == last.as_str() && c["presence"]["message"] == want.as_str()
            })
            .await;
        worst = worst.max(sent.elapsed());
        let metrics = app.metrics().await;
        if metric(&metrics, "presence_stream_clients_dropped_total{reason=\"slow\"}") >= 1.0 {
            assert!(metric(&metrics, "presence_stream_changes_coalesced_total") > 0.0);
            break;
        }
        assert!(started.elapsed() < Duration::from_secs(60), "the stuck client was never dropped");
    }
    assert!(worst < SECOND, "the reading client kept up while the other was stuck: {worst:?}");
    // The stuck client's connection is closed: reading what was buffered ends in EOF.
    let mut sink = vec![0; 64 * 1024];
    let closed = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            match stuck.read(&mut sink).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
        }
    })
    .await;
    assert!(closed.is_ok(), "the stuck connection was closed");
    streams_open(&app, 1).await;
    app.stop().await;
}

#[tokio::test]
async fn streams_refuse_bad_lists_and_too_many_clients_with_the_error_envelope() {
    let app = TestApp::spawn_with(|c| {
        c.stream.max_connections = 2;
        c.stream.max_connections_per_ip = 2;
    })
    .await;
    for (query, status) in [
        ("", StatusCode::BAD_REQUEST),
        ("bad%20id", StatusCode::BAD_REQUEST),
        (&",".repeat(3), StatusCode::BAD_REQUEST),
        (&(0..1001).map(|i| format!("u{i}")).collect::<Vec<_>>().join(","), StatusCode::BAD_REQUEST),
    ] {
        assert_error(Sse::request(&app, query, None).await, status).await;
    }
    let missing = app.get("/api/v2/presence/stream").await;
    assert_error(missing, StatusCode::BAD_REQUEST).await;

    let _one = Sse::open(&app, "a", None).await;
    let _two = Sse::open(&app, "b", None).await;
    let full = Sse::request(&app, "c", None).await;
    assert_eq!(full.headers()["retry-after"], "5");
    assert_error(full, StatusCode::SERVICE_UNAVAILABLE).await;
    let ws = tokio_tungstenite::connect_async(format!("ws://{}/api/v2/ws", app.addr)).await;
    assert!(ws.is_err(), "the WebSocket is refused before the upgrade too");
    app.stop().await;

    let app = TestApp::spawn_with(|c| c.stream.max_connections_per_ip = 1).await;
    let _one = Sse::open(&app, "a", None).await;
    assert_error(Sse::request(&app, "b", None).await, StatusCode::TOO_MANY_REQUESTS).await;
    let metrics = app.metrics().await;
    assert_eq!(metric(&metrics, "presence_streams_refused_total{reason=\"per_ip\"}"), 1.0);
    app.stop().await;
}

#[tokio::test]
async fn an_idle_stream_gets_keep_alives_and_ends_with_a_reason_at_shutdown() {
    let app = TestApp::spawn_with(|c| c.stream.keep_alive = SECOND).await;
    let mut sse = Sse::open(&app, "olga", None).await;
    sse.expect("snapshot", FIVE).await;
    assert!(sse.next_within(Duration::from_millis(2500)).await.is_none());
    assert!(sse.comments >= 2, "keep-alive comments: {}", sse.comments);
    let mut ws = Ws::connect(&app).await;
    ws.send(json!({"type": "subscribe", "users": ["olga"]})).await;
    ws.expect("snapshot", FIVE).await;

    let stopping = Instant::now();
    let stop = tokio::spawn(app.stop());
    let closed = sse.expect("closed", FIVE).await;
    assert_eq!(closed.data["reason"], "shutdown");
    assert!(sse.next().await.is_none(), "the stream ends");
    let frame = ws.expect("closed", FIVE).await;
    assert_eq!(frame["frame"][0], 1001, "{frame}");
    stop.await.unwrap();
    assert!(stopping.elapsed() < FIVE, "open streams do not hold the shutdown: {:?}", stopping.elapsed());
}
