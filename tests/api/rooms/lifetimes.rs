//! How long a member stays: a reconnect within the grace shows nobody anything, a broken
//! connection leaves after the grace, a killed node's members after node_timeout + grace; a leaf
//! cut off keeps its rooms and reconciles; an invisible member is seen by nobody but themselves;
//! a room stream resumes where it left off.

use super::*;
use crate::helpers::{ChaosProxy, ServiceProcess, leaf_app_with};

fn quick(config: &mut presence::config::Config) {
    config.sessions.grace = 2 * SECOND;
    config.sessions.node_timeout = 5 * SECOND;
}

#[tokio::test]
async fn a_reconnect_within_the_grace_shows_nothing_and_a_drop_leaves_after_it() {
    let center = TestApp::spawn_with(quick).await;
    let leaf = leaf_app_with(center.config.nats.leaf_port, "leaf-a", "us-east-1", quick).await;
    let mut kim = member(&leaf, "kim", "laptop", &["doc-*"]).await;
    join(&mut kim, "doc-5", json!({"tab": 1})).await;
    members_when(&center, "doc-5", "has kim", |d| d["count"] == 1).await;
    let (mut watching, snapshot) = room_watcher(&center, "doc-5").await;
    assert_eq!(snapshot["count"], 1, "{snapshot}");

    // The connection breaks; the device comes back (at the other node, even) and joins again.
    drop(kim.socket);
    let mut kim = member(&center, "kim", "laptop", &["doc-*"]).await;
    let joined = join(&mut kim, "doc-5", json!({"tab": 1})).await;
    assert_eq!(joined["count"], 1, "{joined}");
    let seen = room_changes(&mut watching, 4 * SECOND).await;
    assert!(seen.is_empty(), "back within the grace with the same meta: nothing to see: {seen:#?}");

    // It breaks again and stays away: it leaves after the grace, not before.
    drop(kim.socket);
    let dropped = tokio::time::Instant::now();
    let change =
        room_change_until(&mut watching, 10 * SECOND, "kim leaves", |c| c.get("leaves").is_some()).await;
    assert_eq!(change["leaves"]["kim"][0]["device"], "laptop");
    assert!(
        dropped.elapsed() >= Duration::from_millis(1800),
        "not before the grace: {:?}",
        dropped.elapsed()
    );
    assert_eq!(change["count"], 0);
    members_when(&leaf, "doc-5", "is empty", |d| d["count"] == 0).await;
    for app in [leaf, center] {
        app.stop().await;
    }
}

#[tokio::test]
async fn the_members_of_a_killed_node_leave_after_node_timeout_and_grace() {
    let center = TestApp::spawn_with(quick).await;
    let dir = tempfile::tempdir().unwrap();
    let config = "sessions:\n  grace: 1s\n  node_timeout: 5s\nrooms:\n  open: true\n";
    let mut leaf =
        ServiceProcess::start_leaf(dir.path(), center.config.nats.leaf_port, "leaf-doomed", "", config);
    leaf.wait_healthy().await;
    let addr = format!("127.0.0.1:{}", leaf.http_port).parse().unwrap();
    let mut doomed = Ws::connect_to(addr).await;
    doomed.hello("dee", "d1", "mobile").await;
    join(&mut doomed, "war-room", json!({"role": "lead"})).await;
    let mut kept = member(&center, "cal", "d1", &["war-room"]).await;
    join(&mut kept, "war-room", json!({})).await;
    let (mut watching, _) = room_watcher(&center, "war-room").await;
    members_when(&center, "war-room", "has both", |d| d["count"] == 2).await;

    leaf.kill9();
    let killed = tokio::time::Instant::now();
    let change =
        room_change_until(&mut watching, 15 * SECOND, "dee leaves", |c| c.get("leaves").is_some()).await;
    let took = killed.elapsed();
    assert_eq!(change["leaves"]["dee"][0]["meta"]["role"], "lead", "{change}");
    assert_eq!(change["count"], 1, "cal stays: {change}");
    assert!(took >= 3 * SECOND, "not before the node timeout: {took:?}");
    assert!(took < 10 * SECOND, "within node_timeout + grace and a reaper round: {took:?}");
    drop(doomed.socket);
    center.stop().await;
}

