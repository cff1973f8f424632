//! A region on its own: a leaf that starts without its center, remembers across restarts, and
//! keeps reads local over a slow link (docs/architecture.md, "A region on its own").

use std::time::{Duration, Instant};

use async_nats::jetstream;
use reqwest::{Response, StatusCode};
use serde_json::{Value, json};

use crate::helpers::{
    ChaosProxy, NatsCluster, TestApp, assert_error, eventually, json_of, leaf_app, nats_connect,
};

/// The last revision of the presence bucket on `app`'s own NATS: the center's bucket, or a
/// leaf's copy of it.
async fn last_revision(app: &TestApp) -> u64 {
    let js = jetstream::new(nats_connect(&app.nats_url()).await);
    js.get_stream("KV_presence").await.unwrap().info().await.unwrap().state.last_sequence
}

/// Waits until the leaf's copy holds everything the center's bucket does.
async fn copied(leaf: &TestApp, center: &TestApp) {
    let wanted = last_revision(center).await;
    eventually(Duration::from_secs(20), "the leaf's copy has the center's last revision", || async {
        (last_revision(leaf).await >= wanted).then_some(())
    })
    .await;
}

async fn presence_of(response: Response) -> (bool, Value) {
    let stale = response.headers().get("x-presence-stale").is_some_and(|v| v == "true");
    let (status, body) = json_of(response).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    (stale, body["data"].clone())
}

async fn wait_fresh(app: &TestApp, user: &str, status: &str) {
    eventually(Duration::from_secs(20), &format!("{user} reads {status}, not stale"), || async {
        let (stale, data) = presence_of(app.read(user).await).await;
        (!stale && data[user]["status"] == status).then_some(())
    })
    .await;
}

#[tokio::test]
async fn a_leaf_restarted_while_its_center_is_away_serves_what_it_knew_and_catches_up() {
    let center = TestApp::spawn().await;
    let proxy = ChaosProxy::start(center.config.nats.leaf_port).await;
    let leaf = leaf_app(proxy.port, "leaf-a", "us-east-1").await;
    center.set("jo", json!({"status": "online", "message": "before"})).await;
    center.set("al", json!({"status": "busy", "ttl": 3600})).await;
    center.set("flo", json!({"status": "online", "ttl": 2})).await;
    center.set("gone", json!({"status": "away"})).await;
    assert_eq!(center.erase("gone").await.status(), StatusCode::OK);
    let crowd: Vec<String> = (0..40).map(|i| format!("crowd-{i}")).collect();
    for user in &crowd {
        center.set(user, json!({"status": "online"})).await;
    }
    copied(&leaf, &center).await;

    proxy.cut();
    let kept = leaf.stop_keeping().await;
    let started = Instant::now();
    let leaf = TestApp::restart(kept).await;
    assert!(started.elapsed() < Duration::from_secs(10), "the leaf came up in {:?}", started.elapsed());
    leaf.wait_health("degraded", Duration::from_secs(5)).await;
    let cached = leaf.cache_health().await["entries"].as_u64().unwrap();
    assert!(cached >= 44, "the copy was read into the cache at start-up: {cached} entries");

    // What it knew, marked stale; expiry still evaluated at read time; erased stays erased.
    let (stale, data) = presence_of(leaf.read_many(&["jo", "al"]).await).await;
    assert!(stale, "answers from memory are marked stale");
    assert_eq!((&data["jo"]["status"], &data["jo"]["message"]), (&json!("online"), &json!("before")));
    assert_eq!(data["al"]["status"], "busy");
    eventually(Duration::from_secs(10), "flo's 2 s ttl runs out at the leaf", || async {
        let (_, data) = presence_of(leaf.read("flo").await).await;
        (data["flo"]["status"] == "offline").then_some(())
    })
    .await;
    assert_error(leaf.read("gone").await, StatusCode::NOT_FOUND).await;
    let unknown = leaf.read("never-seen-here").await;
    assert_eq!(unknown.headers()["x-presence-degraded"], "true", "an unknown user is not 'never seen'");
    let refused = Instant::now();
    assert_error(leaf.put("kim", json!({"status": "online"})).await, StatusCode::SERVICE_UNAVAILABLE).await;
    assert!(refused.elapsed() < Duration::from_secs(1), "a write is refused at once");

    // Again with a cache too small for what the region knows: misses are read from the copy.
    let mut kept = leaf.stop_keeping().await;
    kept.config.cache.max_cost = 1024;
    let leaf = TestApp::restart(kept).await;
    let users: Vec<&str> = crowd.iter().map(String::as_str).collect();
    let response = leaf.read_many(&users).await;
    assert!(response.headers().get("x-presence-degraded").is_none(), "every user is known");
    let (stale, data) = presence_of(response).await;
    assert!(stale);
    assert!(users.iter().all(|u| data[u]["status"] == "online"), "{data}");

    // The center moves on meanwhile.
    center.set("jo", json!({"status": "away", "message": "during"})).await;
    center.set("lou", json!({"status": "busy"})).await;
    proxy.heal();
    wait_fresh(&leaf, "jo", "away").await;
    wait_fresh(&leaf, "lou", "busy").await;
    leaf.wait_health("ok", Duration::from_secs(20)).await;
    assert_eq!(leaf.put("kim", json!({"status": "online"})).await.status(), StatusCode::OK);
    wait_fresh(&center, "kim", "online").await;
    leaf.stop().await;
    center.stop().await;
}

