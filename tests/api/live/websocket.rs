//! Live presence over the WebSocket, browsers' origins, and the `presence watch` command.

use super::*;

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
    let named = stream(format!("http://localhost:{}", app.addr.port())).await.unwrap();
    assert_eq!(named.status(), StatusCode::OK, "the node's own page, as localhost");
    // DNS rebinding: a name of the attacker's pointed at the node; Host and Origin agree.
    let rebound = format!("evil.example:{}", app.addr.port());
    let rebinding = app
        .http
        .get(app.url("/api/v2/presence/stream?users=a"))
        .header("host", &rebound)
        .header("origin", format!("http://{rebound}"))
        .send()
        .await
        .unwrap();
    assert_error(rebinding, StatusCode::FORBIDDEN).await;

    let mut request = tokio_tungstenite::tungstenite::client::IntoClientRequest::into_client_request(
        format!("ws://{}/api/v2/ws", app.addr),
    )
    .unwrap();
    request.headers_mut().insert("origin", "https://evil.example".parse().unwrap());
    assert!(
        tokio_tungstenite::connect_async(request).await.is_err(),
        "a foreign page's WebSocket is refused"
    );
    let mut request = tokio_tungstenite::tungstenite::client::IntoClientRequest::into_client_request(
        format!("ws://{}/api/v2/ws", app.addr),
    )
    .unwrap();
    request.headers_mut().insert("host", rebound.parse().unwrap());
    request.headers_mut().insert("origin", format!("http://{rebound}").parse().unwrap());
    assert!(
        tokio_tungstenite::connect_async(request).await.is_err(),
        "a rebinding page's WebSocket is refused"
    );
    drop((ok, same, named));
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
    let header = next().await;
    assert!(header.starts_with("USER  STATUS   LAST SEEN"), "{header}");
    assert_eq!(next().await, "mia   offline  -                         -");
    assert_eq!(next().await, "ned   offline  -                         -");
    let ned = app.set("ned", json!({"status": "busy", "message": "Call"})).await;
    let (seen, updated) = (ned["last_seen"].as_str().unwrap(), ned["updated_at"].as_str().unwrap());
    assert_eq!(
        next().await,
        format!("ned   busy     {seen}  {updated}  \"Call\""),
        "the presence's own times"
    );
    let mia = app.set("mia", json!({"status": "online", "ttl": 1})).await;
    let (seen, updated) = (mia["last_seen"].as_str().unwrap(), mia["updated_at"].as_str().unwrap());
    assert_eq!(next().await, format!("mia   online   {seen}  {updated}"));
    assert_eq!(next().await, format!("mia   offline  {seen}  {updated}  (expired)"));
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
