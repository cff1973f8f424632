//! Presence that follows connections (docs/sessions.md, "Sessions"): real WebSocket clients holding device
//! sessions at real nodes, read and watched from others.

use std::time::Duration;

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::helpers::{
    ChaosProxy, ISSUER, LEAF_PASSWORD, SECRET, ServiceProcess, TestApp, eventually, free_port, json_of,
    leaf_app, leaf_app_with, live::Ws, mint,
};

const SECOND: Duration = Duration::from_secs(1);

/// `user` as `app` shows them to anyone (no token); `{"status": "unknown"}` for a user never
/// seen (404).
async fn read(app: &TestApp, user: &str) -> Value {
    let (status, body) = json_of(app.get(&format!("/api/v2/presence/{user}")).await).await;
    if status == StatusCode::NOT_FOUND {
        return json!({"status": "unknown"});
    }
    assert_eq!(status, StatusCode::OK, "{body}");
    body["data"][user].clone()
}

/// `user` as they see themselves (their own token).
async fn read_own(app: &TestApp, user: &str) -> Value {
    let request = app.http.get(app.url(&format!("/api/v2/presence/{user}"))).bearer_auth(mint(user));
    let (_, body) = json_of(request.send().await.unwrap()).await;
    body["data"][user].clone()
}

async fn wait_for(app: &TestApp, user: &str, what: &str, check: impl Fn(&Value) -> bool) -> Value {
    let what = format!("{user} {what} at {}", app.config.service.node_id);
    eventually(Duration::from_secs(10), &what, || async {
        let shown = read(app, user).await;
        check(&shown).then_some(shown)
    })
    .await
}

/// A subscriber to `user` over a WebSocket, past its snapshot.
async fn watcher(app: &TestApp, user: &str) -> Ws {
    let mut ws = Ws::connect(app).await;
    ws.send(json!({"type": "subscribe", "users": [user]})).await;
    ws.expect("snapshot", Duration::from_secs(5)).await;
    ws
}

/// Every change a subscriber receives within `within`.
async fn changes_within(ws: &mut Ws, within: Duration) -> Vec<Value> {
    let deadline = tokio::time::Instant::now() + within;
    let mut changes = Vec::new();
    while let Some(message) =
        ws.next_within(deadline.saturating_duration_since(tokio::time::Instant::now())).await
    {
        if message["type"] == "changes" {
            changes.extend(message["changes"].as_array().unwrap().iter().cloned());
        }
    }
    changes
}

/// The next change a subscriber receives, within `within`.
async fn next_change(ws: &mut Ws, within: Duration) -> Value {
    loop {
        let message = ws.next_within(within).await.expect("a change arrives");
        if message["type"] == "changes" {
            return message["changes"][0].clone();
        }
    }
}

/// Drops the connection without a close frame, as a crashed client or a lost network does.
fn drop_abruptly(ws: Ws) {
    drop(ws.socket);
}

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
    let missing = upgrade("/api/v2/ws", mint("noor")).await.unwrap();
    assert_eq!(missing.status(), StatusCode::BAD_REQUEST, "no device and kind in the query");

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

#[tokio::test]
async fn a_restarted_node_keeps_the_sessions_that_come_back_and_ends_the_others() {
    let app = TestApp::spawn_with(|c| c.sessions.grace = 3 * SECOND).await;
    let _rui = Ws::session(&app, "rui", "d", "web").await;
    let _sol = Ws::session(&app, "sol", "d", "mobile").await;
    for user in ["rui", "sol"] {
        wait_for(&app, user, "online", |p| p["status"] == "online").await;
    }
    let rui_before = read(&app, "rui").await;
    // Stopped (its clients' connections go with it) and started again with the same id.
    let app = TestApp::restart(app.stop_keeping().await).await;
    let restarted = tokio::time::Instant::now();
    let _rui = Ws::session(&app, "rui", "d", "web").await;
    let mut rui = watcher(&app, "rui").await;
    wait_for(&app, "sol", "offline: their device never came back", |p| p["status"] == "offline").await;
    assert!(
        restarted.elapsed() >= Duration::from_millis(2900),
        "not before the grace: {:?}",
        restarted.elapsed()
    );
    assert!(changes_within(&mut rui, SECOND).await.is_empty(), "rui came back in time: nothing to see");
    assert_eq!(read(&app, "rui").await, rui_before);
    app.stop().await;
}

/// Sessions that end quickly: a grace of a second, a node taken for dead after 5 s.
fn quick(config: &mut presence::config::Config) {
    config.sessions.grace = SECOND;
    config.sessions.node_timeout = 5 * SECOND;
}