#[tokio::test]
async fn a_leaf_cut_off_keeps_its_rooms_working_and_reconciles_when_back() {
    let center = TestApp::spawn_with(quick).await;
    let proxy = ChaosProxy::start(center.config.nats.leaf_port).await;
    let leaf = leaf_app_with(proxy.port, "leaf-a", "us-east-1", quick).await;
    let (mut at_leaf, _) = room_watcher(&leaf, "ops").await;
    let (mut at_center, _) = room_watcher(&center, "ops").await;

    proxy.cut();
    // The leaf's own member shows there at once, and typing too, with no center to write to.
    let mut lea = member(&leaf, "lea", "d", &["ops"]).await;
    let joined = join(&mut lea, "ops", json!({"where": "leaf"})).await;
    assert_eq!(joined["count"], 1, "{joined}");
    let change =
        room_change_until(&mut at_leaf, 3 * SECOND, "lea joins at the leaf", |c| c.get("joins").is_some())
            .await;
    assert_eq!(change["joins"]["lea"][0]["meta"]["where"], "leaf");
    lea.send(json!({"type": "typing", "room": "ops"})).await;
    room_change_until(&mut at_leaf, 3 * SECOND, "lea types", |c| c["typing"] == json!(["lea"])).await;
    // Meanwhile, a member at the center.
    let mut cem = member(&center, "cem", "d", &["ops"]).await;
    join(&mut cem, "ops", json!({"where": "center"})).await;
    room_change_until(&mut at_center, 3 * SECOND, "cem joins at the center", |c| c.get("joins").is_some())
        .await;

    proxy.heal();
    // Back: each node learns of the other's member.
    let change = room_change_until(&mut at_center, 20 * SECOND, "lea reaches the center", |c| {
        c["joins"].get("lea").is_some()
    })
    .await;
    assert_eq!(change["count"], 2, "{change}");
    room_change_until(&mut at_leaf, 20 * SECOND, "cem reaches the leaf", |c| c["joins"].get("cem").is_some())
        .await;
    for app in [&center, &leaf] {
        let data = members_when(app, "ops", "has both", |d| d["count"] == 2).await;
        assert_eq!(data["members"]["lea"][0]["meta"]["where"], "leaf", "{data}");
    }
    drop((lea, cem));
    for app in [leaf, center] {
        app.stop().await;
    }
}

#[tokio::test]
async fn an_invisible_member_is_seen_by_nobody_but_themselves() {
    let (center, leaf) = region().await;
    let (mut watching, _) = room_watcher(&center, "doc-9").await;
    let mut ivy = member(&leaf, "ivy", "d", &["doc-*"]).await;
    let token = mint_rooms("ivy", &["doc-*"]);
    let put = leaf.put_as("ivy", &token, json!({"status": "invisible", "ttl": 3600})).await;
    assert_eq!(put.status(), StatusCode::OK);
    let joined = join(&mut ivy, "doc-9", json!({})).await;
    assert_eq!(
        (joined["count"].as_u64(), joined["members"]["ivy"][0]["device"].as_str()),
        (Some(1), Some("d")),
        "she sees herself: {joined}"
    );
    let mut ned = member(&center, "ned", "d", &["doc-*"]).await;
    let joined = join(&mut ned, "doc-9", json!({})).await;
    assert!(joined["members"].get("ivy").is_none(), "{joined}");
    let seen = room_changes(&mut watching, 2 * SECOND).await;
    assert!(seen.iter().all(|c| c["joins"].get("ivy").is_none() && c["count"] == 1), "{seen:#?}");
    for app in [&center, &leaf] {
        let (_, body) = read_room(app, "doc-9", Some(&mint_rooms("other", &["doc-9"]))).await;
        assert_eq!(
            (body["data"]["count"].as_u64(), body["data"]["members"].get("ivy")),
            (Some(1), None),
            "{body}"
        );
    }
    let (_, own) = read_room(&leaf, "doc-9", Some(&token)).await;
    assert_eq!(own["data"]["count"], 2, "the owner counts herself: {own}");
    // Visible again: the others see her join.
    let put = leaf.put_as("ivy", &token, json!({"status": "online"})).await;
    assert_eq!(put.status(), StatusCode::OK);
    let change =
        room_change_until(&mut watching, 5 * SECOND, "ivy appears", |c| c["joins"].get("ivy").is_some())
            .await;
    assert_eq!(change["count"], 2);
    for app in [leaf, center] {
        app.stop().await;
    }
}

