//! Live presence: the event stream and the WebSocket, over real sockets, against real nodes.

use std::{
    collections::HashMap,
    time::{Duration, Instant},
};

use chrono::{DateTime, Utc};
use reqwest::StatusCode;
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_tungstenite::tungstenite::Message;

use crate::helpers::{
    ChaosProxy, TestApp, assert_error, eventually, json_of, leaf_app,
    live::{Sse, Ws},
};

const SECOND: Duration = Duration::from_secs(1);
const FIVE: Duration = Duration::from_secs(5);

/// The revision of each change, by user, in the order received: never lower after higher.
fn assert_revisions_only_grow(changes: &[Value]) {
    let mut last: HashMap<String, u64> = HashMap::new();
    for change in changes {
        let user = change["user_id"].as_str().unwrap().to_string();
        let revision = change["revision"].as_u64().unwrap();
        let before = last.insert(user.clone(), revision).unwrap_or(0);
        assert!(revision >= before, "{user}: revision {revision} after {before}: {changes:#?}");
    }
}

/// Waits until `/health` counts `n` open streams (closed ones are forgotten).
async fn streams_open(app: &TestApp, n: u64) {
    let what = format!("{n} streams open");
    eventually(FIVE, &what, || async { (app.health().await["streams"] == n).then_some(()) }).await;
}

fn metric(text: &str, series: &str) -> f64 {
    text.lines()
        .find_map(|l| l.strip_prefix(series).and_then(|v| v.trim().parse().ok()))
        .unwrap_or_else(|| panic!("no {series} in the metrics"))
}

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

