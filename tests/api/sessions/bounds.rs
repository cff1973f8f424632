//! What bounds a user's sessions. Churn: however fast a user's devices connect, say hello and
//! close, their sessions cost at most one record write (and one event) per
//! `sessions.write_interval` at a node, and the record still ends where the sessions did.
//! Erasure: it ends the user's sessions everywhere, and they do not write the user back.

use super::*;

#[tokio::test]
async fn a_users_churning_devices_cost_at_most_one_write_per_interval() {
    let app = TestApp::spawn_with(|c| {
        c.sessions.write_interval = Duration::from_millis(500);
        c.sessions.grace = Duration::from_millis(200);
        c.rate_limit.enabled = false;
    })
    .await;
    let written = || async { app.metric("presence_session_writes_total{outcome=\"written\"}").await };
    let before = written().await;
    let started = std::time::Instant::now();
    let mut cycles = 0;
    while started.elapsed() < Duration::from_secs(3) {
        let names: Vec<String> = (0..10).map(|d| format!("device-{d}")).collect();
        let devices = names.iter().map(|name| Ws::session(&app, "churner", name, "web"));
        for ws in futures::future::join_all(devices).await {
            ws.close().await;
        }
        cycles += 1;
    }
    let churned = started.elapsed();
    // Once the last transition's write is out, the record says no device is held.
    let settled = eventually(Duration::from_secs(5), "the record ends where the sessions did", || async {
        let own = read_own(&app, "churner").await;
        (own["status"] == "offline" && own.get("devices").is_none()).then_some(own)
    })
    .await;
    let writes = written().await - before;
    let bound = (churned.as_secs_f64() / 0.5).ceil() + 2.0;
    assert!(cycles >= 3, "the devices came and went: {cycles} cycles of 10");
    assert!(
        writes <= bound,
        "{writes} record writes in {churned:?} ({cycles} cycles of 10 devices); at most {bound}"
    );
    let (_, history) = json_of(app.history("churner", None).await).await;
    let events = history["data"]["churner"].as_array().map_or(0, Vec::len) as f64;
    assert!(events <= bound, "{events} events; at most {bound}: {settled}");
    app.stop().await;
}

/// Erasing a user who holds sessions ends them on every node: each client gets a close (4410)
/// saying why, within a second, and nothing writes the user back.
#[tokio::test]
async fn an_erasure_ends_the_users_sessions_everywhere_and_stays() {
    let center = TestApp::spawn().await;
    let leaf = leaf_app(center.config.nats.leaf_port, "leaf-erase", "eu-west").await;
    let mut here = Ws::session(&center, "gone", "laptop", "desktop").await;
    let mut there = Ws::session(&leaf, "gone", "phone", "mobile").await;
    eventually(Duration::from_secs(5), "both devices are in the record", || async {
        let own = read_own(&center, "gone").await;
        (own["devices"] == json!({"desktop": "online", "mobile": "online"})).then_some(())
    })
    .await;
    let erased_at = std::time::Instant::now();
    assert_eq!(center.erase("gone").await.status(), StatusCode::OK);
    for ws in [&mut here, &mut there] {
        let closed = ws.expect("closed", Duration::from_secs(1)).await;
        assert_eq!(closed["frame"][0], 4410, "{closed}");
        assert!(closed["frame"][1].as_str().unwrap().contains("erased"), "{closed}");
    }
    assert!(erased_at.elapsed() < Duration::from_secs(1), "{:?}", erased_at.elapsed());
    // For two seconds (four session write intervals), nobody writes the user back.
    let watched = std::time::Instant::now();
    while watched.elapsed() < Duration::from_secs(2) {
        for app in [&center, &leaf] {
            assert_eq!(
                read(app, "gone").await,
                json!({"status": "unknown"}),
                "{}",
                app.config.service.node_id
            );
        }
    }
    leaf.stop().await;
    center.stop().await;
}

/// An invisible user's devices coming and going move nothing anyone else can read: not the
/// event-stream ids others see (they number announced changes only), not `/api/v2/nodes`, not
/// `/health/nats` (neither shows a KV revision).
#[tokio::test]
async fn an_invisible_users_sessions_move_no_public_counter() {
    let app = TestApp::spawn().await;
    let _desk = Ws::session(&app, "ivo", "desk", "desktop").await;
    app.set("ivo", json!({"status": "invisible", "ttl": 600})).await;
    app.set("amy", json!({"status": "online"})).await;
    let mut others = crate::helpers::live::Sse::open(&app, "amy", None).await;
    let snapshot = others.expect("snapshot", Duration::from_secs(5)).await;
    let (epoch, seq) = snapshot.id.as_deref().unwrap().rsplit_once('-').unwrap();
    let seq: u64 = seq.parse().unwrap();
    for device in ["phone", "tablet", "watch"] {
        Ws::session(&app, "ivo", device, "mobile").await.close().await;
    }
    eventually(Duration::from_secs(5), "the owner's record followed the devices", || async {
        let own = read_own(&app, "ivo").await;
        (own["devices"] == json!({"desktop": "online"})).then_some(())
    })
    .await;
    app.set("amy", json!({"status": "busy"})).await;
    let change = others.expect("change", Duration::from_secs(5)).await;
    assert_eq!(change.id.as_deref(), Some(format!("{epoch}-{}", seq + 1).as_str()), "the next number");
    let (_, nats) = app.nats_health().await;
    assert!(nats["watcher"].get("applied_revision").is_none(), "{nats}");
    app.stop().await;
}