#[tokio::test]
async fn a_room_stream_starts_with_a_snapshot_and_resumes_from_its_last_event() {
    let app = TestApp::spawn().await;
    let token = mint_rooms("sam", &["live-*"]);
    let open = |last: Option<String>| {
        let mut request = app.http.get(app.url("/api/v2/rooms/live-1/stream")).bearer_auth(&token);
        if let Some(last) = last {
            request = request.header("last-event-id", last);
        }
        request.send()
    };
    let mut stream = crate::helpers::live::Sse::from_response(open(None).await.unwrap());
    let snapshot = stream.expect("snapshot", 5 * SECOND).await;
    assert_eq!(snapshot.data["type"], "room_snapshot", "{:?}", snapshot.data);
    let mut una = member(&app, "una", "d", &["live-*"]).await;
    join(&mut una, "live-1", json!({})).await;
    let event = stream.expect("room", 5 * SECOND).await;
    assert_eq!(event.data["joins"]["una"][0]["device"], "d", "{:?}", event.data);
    let last = event.id.clone().expect("a room event carries an id");
    drop(stream);
    // While the client is away, another joins; resumed, the client gets just that.
    let mut vic = member(&app, "vic", "d", &["live-*"]).await;
    join(&mut vic, "live-1", json!({})).await;
    let mut stream = crate::helpers::live::Sse::from_response(open(Some(last)).await.unwrap());
    let event = stream.expect("room", 5 * SECOND).await;
    assert_eq!(
        event.data["joins"].as_object().map(|j| j.keys().collect::<Vec<_>>()),
        Some(vec![&"vic".to_string()]),
        "{:?}",
        event.data
    );
    // A cursor from elsewhere: a new snapshot.
    let mut stream = crate::helpers::live::Sse::from_response(open(Some("nope-3".into())).await.unwrap());
    assert_eq!(stream.expect("snapshot", 5 * SECOND).await.data["count"], 2);
    app.stop().await;
}

#[tokio::test]
async fn an_erased_user_leaves_every_room_at_every_node() {
    let (center, leaf) = region().await;
    let mut eve = member(&leaf, "eve", "d", &["doc-*"]).await;
    join(&mut eve, "doc-3", json!({"secret": "gone"})).await;
    members_when(&center, "doc-3", "has eve", |d| d["count"] == 1).await;
    let (mut watching, _) = room_watcher(&center, "doc-3").await;
    let erased = leaf.erase("eve").await;
    assert_eq!(erased.status(), StatusCode::OK);
    let change =
        room_change_until(&mut watching, 5 * SECOND, "eve leaves", |c| c.get("leaves").is_some()).await;
    assert_eq!(
        (change["leaves"]["eve"][0]["device"].as_str(), change["count"].as_u64()),
        (Some("d"), Some(0))
    );
    for app in [&center, &leaf] {
        members_when(app, "doc-3", "is empty", |d| d["count"] == 0).await;
    }
    for app in [leaf, center] {
        app.stop().await;
    }
}