#[tokio::test]
async fn a_leaf_that_never_reached_its_center_starts_degraded_and_joins_when_it_answers() {
    let center = TestApp::spawn().await;
    center.set("jo", json!({"status": "busy"})).await;
    let proxy = ChaosProxy::start(center.config.nats.leaf_port).await;
    proxy.cut();
    let started = Instant::now();
    let leaf = leaf_app(proxy.port, "leaf-new", "eu-west-1").await;
    assert!(started.elapsed() < Duration::from_secs(10), "the leaf came up in {:?}", started.elapsed());
    let health = leaf.health().await;
    assert_eq!(health["status"], "degraded", "{health}");
    let miss = leaf.read("jo").await;
    assert_eq!(miss.headers()["x-presence-degraded"], "true");
    assert_error(leaf.put("kim", json!({"status": "online"})).await, StatusCode::SERVICE_UNAVAILABLE).await;
    assert_error(leaf.history("jo", None).await, StatusCode::SERVICE_UNAVAILABLE).await;

    proxy.heal();
    leaf.wait_health("ok", Duration::from_secs(30)).await;
    wait_fresh(&leaf, "jo", "busy").await;
    assert_eq!(leaf.put("kim", json!({"status": "away"})).await.status(), StatusCode::OK);
    wait_fresh(&center, "kim", "away").await;
    let (status, body) = json_of(leaf.history("kim", None).await).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    leaf.stop().await;
    center.stop().await;
}

/// The p-th percentile (0–100) of `samples`.
fn percentile(samples: &mut [Duration], p: usize) -> Duration {
    samples.sort();
    samples[(samples.len() - 1) * p / 100]
}

#[tokio::test]
async fn over_a_distant_link_reads_stay_local_and_writes_reach_the_other_region_as_they_are_answered() {
    const ONE_WAY: Duration = Duration::from_millis(40);
    let center = TestApp::spawn().await;
    let (to_a, to_b) = (
        ChaosProxy::start(center.config.nats.leaf_port).await,
        ChaosProxy::start(center.config.nats.leaf_port).await,
    );
    let a = leaf_app(to_a.port, "leaf-a", "us-east-1").await;
    let b = leaf_app(to_b.port, "leaf-b", "ap-south-1").await;
    center.set("here", json!({"status": "online"})).await;
    wait_fresh(&a, "here", "online").await;
    wait_fresh(&b, "here", "online").await;
    for proxy in [&to_a, &to_b] {
        proxy.delay(ONE_WAY, ONE_WAY);
    }

    let (mut writes, mut spreads, mut reads) = (Vec::new(), Vec::new(), Vec::new());
    for i in 0..12 {
        let user = format!("far-{i}");
        let sent = Instant::now();
        assert_eq!(a.put(&user, json!({"status": "busy"})).await.status(), StatusCode::OK);
        let answered = Instant::now();
        writes.push(answered - sent);
        eventually(Duration::from_secs(5), "leaf B serves the write", || async {
            let (_, data) = presence_of(b.read(&user).await).await;
            (data[&user]["status"] == "busy").then_some(())
        })
        .await;
        spreads.push(answered.elapsed());
        let read = Instant::now();
        let (_, data) = presence_of(a.read(&user).await).await;
        reads.push(read.elapsed());
        assert_eq!(data[&user]["status"], "busy", "leaf A reads its own write");
    }
    // Medians and maxima with room for a busy machine, but each far from what the wrong design
    // would take: a read that crossed the link takes a round trip (80 ms), a write that waited
    // for two takes 160 ms, a change that reached B by any slower path would trail A's answer.
    let (write, spread, read) =
        (percentile(&mut writes, 50), percentile(&mut spreads, 50), percentile(&mut reads, 100));
    eprintln!(
        "distant link: write p50 {write:?}, A's answer to B serving it p50 {spread:?}, read max {read:?}"
    );
    assert!(write >= 2 * ONE_WAY, "a write waits for the center's acknowledgement: {write:?}");
    assert!(write < 3 * ONE_WAY, "a write takes one round trip to the center, not two: {write:?}");
    assert!(
        spread < ONE_WAY / 2,
        "B serves a write as A answers it, both one way from the center: {spread:?}"
    );
    assert!(read < 2 * ONE_WAY, "reads are answered locally, never a round trip: {read:?}");
    assert_eq!(a.metric("presence_writes_forwarded_total{outcome=\"stored\"}").await, 12.0);
    for app in [a, b, center] {
        app.stop().await;
    }
}

