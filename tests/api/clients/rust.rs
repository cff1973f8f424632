//! The Rust client against real nodes: watches and REST; `kill -9` of the node it is connected to
//! (it fails over within the grace, nobody sees it go, its view is what REST reads say, a write
//! made meanwhile is in it); a node restarted empty (its status asserted again); a token refused
//! on reconnect (it stops, and says so).

use std::{
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use futures::StreamExt;
use presence_client::{Change, ChangeKind, Client, ConnectionState, Error, Event, Status, StatusOptions};
use serde_json::json;

use crate::helpers::{ServiceProcess, TestApp, eventually, kill9, live::Ws, mint};

const SECOND: Duration = Duration::from_secs(1);

fn client(urls: &[String], user: &'static str) -> Client {
    Client::builder()
        .urls(urls.iter().cloned())
        .token_provider(move || async move { Ok::<_, String>(mint(user)) })
        .device("laptop")
        .keep_alive(SECOND)
        .build()
        .unwrap()
}

async fn connected(client: &Client) {
    let mut state = client.state();
    tokio::time::timeout(20 * SECOND, state.wait_for(|s| *s == ConnectionState::Connected))
        .await
        .expect("connected within 20 s")
        .unwrap();
}

/// The next change of `user` that satisfies `check`, within 10 s.
async fn change_of(
    watch: &mut presence_client::Watch,
    user: &str,
    check: impl Fn(&Change) -> bool,
) -> Change {
    let deadline = tokio::time::Instant::now() + 10 * SECOND;
    loop {
        let change =
            tokio::time::timeout_at(deadline, watch.next()).await.expect("a change within 10 s").unwrap();
        if change.user_id == user && check(&change) {
            return change;
        }
    }
}

#[tokio::test]
async fn a_watch_starts_with_where_users_stand_and_follows_their_changes_as_rest_reads_them() {
    let app = TestApp::spawn().await;
    app.set("ann", json!({"status": "busy", "message": "deep work"})).await;
    let client = client(&[app.url("")], "cal");
    let mut watch = client.watch(["ann", "bob"]);
    let first = change_of(&mut watch, "ann", |_| true).await;
    assert_eq!((first.kind, first.presence.status), (ChangeKind::Snapshot, Status::Busy));
    assert_eq!(first.presence.message.as_deref(), Some("deep work"));
    app.set("bob", json!({"status": "away"})).await;
    let change = change_of(&mut watch, "bob", |c| c.presence.status == Status::Away).await;
    assert_eq!(change.kind, ChangeKind::Update);
    assert!(change.revision > first.revision);
    // Its own status, by REST with its token; then reads.
    let set = client.set_status(Status::Busy, StatusOptions { message: Some("in a call".into()), ttl: None });
    assert_eq!(set.await.unwrap().status, Status::Busy);
    assert_eq!(client.get("cal").await.unwrap().message.as_deref(), Some("in a call"));
    let many = client.get_many(&["ann", "bob", "cal"]).await.unwrap();
    assert_eq!(many["bob"].status, Status::Away);
    assert!(matches!(client.get("nobody").await, Err(Error::Api { status: 404, .. })));
    for user in ["ann", "bob"] {
        assert_eq!(watch.view()[user], client.get(user).await.unwrap(), "the view is what REST reads");
    }
    client.close();
    app.stop().await;
}

#[tokio::test]
async fn killed_under_it_the_client_fails_over_within_the_grace_and_nobody_sees_it_go() {
    let center = TestApp::spawn().await;
    let dir = tempfile::tempdir().unwrap();
    let mut leaf = ServiceProcess::start_leaf(dir.path(), center.config.nats.leaf_port, "leaf-k", "", "");
    leaf.wait_healthy().await;
    let client = client(&[leaf.url(""), center.url("")], "kay");
    connected(&client).await;
    let mut watch = client.watch(["zed"]);
    center.set("zed", json!({"status": "online"})).await;
    change_of(&mut watch, "zed", |c| c.presence.status == Status::Online).await;
    // Another client watches kay at the center: online.
    let mut other = Ws::connect(&center).await;
    other.send(json!({"type": "subscribe", "users": ["kay", "marker"]})).await;
    eventually(10 * SECOND, "kay online at the center", || async {
        let kay: serde_json::Value = center.read("kay").await.json().await.ok()?;
        (kay["data"]["kay"]["status"] == "online").then_some(())
    })
    .await;

    // The leaf dies (service and its nats-server); meanwhile zed changes at the center.
    let nats = leaf.nats_pid().expect("the leaf's nats-server pid");
    leaf.kill9();
    kill9(nats);
    center.set("zed", json!({"status": "busy", "message": "while you were away"})).await;
    let change = change_of(&mut watch, "zed", |c| c.presence.status == Status::Busy).await;
    assert_eq!(change.presence.message.as_deref(), Some("while you were away"));
    connected(&client).await;
    // Nobody saw kay go: a later change at the center arrives with nothing of kay before it.
    center.set("marker", json!({"status": "online"})).await;
    loop {
        let message = other.next_within(10 * SECOND).await.expect("the marker");
        let changes = message["changes"].as_array().cloned().unwrap_or_default();
        for change in &changes {
            let status = &change["presence"]["status"];
            assert!(change["user_id"] != "kay" || status == "online", "kay was seen going: {change}");
        }
        if changes.iter().any(|c| c["user_id"] == "marker") {
            break;
        }
    }
    assert_eq!(watch.view()["zed"], client.get("zed").await.unwrap(), "the view is what REST reads");
    client.close();
    center.stop().await;
}

#[tokio::test]
async fn a_node_restarted_empty_gets_the_status_again_and_a_refused_token_stops_the_client() {
    // The first start binds a port the OS chose; the restarts take the same address.
    let app = TestApp::spawn().await;
    let port = app.addr.port();
    let expired = Arc::new(AtomicBool::new(false));
    let refuse = expired.clone();
    let client = Client::builder()
        .url(app.url(""))
        .token_provider(move || {
            let expired = refuse.load(Ordering::SeqCst);
            async move { Ok::<_, String>(if expired { expired_token("dee") } else { mint("dee") }) }
        })
        .keep_alive(SECOND)
        .build()
        .unwrap();
    connected(&client).await;
    let options = StatusOptions { message: Some("focus".into()), ttl: Some(3600) };
    client.set_status(Status::Busy, options).await.unwrap();
    app.stop().await;
    // A new node on the same address, with nothing stored: the client says hello and its status.
    let app = TestApp::spawn_with(|c| c.service.port = port).await;
    eventually(20 * SECOND, "the status asserted again", || async {
        let dee: serde_json::Value = app.read("dee").await.json().await.ok()?;
        let dee = &dee["data"]["dee"];
        (dee["status"] == "busy" && dee["message"] == "focus").then_some(())
    })
    .await;
    // Its token provider now gives an expired token: the next reconnect is refused, and it stops.
    expired.store(true, Ordering::SeqCst);
    let mut events = client.events();
    app.stop().await;
    let app = TestApp::spawn_with(|c| c.service.port = port).await;
    let refused = tokio::time::timeout(20 * SECOND, async {
        loop {
            if let Ok(Event::Error(e @ Error::Unauthorized(_))) = events.recv().await {
                return e;
            }
        }
    })
    .await
    .expect("an Unauthorized error event");
    assert!(refused.to_string().contains("refused"), "{refused}");
    let mut state = client.state();
    state.wait_for(|s| *s == ConnectionState::Disconnected).await.unwrap();
    app.stop().await;
}

/// A token for `user` that expired two minutes ago.
pub(super) fn expired_token(user: &str) -> String {
    let now = chrono::Utc::now().timestamp();
    let claims = json!({"sub": user, "iat": now - 600, "exp": now - 120, "iss": crate::helpers::ISSUER});
    let key = jsonwebtoken::EncodingKey::from_secret(crate::helpers::SECRET.as_bytes());
    jsonwebtoken::encode(&jsonwebtoken::Header::default(), &claims, &key).unwrap()
}

#[tokio::test]
async fn a_room_joined_from_rust_is_live_both_ways_and_left_when_dropped() {
    let app = TestApp::spawn().await;
    let client = Client::builder()
        .url(app.url(""))
        .token_provider(|| async { Ok::<_, String>(crate::helpers::mint_rooms("kay", &["doc-*"])) })
        .device("laptop")
        .build()
        .unwrap();
    let mut room = client.join("doc-1", json!({"name": "Kay"}));
    let first = tokio::time::timeout(10 * SECOND, room.next()).await.unwrap().unwrap();
    assert_eq!(first.joins["kay"][0].meta, json!({"name": "Kay"}), "{first:?}");
    let mut lee = crate::rooms::member(&app, "lee", "tab", &["doc-*"]).await;
    crate::rooms::join(&mut lee, "doc-1", json!({"role": "guest"})).await;
    let deadline = tokio::time::Instant::now() + 10 * SECOND;
    while !room.members().contains_key("lee") {
        tokio::time::timeout_at(deadline, room.next()).await.expect("lee joins").unwrap();
    }
    assert_eq!((room.member_count(), &room.members()["lee"][0].meta), (2, &json!({"role": "guest"})));
    // Its meta and typing reach the other member; dropped, it leaves.
    room.update(json!({"name": "Kay", "cursor": 4}));
    let update = crate::rooms::next_of(&mut lee, "room", 10 * SECOND).await;
    assert_eq!(update["updates"]["kay"][0]["meta"]["cursor"], 4, "{update}");
    room.typing(true);
    let typing = crate::rooms::next_of(&mut lee, "room", 10 * SECOND).await;
    assert_eq!(typing["typing"], json!(["kay"]), "{typing}");
    drop(room);
    let left = crate::rooms::next_of(&mut lee, "room", 10 * SECOND).await;
    assert!(left["leaves"]["kay"].is_array(), "{left}");
    client.close();
    app.stop().await;
}
