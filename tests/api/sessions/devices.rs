//! Device sessions at one node and across two: hello and close, the upgrade's form and refusals, max devices, the grace, idleness, a set status, invisible.

use super::*;

#[tokio::test]
async fn hello_brings_a_user_online_everywhere_and_a_close_takes_them_offline() {
    let center = TestApp::spawn().await;
    let a = leaf_app(center.config.nats.leaf_port, "leaf-a", "us-east-1").await;
    let mut at_center = watcher(&center, "mia").await;

    let device = Ws::session(&a, "mia", "laptop", "web").await;
    for app in [&a, &center] {
        let shown = wait_for(app, "mia", "online", |p| p["status"] == "online").await;
        assert_eq!(shown["devices"], json!({"web": "online"}), "{shown}");
        assert!(shown.get("ttl").is_none() && shown.get("message").is_none(), "nothing was set: {shown}");
    }
    let change = next_change(&mut at_center, 5 * SECOND).await;
    assert_eq!(
        (change["presence"]["status"].as_str(), change["kind"].as_str()),
        (Some("online"), Some("update"))
    );
    let seen = read(&center, "mia").await["last_seen"].clone();

    device.close().await;
    for app in [&a, &center] {
        let shown = wait_for(app, "mia", "offline", |p| p["status"] == "offline").await;
        assert!(shown.get("devices").is_none(), "no session, no devices: {shown}");
        assert!(shown["last_seen"].as_str() >= seen.as_str(), "last_seen kept: {shown}");
    }
    assert_eq!(next_change(&mut at_center, 5 * SECOND).await["presence"]["status"], "offline");
    // The update events tell the same story, devices included.
    let (_, history) = json_of(center.history("mia", None).await).await;
    let events = history["data"]["mia"].as_array().unwrap();
    assert_eq!(events[0]["presence"]["status"], "offline", "{history}");
    assert_eq!(events[1]["presence"]["devices"], json!({"web": "online"}), "{history}");
    for app in [a, center] {
        app.stop().await;
    }
}

#[tokio::test]
async fn a_session_may_start_on_the_upgrade_and_bad_hellos_get_clear_answers() {
    let app = TestApp::spawn().await;
    // The token in Authorization, device and kind in the query: welcome comes first.
    let url = format!("ws://{}/api/v2/ws?device=phone-1&kind=mobile", app.addr);
    let mut request =
        tokio_tungstenite::tungstenite::client::IntoClientRequest::into_client_request(url).unwrap();
    let bearer = format!("Bearer {}", mint("noor")).parse().unwrap();
    request.headers_mut().insert("authorization", bearer);
    let (socket, _) = tokio_tungstenite::connect_async(request).await.unwrap();
    let mut header = Ws { socket };
    let welcome = header.expect("welcome", 5 * SECOND).await;
    assert_eq!(welcome, json!({"type": "welcome", "user_id": "noor", "device": "phone-1"}));
    wait_for(&app, "noor", "online on mobile", |p| p["devices"] == json!({"mobile": "online"})).await;

    // The same with a refused token is refused before the upgrade, with the error envelope.
    let upgrade = |path: &'static str, token: String| {
        app.http
            .get(app.url(path))
            .header("connection", "upgrade")
            .header("upgrade", "websocket")
            .header("sec-websocket-version", "13")
            .header("sec-websocket-key", "dGhlIHNhbXBsZSBub25jZQ==")
            .bearer_auth(token)
            .send()
    };
    let refused = upgrade("/api/v2/ws?device=d&kind=web", "not-a-token".into()).await.unwrap();
    assert_eq!(refused.status(), StatusCode::UNAUTHORIZED);
    let bad_kind = upgrade("/api/v2/ws?device=d&kind=fridge", mint("noor")).await.unwrap();
    assert_eq!(bad_kind.status(), StatusCode::BAD_REQUEST, "a kind that is none");
    let bad_key = app
        .http
        .get(app.url("/api/v2/ws"))
        .header("connection", "upgrade")
        .header("upgrade", "websocket")
        .header("sec-websocket-version", "13")
        .header("sec-websocket-key", "not sixteen bytes")
        .send()
        .await
        .unwrap();
    assert_eq!(bad_key.status(), StatusCode::BAD_REQUEST, "a key that is not 16 bytes in base64");
    // Without device and kind in the query: the device `default`, of kind `other`.
    let defaults = upgrade("/api/v2/ws", mint("nia")).await.unwrap();
    assert_eq!(defaults.status(), StatusCode::SWITCHING_PROTOCOLS);
    wait_for(&app, "nia", "online on another kind", |p| p["devices"] == json!({"other": "online"})).await;
    drop(defaults);

    let mut ws = Ws::connect(&app).await;
    ws.send(json!({"type": "activity"})).await;
    assert!(ws.expect("error", 5 * SECOND).await["error"].as_str().unwrap().contains("hello"));
    let long = "d".repeat(129);
    for (device, kind, why) in
        [("", "web", "device"), ("a b", "web", "device"), (&long, "web", "device"), ("d", "fridge", "kind")]
    {
        let hello = json!({"type": "hello", "token": mint("noor"), "device": device, "kind": kind});
        ws.send(hello).await;
        let error = ws.expect("error", 5 * SECOND).await;
        assert!(error["error"].as_str().unwrap().contains(why), "{error}");
    }
    // The longest device id is 128 characters.
    ws.send(json!({"type": "hello", "token": mint("noor"), "device": "d".repeat(128), "kind": "web"})).await;
    ws.expect("welcome", 5 * SECOND).await;
    ws.send(json!({"type": "hello", "token": mint("noor"), "device": "again", "kind": "web"})).await;
    assert!(ws.expect("error", 5 * SECOND).await["error"].as_str().unwrap().contains("already"));
    let mut ws = Ws::connect(&app).await;
    // A bad token: the error with its status, then a close with 4401.
    ws.send(json!({"type": "hello", "token": "forged", "device": "d", "kind": "web"})).await;
    let error = ws.expect("error", 5 * SECOND).await;
    assert_eq!(error["status"], 401, "{error}");
    let closed = ws.expect("closed", 5 * SECOND).await;
    assert_eq!(closed["frame"][0], 4401, "{closed}");
    // A token whose subject is no user id: 4403.
    let mut ws = Ws::connect(&app).await;
    ws.send(json!({"type": "hello", "token": mint("not a user!"), "device": "d", "kind": "web"})).await;
    assert_eq!(ws.expect("error", 5 * SECOND).await["status"], 403);
    assert_eq!(ws.expect("closed", 5 * SECOND).await["frame"][0], 4403);
    assert_eq!(read(&app, "noor").await["status"], "online", "nothing stored was lost");
    app.stop().await;
}