#[tokio::test]
async fn a_leaf_writes_through_the_link_itself_when_no_center_node_takes_its_writes() {
    let cluster = NatsCluster::start().await;
    let url = cluster.url();
    let center = TestApp::spawn_with(move |c| {
        c.nats.embedded = false;
        c.nats.url = url;
    })
    .await;
    let leaf_port = cluster.leaf_ports[0];
    let leaf = leaf_app(leaf_port, "leaf-a", "us-east-1").await;
    assert_eq!(leaf.put("wes", json!({"status": "online"})).await.status(), StatusCode::OK);
    // The center's NATS keeps running; the Presence node on it stops.
    center.stop().await;
    let (status, body) = json_of(leaf.put("wes", json!({"status": "busy", "message": "direct"})).await).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(leaf.metric("presence_writes_forwarded_total{outcome=\"no_center\"}").await, 1.0);
    let (_, history) = json_of(leaf.history("wes", None).await).await;
    assert_eq!(history["data"]["wes"][0]["presence"]["message"], "direct", "its event is stored: {history}");
    wait_fresh(&leaf, "wes", "busy").await;
    leaf.stop().await;
}

#[tokio::test]
async fn a_leaf_starts_its_copy_over_when_the_centers_bucket_is_replaced_and_restarts_with_its_center_down() {
    let center = TestApp::spawn().await;
    let leaf = leaf_app(center.config.nats.leaf_port, "leaf-a", "us-east-1").await;
    for status in ["online", "away", "busy", "online", "away"] {
        center.set("quin", json!({"status": status, "message": "old bucket"})).await;
    }
    copied(&leaf, &center).await;

    // Someone replaces the center's bucket (a restore, a re-creation): its revisions start over.
    let js = jetstream::new(nats_connect(&center.nats_url()).await);
    let config = js.get_key_value("presence").await.unwrap().stream.info().await.unwrap().config.clone();
    js.delete_stream("KV_presence").await.unwrap();
    js.create_stream(config).await.unwrap();
    let kv = js.get_key_value("presence").await.unwrap();
    kv.put("user.quin", crate::helpers::stored_value("quin", "busy", "new bucket", 600)).await.unwrap();

    wait_fresh(&leaf, "quin", "busy").await;
    eventually(Duration::from_secs(30), "the leaf's copy holds the new bucket, not the old", || async {
        (last_revision(&leaf).await == last_revision(&center).await).then_some(())
    })
    .await;
    // The center goes down, the leaf restarts meanwhile and serves the new bucket's record.
    let kept = leaf.stop_keeping().await;
    let center_kept = center.stop_keeping().await;
    let started = Instant::now();
    let leaf = TestApp::restart(kept).await;
    assert!(started.elapsed() < Duration::from_secs(10), "the leaf came up in {:?}", started.elapsed());
    let (stale, data) = presence_of(leaf.read("quin").await).await;
    assert!(stale);
    assert_eq!(data["quin"]["message"], "new bucket", "{data}");
    // The center comes back: the leaf joins, the marks go, writes work.
    let center = TestApp::restart(center_kept).await;
    wait_fresh(&leaf, "quin", "busy").await;
    assert_eq!(leaf.put("quin", json!({"status": "away"})).await.status(), StatusCode::OK);
    wait_fresh(&center, "quin", "away").await;
    leaf.stop().await;
    center.stop().await;
}

