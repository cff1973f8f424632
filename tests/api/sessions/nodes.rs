//! Sessions when nodes fail: a restarted node, a node killed with its sessions (no ghost), a leaf cut off briefly and for long.

use super::*;

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

/// A node that only claims to be up, with an id that sorts first (forged heartbeats, as anyone
/// who may publish on NATS could send), does not keep a dead node's sessions online: the next
/// node by id ends them one step (2 s) later than the first would have.
#[tokio::test]
async fn forged_heartbeats_of_a_first_node_do_not_keep_ghosts_online() {
    let center = TestApp::spawn_with(quick).await;
    let forger = crate::helpers::nats_connect(&center.nats_url()).await;
    let forging = tokio::spawn(async move {
        let mut every = tokio::time::interval(SECOND); // a heartbeat a second, as a node's own cadence
        loop {
            every.tick().await;
            let beat = json!({"node_id": "000-forger", "node_type": "center", "region": null,
                "version": "0.1.0", "applied_revision": 1, "cache_entries": 0, "uptime_seconds": 1,
                "fresh": true, "sent_at": chrono::Utc::now()});
            let _ = forger.publish("presence.sync.000-forger", beat.to_string().into()).await;
        }
    });
    eventually(5 * SECOND, "the forged node is listed as up", || async {
        let (_, nodes) = json_of(center.get("/api/v2/nodes").await).await;
        nodes.to_string().contains("000-forger").then_some(())
    })
    .await;
    let dir = tempfile::tempdir().unwrap();
    let mut leaf = leaf_process(dir.path(), center.config.nats.leaf_port, "leaf-doomed");
    leaf.wait_healthy().await;
    let mut ws = Ws::connect_to(format!("127.0.0.1:{}", leaf.http_port).parse().unwrap()).await;
    ws.hello("gil", "d1", "web").await;
    wait_for(&center, "gil", "online", |p| p["status"] == "online").await;

    leaf.kill9();
    let killed = tokio::time::Instant::now();
    wait_for(&center, "gil", "offline", |p| p["status"] == "offline").await;
    let took = killed.elapsed();
    // node_timeout (5 s) + grace (1 s) after the last heartbeat (at most 2 s before the kill),
    // one step for the node that ranks after the forger, and the one-second round.
    assert!(took < 10 * SECOND, "a ghost for {took:?}");
    forging.abort();
    drop(ws.socket);
    center.stop().await;
}