#[tokio::test]
async fn a_user_has_at_most_max_devices_counting_those_at_other_nodes() {
    let center = TestApp::spawn_with(|c| c.sessions.max_devices = 2).await;
    let a =
        leaf_app_with(center.config.nats.leaf_port, "leaf-a", "us-east-1", |c| c.sessions.max_devices = 2)
            .await;
    let _phone = Ws::session(&a, "vic", "phone", "mobile").await;
    wait_for(&center, "vic", "on the phone", |p| p["devices"] == json!({"mobile": "online"})).await;
    let _laptop = Ws::session(&center, "vic", "laptop", "desktop").await;
    let mut third = Ws::connect(&center).await;
    third.send(json!({"type": "hello", "token": mint("vic"), "device": "tablet", "kind": "web"})).await;
    let refused = third.expect("error", 5 * SECOND).await;
    assert!(refused["error"].as_str().unwrap().contains("at most 2"), "{refused}");
    // A device already connected may connect again (a second tab, a reconnect).
    let _again = Ws::session(&center, "vic", "laptop", "desktop").await;
    for app in [a, center] {
        app.stop().await;
    }
}

#[tokio::test]
async fn an_abrupt_drop_holds_for_the_grace_and_a_reconnect_within_it_shows_nobody_anything() {
    let center = TestApp::spawn_with(|c| c.sessions.grace = 2 * SECOND).await;
    let b =
        leaf_app_with(center.config.nats.leaf_port, "leaf-b", "eu-west-1", |c| c.sessions.grace = 2 * SECOND)
            .await;
    let device = Ws::session(&center, "omar", "tab-1", "web").await;
    wait_for(&b, "omar", "online", |p| p["status"] == "online").await;
    let mut at_b = watcher(&b, "omar").await;
    let mut at_center = watcher(&center, "omar").await;
    let before = read(&center, "omar").await;

    // Dropped, back within the grace at the same node, dropped again and back at another node.
    drop_abruptly(device);
    tokio::task::yield_now().await;
    let again = Ws::session(&center, "omar", "tab-1", "web").await;
    drop_abruptly(again);
    let elsewhere = Ws::session(&b, "omar", "tab-1", "web").await;
    // Well past the first node's grace: nobody saw anything, and the user reads as before.
    let seen = changes_within(&mut at_b, 4 * SECOND).await;
    assert!(seen.is_empty(), "no change, no flicker: {seen:#?}");
    assert!(changes_within(&mut at_center, SECOND).await.is_empty());
    for app in [&center, &b] {
        assert_eq!(read(app, "omar").await, before, "unchanged at {}", app.config.service.node_id);
    }

    // An abrupt drop with no reconnect: online during the grace, offline after it.
    drop_abruptly(elsewhere);
    let dropped = tokio::time::Instant::now();
    let change = next_change(&mut at_center, 10 * SECOND).await;
    assert_eq!(change["presence"]["status"], "offline", "{change}");
    assert!(
        dropped.elapsed() >= Duration::from_millis(1900),
        "not before the grace: {:?}",
        dropped.elapsed()
    );
    assert!(dropped.elapsed() < 6 * SECOND, "soon after it: {:?}", dropped.elapsed());
    for app in [b, center] {
        app.stop().await;
    }
}