#[tokio::test]
async fn a_link_cut_after_the_center_took_a_leafs_write_leaves_one_write_and_one_event() {
    const ONE_WAY: Duration = Duration::from_millis(300);
    let center = TestApp::spawn().await;
    let proxy = ChaosProxy::start(center.config.nats.leaf_port).await;
    let leaf_port = proxy.port;
    let leaf = TestApp::spawn_with(move |c| {
        c.service.node_type = presence::config::NodeType::Leaf;
        c.service.node_id = "leaf-a".into();
        c.nats.center_url = Some(format!("nats-leaf://127.0.0.1:{leaf_port}"));
        c.nats.request_timeout = Duration::from_secs(1);
    })
    .await;
    leaf.set("cato", json!({"status": "online"})).await;
    proxy.delay(ONE_WAY, ONE_WAY);

    // The write reaches the center (after 300 ms) and is carried out; its answer is on its way
    // back when the link goes.
    let write = tokio::spawn({
        let (http, url, token) =
            (leaf.http.clone(), leaf.url("/api/v2/presence/cato"), crate::helpers::mint("cato"));
        async move {
            http.put(url).bearer_auth(token).json(&json!({"status": "busy", "message": "cut"})).send().await
        }
    });
    eventually(Duration::from_secs(5), "the center has the write", || async {
        let (_, data) = presence_of(center.read("cato").await).await;
        (data["cato"]["message"] == "cut").then_some(())
    })
    .await;
    proxy.cut();
    let error = assert_error(write.await.unwrap().unwrap(), StatusCode::SERVICE_UNAVAILABLE).await;
    assert!(error.contains("may or may not"), "the leaf cannot know: {error}");

    proxy.delay(Duration::ZERO, Duration::ZERO);
    proxy.heal();
    wait_fresh(&leaf, "cato", "busy").await;
    let (_, history) = json_of(center.history("cato", None).await).await;
    let cut: Vec<&Value> = history["data"]["cato"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["presence"]["message"] == "cut")
        .collect();
    assert_eq!(cut.len(), 1, "one event for the one write: {history}");
    leaf.stop().await;
    center.stop().await;
}

#[tokio::test]
async fn a_restarted_leaf_marks_what_it_remembers_stale_until_it_has_caught_up() {
    let center = TestApp::spawn().await;
    let proxy = ChaosProxy::start(center.config.nats.leaf_port).await;
    let leaf = leaf_app(proxy.port, "leaf-a", "us-east-1").await;
    center.set("jo", json!({"status": "online", "message": "old"})).await;
    copied(&leaf, &center).await;
    proxy.cut();
    let kept = leaf.stop_keeping().await;
    center.set("jo", json!({"status": "busy", "message": "new"})).await;

    // Back with a slow link: the leaf joins at start-up, but its watcher needs a while to hear of
    // the newer write. Until it has, what the copy says must never be answered as fresh.
    proxy.delay(Duration::ZERO, Duration::from_millis(150));
    proxy.heal();
    let leaf = TestApp::restart(kept).await;
    let started = Instant::now();
    let mut old_answers = 0;
    loop {
        let response = leaf.read("jo").await;
        let stale = response.headers().get("x-presence-stale").is_some_and(|v| v == "true");
        let (_, body) = json_of(response).await;
        match body["data"]["jo"]["message"].as_str() {
            Some("new") if !stale => break,
            Some("old") => {
                assert!(stale, "the copy's older record was answered as fresh");
                old_answers += 1;
            }
            _ => {}
        }
        assert!(started.elapsed() < Duration::from_secs(30), "the leaf never caught up");
    }
    // Usually some (3 to 300 on this machine); none if the watcher was quicker than the first read.
    eprintln!("{old_answers} answers from the copy, all stale, before the leaf caught up");
    leaf.stop().await;
    center.stop().await;
}