/// The leaf `node_id` as a process of its own: a center's leaf, with a short node timeout and
/// grace.
fn leaf_process(dir: &std::path::Path, center_leaf_port: u16, node_id: &str) -> ServiceProcess {
    let (http, nats, leaf) = (free_port(), free_port(), free_port());
    let yaml = format!(
        "service:\n  host: 127.0.0.1\n  port: {http}\n  node_id: {node_id}\n  node_type: leaf\n  region: ap-south-1\n\
         nats:\n  embedded: true\n  port: {nats}\n  leaf_port: {leaf}\n  data_dir: {data}\n  leaf_password: {password:?}\n  center_url: nats-leaf://127.0.0.1:{center_leaf_port}\n\
         auth:\n  jwt_secret: {SECRET}\n  jwt_issuer: {ISSUER}\n\
         sessions:\n  grace: 1s\n  node_timeout: 5s\n",
        data = dir.join("nats-data").display(),
        password = LEAF_PASSWORD,
    );
    ServiceProcess::start_yaml(dir, http, &yaml)
}

#[tokio::test]
async fn a_node_killed_with_its_sessions_leaves_no_ghost() {
    let center = TestApp::spawn_with(quick).await;
    let dir = tempfile::tempdir().unwrap();
    let mut leaf = leaf_process(dir.path(), center.config.nats.leaf_port, "leaf-doomed");
    leaf.wait_healthy().await;
    let addr = format!("127.0.0.1:{}", leaf.http_port).parse().unwrap();
    let mut sessions = Vec::new();
    for (user, kind) in [("ada", "web"), ("bo", "mobile"), ("cy", "desktop")] {
        let mut ws = Ws::connect_to(addr).await;
        ws.hello(user, "d1", kind).await;
        sessions.push(ws);
    }
    // One of them has a second device at the center: it stays.
    let _kept = Ws::session(&center, "cy", "d2", "web").await;
    for user in ["ada", "bo", "cy"] {
        wait_for(&center, user, "online", |p| p["status"] == "online").await;
    }
    wait_for(&center, "cy", "on two devices", |p| p["devices"].as_object().is_some_and(|d| d.len() == 2))
        .await;

    leaf.kill9();
    let killed = tokio::time::Instant::now();
    for user in ["ada", "bo"] {
        wait_for(&center, user, "offline", |p| p["status"] == "offline").await;
    }
    let took = killed.elapsed();
    let cy =
        wait_for(&center, "cy", "on the center's device only", |p| p["devices"] == json!({"web": "online"}))
            .await;
    assert_eq!(cy["status"], "online");
    // node_timeout (5 s) + grace (1 s) after the last heartbeat (at most 2 s before the kill),
    // and the reaper's one-second round, at most.
    assert!(took >= 4 * SECOND, "not before the node timeout: {took:?}");
    assert!(took < 8 * SECOND, "within node_timeout + grace: {took:?}");
    drop(sessions.into_iter().map(|ws| ws.socket).collect::<Vec<_>>());
    center.stop().await;
}

#[tokio::test]
async fn a_leaf_cut_off_briefly_flips_nobody_and_after_long_its_users_come_back() {
    let center = TestApp::spawn_with(quick).await;
    let proxy = ChaosProxy::start(center.config.nats.leaf_port).await;
    let a = leaf_app_with(proxy.port, "leaf-a", "us-east-1", quick).await;
    let device = Ws::session(&a, "pia", "tab", "web").await;
    // A user held at the center: a leaf back from an outage must not take the center for dead.
    let _ian = Ws::session(&center, "ian", "tab", "web").await;
    wait_for(&center, "pia", "online", |p| p["status"] == "online").await;
    wait_for(&a, "ian", "online", |p| p["status"] == "online").await;
    let mut at_center = watcher(&center, "pia").await;
    let mut ian = watcher(&center, "ian").await;

    proxy.cut();
    tokio::time::sleep(2 * SECOND).await; // the outage itself: shorter than node_timeout + grace
    proxy.heal();
    let seen = changes_within(&mut at_center, 3 * SECOND).await;
    assert!(seen.is_empty(), "a short outage flips nobody: {seen:#?}");

    proxy.cut();
    let change = next_change(&mut at_center, 15 * SECOND).await;
    assert_eq!(change["presence"]["status"], "offline", "the center took the silent leaf for dead");
    proxy.heal();
    // The leaf still holds the session: once back, it puts it in the record again.
    let change = next_change(&mut at_center, 20 * SECOND).await;
    assert_eq!(change["presence"]["status"], "online", "{change}");
    // Longer than node_timeout + grace after the link returned: the leaf judged nobody dead.
    let seen = changes_within(&mut ian, 7 * SECOND).await;
    assert!(seen.is_empty(), "the center's user never flickered: {seen:#?}");
    drop(device);
    for app in [a, center] {
        app.stop().await;
    }
}