#[tokio::test]
async fn two_devices_and_idleness_add_up_to_the_right_status() {
    let app = TestApp::spawn_with(|c| c.sessions.idle_after = SECOND).await;
    let mut web = Ws::session(&app, "lena", "browser", "web").await;
    let phone = Ws::session(&app, "lena", "phone", "mobile").await;
    let shown = wait_for(&app, "lena", "online on both", |p| {
        p["devices"] == json!({"web": "online", "mobile": "online"})
    })
    .await;
    assert_eq!(shown["status"], "online");
    // The web client keeps saying the person is active; the phone says nothing and goes idle.
    let active = async {
        loop {
            web.send(json!({"type": "activity"})).await;
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    };
    let idle_phone = wait_for(&app, "lena", "idle on the phone", |p| p["devices"]["mobile"] == "away");
    let shown = tokio::select! {
        shown = idle_phone => shown,
        () = active => unreachable!(),
    };
    assert_eq!(shown["status"], "online", "one active device is enough: {shown}");
    assert_eq!(shown["devices"]["web"], "online", "{shown}");
    // Nobody active any more: away, on every device.
    let shown = wait_for(&app, "lena", "away", |p| p["status"] == "away").await;
    assert_eq!(shown["devices"], json!({"web": "away", "mobile": "away"}));
    web.send(json!({"type": "activity"})).await;
    wait_for(&app, "lena", "online again", |p| p["status"] == "online" && p["devices"]["web"] == "online")
        .await;
    phone.close().await;
    let shown = wait_for(&app, "lena", "without the phone", |p| p["devices"].get("mobile").is_none()).await;
    assert!(shown["devices"].get("web").is_some(), "{shown}");
    app.stop().await;
}

#[tokio::test]
async fn a_set_status_overrides_the_sessions_and_survives_reconnects() {
    let app = TestApp::spawn_with(|c| c.sessions.grace = SECOND).await;
    let device = Ws::session(&app, "kai", "desk", "desktop").await;
    wait_for(&app, "kai", "online", |p| p["status"] == "online").await;
    app.set("kai", json!({"status": "busy", "message": "in a meeting", "ttl": 600})).await;
    let shown = read(&app, "kai").await;
    assert_eq!((shown["status"].as_str(), shown["message"].as_str()), (Some("busy"), Some("in a meeting")));
    assert_eq!(shown["devices"], json!({"desktop": "online"}), "the write kept the device: {shown}");

    // A reconnect within the grace, then a clean close and a new session: busy all along.
    drop_abruptly(device);
    let device = Ws::session(&app, "kai", "desk", "desktop").await;
    device.close().await;
    wait_for(&app, "kai", "without a device", |p| p.get("devices").is_none()).await;
    assert_eq!(read(&app, "kai").await["status"], "busy", "a set status holds without a session too");
    let device = Ws::session(&app, "kai", "desk", "desktop").await;
    let shown = wait_for(&app, "kai", "back on the desktop", |p| p.get("devices").is_some()).await;
    assert_eq!((shown["status"].as_str(), shown["message"].as_str()), (Some("busy"), Some("in a meeting")));

    // `offline` gives the status back to the sessions.
    app.set("kai", json!({"status": "offline"})).await;
    assert_eq!(read(&app, "kai").await["status"], "online");
    device.close().await;
    app.stop().await;
}

#[tokio::test]
async fn an_invisible_user_with_sessions_is_offline_to_others_and_nothing_gives_them_away() {
    let app = TestApp::spawn().await;
    let _desk = Ws::session(&app, "zoe", "desk", "desktop").await;
    wait_for(&app, "zoe", "online", |p| p["status"] == "online").await;
    app.set("zoe", json!({"status": "invisible", "ttl": 600})).await;
    let hidden = read(&app, "zoe").await;
    assert_eq!(hidden["status"], "offline");
    assert!(hidden.get("devices").is_none(), "no devices for others: {hidden}");
    let own = read_own(&app, "zoe").await;
    assert_eq!(
        (own["status"].as_str(), own["devices"].clone()),
        (Some("invisible"), json!({"desktop": "online"}))
    );

    // A second device and a clean close: the owner sees them, others see nothing change.
    let mut others = watcher(&app, "zoe").await;
    let phone = Ws::session(&app, "zoe", "phone", "mobile").await;
    eventually(Duration::from_secs(10), "the owner sees the phone", || async {
        (read_own(&app, "zoe").await["devices"].get("mobile").is_some()).then_some(())
    })
    .await;
    phone.close().await;
    eventually(Duration::from_secs(10), "the owner sees the phone go", || async {
        (read_own(&app, "zoe").await["devices"].get("mobile").is_none()).then_some(())
    })
    .await;
    // Refreshing the status while invisible: nothing to see either.
    app.set("zoe", json!({"status": "invisible", "ttl": 600, "message": "shh"})).await;
    let (_, history) = json_of(app.history("zoe", None).await).await;
    let last = &history["data"]["zoe"][0];
    assert_eq!(last["presence"]["status"], "offline", "the last event is going invisible: {history}");
    assert_eq!(history["data"]["zoe"].as_array().unwrap().len(), 2, "online, then offline: {history}");
    let seen = changes_within(&mut others, 2 * SECOND).await;
    assert!(seen.is_empty(), "nothing announced: {seen:#?}");
    assert_eq!(read(&app, "zoe").await, hidden, "last_seen did not advance");
    app.stop().await;
}