/// Reads changes until one for `user` is among them too.
async fn resumed_or_more(sse: &mut Sse, mut changes: Vec<Value>, user: &str) -> Vec<Value> {
    if !changes.iter().any(|c| c["user_id"] == user) {
        changes.extend(sse.changes_until(FIVE, |c| c["user_id"] == user).await);
    }
    changes
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
async fn a_websocket_subscribes_gets_snapshots_and_changes_and_survives_bad_messages() {
    let app = TestApp::spawn().await;
    app.set("kay", json!({"status": "away", "message": "lunch"})).await;
    let mut ws = Ws::connect(&app).await;

    // Bad messages get an error and the connection stays.
    for bad in [
        Message::text("not json"),
        Message::text(r#"{"type":"subscribe","users":["bad id!"]}"#),
        Message::text(r#"{"type":"subscribe","users":[]}"#),
        Message::text(r#"{"type":"subscribe"}"#),
        Message::text(r#"{"type":"dance"}"#),
        Message::text(
            json!({"type": "subscribe", "users": (0..1001).map(|i| format!("u{i}")).collect::<Vec<_>>()})
                .to_string(),
        ),
        Message::binary(vec![0, 159, 146, 150]),
    ] {
        ws.send_raw(bad.clone()).await;
        let error = ws.expect("error", FIVE).await;
        assert!(error["error"].as_str().is_some_and(|e| !e.is_empty()), "{bad:?}: {error}");
    }
    ws.send(json!({"type": "ping"})).await;
    ws.expect("pong", FIVE).await;

    ws.send(json!({"type": "subscribe", "users": ["kay", "lee"]})).await;
    let snapshot = ws.expect("snapshot", FIVE).await;
    let read = json_of(app.read_many(&["kay", "lee"]).await).await.1;
    assert_eq!(snapshot["data"], read["data"]);

    let answered = app.set("lee", json!({"status": "busy"})).await;
    let changes = ws.expect("changes", FIVE).await;
    assert_eq!(changes["changes"][0]["user_id"], "lee");
    assert_eq!(changes["changes"][0]["presence"], answered);

    // A new subscribe replaces the list; unsubscribe takes users off it.
    ws.send(json!({"type": "subscribe", "users": ["kay"]})).await;
    let snapshot = ws.expect("snapshot", FIVE).await;
    assert_eq!(snapshot["data"].as_object().unwrap().len(), 1);
    app.set("lee", json!({"status": "online"})).await;
    app.set("kay", json!({"status": "online"})).await;
    let changes = ws.expect("changes", FIVE).await;
    assert!(changes["changes"].as_array().unwrap().iter().all(|c| c["user_id"] == "kay"), "{changes}");
    ws.send(json!({"type": "unsubscribe", "users": ["kay"]})).await;
    ws.send(json!({"type": "ping"})).await;
    ws.expect("pong", FIVE).await;
    app.set("kay", json!({"status": "away"})).await;
    assert!(ws.next_within(Duration::from_millis(500)).await.is_none(), "nobody watched: nothing comes");

    // A snapshot larger than one frame (it goes out in several) arrives whole.
    let many: Vec<String> = (0..300).map(|i| format!("someone-with-a-longer-id-{i}")).collect();
    ws.send(json!({"type": "subscribe", "users": many})).await;
    let snapshot = ws.expect("snapshot", FIVE).await;
    assert_eq!(snapshot["data"].as_object().unwrap().len(), 300);
    assert!(snapshot.to_string().len() > 16 * 1024);

    let metrics = app.metrics().await;
    assert_eq!(metric(&metrics, "presence_streams_open{kind=\"websocket\"}"), 1.0);
    let plain = app.get("/api/v2/ws").await;
    let error = assert_error(plain, StatusCode::BAD_REQUEST).await;
    assert!(error.contains("WebSocket upgrade"), "{error}");
    ws.socket.close(None).await.unwrap();
    streams_open(&app, 0).await;
    app.stop().await;
}

#[tokio::test]
async fn a_websocket_peer_that_answers_no_pings_is_dropped() {
    let app = TestApp::spawn_with(|c| c.stream.keep_alive = SECOND).await;
    // A raw upgrade that then reads nothing and answers nothing.
    let mut raw = tokio::net::TcpStream::connect(app.addr).await.unwrap();
    let upgrade = "GET /api/v2/ws HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\
                   Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n";
    raw.write_all(upgrade.as_bytes()).await.unwrap();
    let mut head = vec![0; 1024];
    let n = raw.read(&mut head).await.unwrap();
    assert!(String::from_utf8_lossy(&head[..n]).starts_with("HTTP/1.1 101"));
    eventually(Duration::from_secs(10), "the silent peer is dropped", || async {
        let metrics = app.metrics().await;
        (metric(&metrics, "presence_stream_clients_dropped_total{reason=\"dead\"}") == 1.0).then_some(())
    })
    .await;
    streams_open(&app, 0).await;
    app.stop().await;
}

#[tokio::test]
async fn browsers_from_allowed_origins_only() {
    let app =
        TestApp::spawn_with(|c| c.service.cors.allowed_origins = vec!["https://app.example".into()]).await;
    let get = |origin: &'static str| {
        app.http.get(app.url("/api/v2/presence?users=a")).header("origin", origin).send()
    };
    let allowed = get("https://app.example").await.unwrap();
    assert_eq!(allowed.headers()["access-control-allow-origin"], "https://app.example");
    let other = get("https://evil.example").await.unwrap();
    assert!(other.headers().get("access-control-allow-origin").is_none());

    let preflight = app
        .http
        .request(reqwest::Method::OPTIONS, app.url("/api/v2/presence/alice"))
        .header("origin", "https://app.example")
        .header("access-control-request-method", "PUT")
        .header("access-control-request-headers", "authorization,content-type")
        .send()
        .await
        .unwrap();
    assert!(preflight.status().is_success(), "{}", preflight.status());
    let methods = preflight.headers()["access-control-allow-methods"].to_str().unwrap().to_string();
    assert!(methods.contains("PUT"), "{methods}");

    let stream = |origin: String| {
        app.http.get(app.url("/api/v2/presence/stream?users=a")).header("origin", origin).send()
    };
    assert_error(stream("https://evil.example".into()).await.unwrap(), StatusCode::FORBIDDEN).await;
    let ok = stream("https://app.example".into()).await.unwrap();
    assert_eq!(ok.status(), StatusCode::OK);
    let same = stream(format!("http://{}", app.addr)).await.unwrap();
    assert_eq!(same.status(), StatusCode::OK, "the node's own page is same-origin");

    let mut request = tokio_tungstenite::tungstenite::client::IntoClientRequest::into_client_request(
        format!("ws://{}/api/v2/ws", app.addr),
    )
    .unwrap();
    request.headers_mut().insert("origin", "https://evil.example".parse().unwrap());
    assert!(
        tokio_tungstenite::connect_async(request).await.is_err(),
        "a foreign page's WebSocket is refused"
    );
    drop((ok, same));
    app.stop().await;

    // By default no foreign origin is allowed.
    let app = TestApp::spawn().await;
    let response = app
        .http
        .get(app.url("/api/v2/presence?users=a"))
        .header("origin", "https://app.example")
        .send()
        .await
        .unwrap();
    assert!(response.headers().get("access-control-allow-origin").is_none());
    app.stop().await;
}

#[tokio::test]
async fn presence_watch_prints_a_line_per_change() {
    use tokio::io::AsyncBufReadExt;
    let app = TestApp::spawn().await;
    let mut watch = tokio::process::Command::new(env!("CARGO_BIN_EXE_presence"))
        .args(["watch", "--url", &format!("http://{}", app.addr), "mia", "ned"])
        .stdout(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut lines = tokio::io::BufReader::new(watch.stdout.take().unwrap()).lines();
    let mut next = async || tokio::time::timeout(FIVE, lines.next_line()).await.unwrap().unwrap().unwrap();
    assert!(next().await.ends_with("  mia  offline"));
    assert!(next().await.ends_with("  ned  offline"));
    app.set("ned", json!({"status": "busy", "message": "Call"})).await;
    assert!(next().await.ends_with("  ned  busy \"Call\""));
    app.set("mia", json!({"status": "online", "ttl": 1})).await;
    assert!(next().await.ends_with("  mia  online"));
    assert!(next().await.ends_with("  mia  offline  (expired)"));
    watch.kill().await.unwrap();

    // A refused request says why and exits.
    let refused = tokio::process::Command::new(env!("CARGO_BIN_EXE_presence"))
        .args(["watch", "--url", &format!("http://{}", app.addr), "bad id"])
        .output()
        .await
        .unwrap();
    assert!(!refused.status.success());
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
