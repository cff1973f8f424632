//! Hub and spoke: a center and leaves, each with its own embedded nats-server on loopback.

use std::time::{Duration, Instant};

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::helpers::{
    ChaosProxy, NatsCluster, SECRET, ServiceProcess, TestApp, assert_error, eventually, json_of, kill9,
    leaf_app, mint,
};

async fn status_at(app: &TestApp, user: &str) -> Option<String> {
    let (status, body) = json_of(app.get(&format!("/api/v2/presence/{user}")).await).await;
    (status == StatusCode::OK).then(|| body["data"][user]["status"].as_str().unwrap().to_string())
}

async fn wait_status(app: &TestApp, user: &str, want: &str, within: Duration) {
    let what = format!("{user} reads {want} at {}", app.config.service.node_id);
    eventually(within, &what, || async {
        (status_at(app, user).await.as_deref() == Some(want)).then_some(())
    })
    .await;
}

async fn misses(app: &TestApp) -> u64 {
    app.cache_health().await["misses"].as_u64().unwrap()
}

#[tokio::test]
async fn writes_reach_every_node_and_the_registry_lists_them() {
    let center = TestApp::spawn().await;
    let leaf_port = center.config.nats.leaf_port;
    let a = leaf_app(leaf_port, "leaf-a", "us-east-1").await;
    let b = leaf_app(leaf_port, "leaf-b", "eu-west-1").await;

    let (status, body) = json_of(a.put("hana", json!({"status": "busy", "message": "from A"})).await).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["data"]["hana"]["node_id"], "leaf-a");
    wait_status(&b, "hana", "busy", Duration::from_secs(5)).await;
    wait_status(&center, "hana", "busy", Duration::from_secs(5)).await;
    // The leaf's update event reached the center's audit log.
    let (_, history) = json_of(center.history("hana", None).await).await;
    assert_eq!(history["data"]["hana"][0]["node_id"], "leaf-a", "{history}");

    // A write at the center reaches the leaves' caches through their watchers.
    for leaf in [&a, &b] {
        assert_eq!(status_at(leaf, "ivan").await, None);
    }
    center.set("ivan", json!({"status": "away"})).await;
    for leaf in [&a, &b] {
        wait_status(leaf, "ivan", "away", Duration::from_secs(5)).await;
        let before = misses(leaf).await;
        assert_eq!(status_at(leaf, "ivan").await.as_deref(), Some("away"));
        assert_eq!(misses(leaf).await, before, "served from the leaf's cache");
    }

    let nodes = eventually(Duration::from_secs(10), "the registry lists all three nodes, up", || async {
        let nodes = center.nodes().await;
        (nodes.len() == 3 && nodes.iter().all(|n| n["up"] == true)).then_some(nodes)
    })
    .await;
    let by_id = |id: &str| nodes.iter().find(|n| n["node_id"] == id).unwrap().clone();
    assert_eq!(by_id("leaf-a")["node_type"], "leaf");
    assert_eq!(by_id("leaf-a")["region"], "us-east-1");
    assert_eq!(by_id("test-node")["node_type"], "center");
    for node in &nodes {
        assert!(node["lag"].as_u64().is_some(), "{node}");
        // The KV revision a node applied moves with every write, invisible users' included.
        assert!(node.get("applied_revision").is_none() && node.get("encrypts_store").is_none(), "{node}");
    }
    eventually(Duration::from_secs(10), "heartbeats report cached entries", || async {
        let nodes = center.nodes().await;
        nodes.iter().all(|n| n["cache_entries"].as_u64() >= Some(1)).then_some(())
    })
    .await;
    let health = center.health().await;
    assert_eq!(health["nodes"], json!({"known": 3, "up": 3}));
    for app in [a, b, center] {
        app.stop().await;
    }
}

#[tokio::test]
async fn a_partitioned_leaf_serves_stale_refuses_writes_and_catches_up() {
    let center = TestApp::spawn().await;
    let proxy = ChaosProxy::start(center.config.nats.leaf_port).await;
    let a = leaf_app(proxy.port, "leaf-a", "us-east-1").await;
    center.set("jo", json!({"status": "online", "message": "before"})).await;
    wait_status(&a, "jo", "online", Duration::from_secs(5)).await;

    proxy.cut();
    a.wait_health("degraded", Duration::from_secs(10)).await;
    let cached = a.get("/api/v2/presence/jo").await;
    assert_eq!(cached.headers()["x-presence-stale"], "true");
    assert!(cached.headers().get("x-presence-degraded").is_none(), "a cached entry is stale, not degraded");
    let body = json_of(cached).await.1;
    assert_eq!(body["data"]["jo"]["message"], "before", "{body}");
    let started = Instant::now();
    let miss = a.get("/api/v2/presence/nobody-here").await;
    assert_eq!(miss.headers()["x-presence-degraded"], "true");
    assert_error(a.put("kim", json!({"status": "online"})).await, StatusCode::SERVICE_UNAVAILABLE).await;
    assert!(started.elapsed() < Duration::from_secs(1), "no waiting for timeouts: {:?}", started.elapsed());

    // Meanwhile the rest of the world moves on.
    center.set("jo", json!({"status": "busy", "message": "during"})).await;
    center.set("lou", json!({"status": "away"})).await;

    proxy.heal();
    let healed = Instant::now();
    wait_status(&a, "jo", "busy", Duration::from_secs(10)).await;
    wait_status(&a, "lou", "away", Duration::from_secs(10)).await;
    eventually(Duration::from_secs(10), "the leaf is fresh again", || async {
        let r = a.get("/api/v2/presence/jo").await;
        r.headers().get("x-presence-stale").is_none().then_some(())
    })
    .await;
    assert!(healed.elapsed() < Duration::from_secs(10));
    assert_eq!(a.put("kim", json!({"status": "online"})).await.status(), StatusCode::OK);
    a.stop().await;
    center.stop().await;
}

#[tokio::test]
async fn leaves_survive_a_killed_center_and_converge_when_it_returns() {
    let dir = tempfile::tempdir().unwrap();
    let mut center = ServiceProcess::start(dir.path(), None, Some(SECRET));
    center.wait_healthy().await;
    let a = leaf_app(center.leaf_port, "leaf-a", "us-east-1").await;
    let b = leaf_app(center.leaf_port, "leaf-b", "eu-west-1").await;
    let (status, _) = json_of(a.put("max", json!({"status": "busy", "message": "acked"})).await).await;
    assert_eq!(status, StatusCode::OK);
    wait_status(&b, "max", "busy", Duration::from_secs(5)).await;

    let nats = center.nats_pid().unwrap();
    center.kill9();
    kill9(nats);
    for leaf in [&a, &b] {
        leaf.wait_health("degraded", Duration::from_secs(10)).await;
        let cached = leaf.get("/api/v2/presence/max").await;
        assert_eq!(cached.headers()["x-presence-stale"], "true");
        let started = Instant::now();
        assert_error(leaf.put("ned", json!({"status": "online"})).await, StatusCode::SERVICE_UNAVAILABLE)
            .await;
        assert!(started.elapsed() < Duration::from_secs(1));
    }

    let mut again = ServiceProcess::start(dir.path(), Some(center.ports()), Some(SECRET));
    again.wait_healthy().await;
    eventually(Duration::from_secs(20), "leaf B writes again", || async {
        (b.put("ned", json!({"status": "online"})).await.status() == StatusCode::OK).then_some(())
    })
    .await;
    wait_status(&a, "ned", "online", Duration::from_secs(10)).await;
    let client = reqwest::Client::new();
    let (_, body) = json_of(client.get(again.url("/api/v2/presence/max")).send().await.unwrap()).await;
    assert_eq!(body["data"]["max"]["message"], "acked", "nothing acknowledged before the kill is lost");
    let token = mint("ned");
    let write =
        client.put(again.url("/api/v2/presence/ned")).bearer_auth(token).json(&json!({"status": "away"}));
    assert_eq!(write.send().await.unwrap().status(), StatusCode::OK);
    for leaf in [&a, &b] {
        wait_status(leaf, "ned", "away", Duration::from_secs(10)).await;
    }
    a.stop().await;
    b.stop().await;
}

#[tokio::test]
async fn a_three_server_center_keeps_taking_writes_with_one_server_down() {
    let mut cluster = NatsCluster::start().await;
    let url = cluster.url();
    let center = TestApp::spawn_with(move |c| {
        c.nats.embedded = false;
        c.nats.url = url;
        c.nats.kv.replicas = 3;
    })
    .await;
    let leaf_urls =
        cluster.leaf_ports.iter().map(|p| format!("nats-leaf://127.0.0.1:{p}")).collect::<Vec<_>>();
    // A leaf configured with one replica and short retention must not change the shared settings.
    let leaf = TestApp::spawn_with(move |c| {
        c.service.node_type = presence::config::NodeType::Leaf;
        c.service.node_id = "leaf-a".into();
        c.nats.center_url = Some(leaf_urls.join(","));
        c.nats.kv.retention = Duration::from_secs(3600);
        c.events.retention = Duration::from_secs(3600);
    })
    .await;
    assert_eq!(center.put("olive", json!({"status": "online"})).await.status(), StatusCode::OK);
    wait_status(&leaf, "olive", "online", Duration::from_secs(10)).await;
    let urls = cluster.url();
    let urls: Vec<&str> = urls.split(',').collect();
    let js = async_nats::jetstream::new(async_nats::connect(urls.as_slice()).await.unwrap());
    let mut bucket = js.get_stream("KV_presence").await.unwrap();
    for name in ["KV_presence", "PRESENCE_EVENTS"] {
        let config = js.get_stream(name).await.unwrap().info().await.unwrap().config.clone();
        assert_eq!(config.num_replicas, 3, "{name} keeps the center's replicas");
        assert_eq!(config.max_age, Duration::from_secs(30 * 86_400), "{name} keeps the center's retention");
    }

    // Kill the server that leads the bucket: the worst one to lose.
    let leader = bucket.info().await.unwrap().cluster.clone().and_then(|c| c.leader).expect("a leader");
    // The node shows where the shared streams live, and how many copies are current.
    let (_, nats) = center.nats_health().await;
    assert_eq!(nats["streams"]["bucket"]["leader"], leader.as_str(), "{nats}");
    assert_eq!(nats["streams"]["bucket"]["replicas"].as_array().unwrap().len(), 2, "{nats}");
    assert!(nats["streams"]["audit_log"]["leader"].is_string(), "{nats}");
    let metrics = center.metrics().await;
    assert!(metrics.contains("presence_jetstream_replicas_current{stream=\"bucket\"} 3"), "{metrics}");
    let leads = format!("presence_jetstream_leader{{stream=\"bucket\",server=\"{leader}\"}} 1");
    assert!(metrics.contains(&leads), "{metrics}");
    cluster.kill(leader.trim_start_matches('c').parse().unwrap());
    eventually(Duration::from_secs(30), "a new leader, the killed server not current", || async {
        let (_, nats) = center.nats_health().await;
        let bucket = &nats["streams"]["bucket"];
        let moved = bucket["leader"].as_str().is_some_and(|l| l != leader);
        let behind = bucket["replicas"].as_array().is_some_and(|peers| {
            peers
                .iter()
                .any(|p| p["name"] == leader.as_str() && (p["current"] == false || p["offline"] == true))
        });
        (moved && behind).then_some(())
    })
    .await;
    let metrics = center.metrics().await;
    assert!(!metrics.contains(&leads), "the old leader's series is gone:\n{metrics}");
    eventually(Duration::from_secs(30), "writes go through with two of three servers", || async {
        (center.put("olive", json!({"status": "busy"})).await.status() == StatusCode::OK).then_some(())
    })
    .await;
    // The leaf's link may have run through the killed server: it reconnects, then catches up.
    wait_status(&leaf, "olive", "busy", Duration::from_secs(30)).await;
    eventually(Duration::from_secs(30), "the leaf writes through the remaining servers", || async {
        (leaf.put("pete", json!({"status": "away"})).await.status() == StatusCode::OK).then_some(())
    })
    .await;
    wait_status(&center, "pete", "away", Duration::from_secs(30)).await;
    leaf.stop().await;
    center.stop().await;
}

#[tokio::test]
async fn concurrent_writes_of_one_user_on_a_replicated_center_all_land() {
    // Two center nodes on a three-server cluster write the same user at once: each write that
    // loses the compare-and-set tries again (a clustered leader says "wrong last sequence" with
    // its own error code), none is answered "outcome unknown".
    let cluster = NatsCluster::start().await;
    let mut centers = Vec::new();
    for id in ["center-1", "center-2"] {
        let url = cluster.url();
        centers.push(
            TestApp::spawn_with(move |c| {
                c.service.node_id = id.into();
                c.rate_limit.enabled = false;
                c.nats.embedded = false;
                c.nats.url = url;
                c.nats.kv.replicas = 3;
            })
            .await,
        );
    }
    for round in 0..5 {
        let writes =
            (0..16).map(|i| {
                let center = &centers[i % 2];
                async move {
                    center.put("tess", json!({"status": "online", "message": format!("{round}-{i}")})).await
                }
            });
        for answer in futures::future::join_all(writes).await {
            let status = answer.status();
            assert_eq!(status, StatusCode::OK, "{}", answer.text().await.unwrap());
        }
    }
    for center in centers {
        center.stop().await;
    }
}

#[tokio::test]
async fn a_node_rebuilds_its_cache_when_the_bucket_is_not_the_one_it_knew() {
    let app = TestApp::spawn().await;
    for status in ["online", "away", "busy", "online", "away"] {
        app.set("quin", json!({"status": status, "message": "old bucket"})).await;
    }
    app.set("rosa", json!({"status": "online"})).await;
    wait_status(&app, "quin", "away", Duration::from_secs(5)).await;

    // Someone replaces the bucket (a restore, a re-creation): its revisions start over.
    let client = crate::helpers::nats_connect(&app.nats_url()).await;
    let js = async_nats::jetstream::new(client);
    let config = js.get_key_value("presence").await.unwrap().stream.info().await.unwrap().config.clone();
    js.delete_stream("KV_presence").await.unwrap();
    js.create_stream(config).await.unwrap();
    let kv = js.get_key_value("presence").await.unwrap();
    kv.put("user.quin", crate::helpers::stored_value("quin", "busy", "new bucket", 600)).await.unwrap();

    eventually(Duration::from_secs(10), "the node rebuilds from the new bucket", || async {
        let (_, body) = json_of(app.get("/api/v2/presence/quin").await).await;
        (body["data"]["quin"]["message"] == "new bucket").then_some(())
    })
    .await;
    eventually(Duration::from_secs(5), "what the new bucket lacks is gone from the cache", || async {
        (status_at(&app, "rosa").await.is_none()).then_some(())
    })
    .await;
    let (_, nats) = app.nats_health().await;
    assert!(nats["watcher"]["rebuilds"].as_u64().unwrap() >= 1);
    app.stop().await;
}

/// Anyone who can publish on NATS can send heartbeats: the registry believes only well-formed
/// ones on the sender's own subject, and holds at most 1000 nodes however many are made up.
#[tokio::test]
async fn fake_heartbeats_cannot_bloat_or_spoof_the_registry() {
    let app = TestApp::spawn().await;
    let client = crate::helpers::nats_connect(&app.nats_url()).await;
    let beat = |id: &str, node_type: &str| {
        json!({"node_id": id, "node_type": node_type, "region": "nowhere", "version": "6.6.6",
               "applied_revision": 0, "cache_entries": 0, "uptime_seconds": 0, "fresh": true,
               "sent_at": "2026-01-01T00:00:00.000Z"})
    };
    let publish = |subject: String, body: Value| {
        let client = client.clone();
        async move { client.publish(subject, serde_json::to_vec(&body).unwrap().into()).await.unwrap() }
    };
    publish("presence.sync.spoof".into(), beat("test-node", "center")).await;
    publish("presence.sync.odd".into(), beat("odd", "mainframe")).await;
    publish("presence.sync.huge".into(), json!({"node_id": "huge", "pad": "x".repeat(8192)})).await;
    for i in 0..3000 {
        publish(format!("presence.sync.fake{i}"), beat(&format!("fake{i}"), "leaf")).await;
    }
    client.flush().await.unwrap();
    let nodes = eventually(Duration::from_secs(10), "the flood is read", || async {
        let nodes = app.nodes().await;
        (nodes.len() >= 1000).then_some(nodes)
    })
    .await;
    assert_eq!(nodes.len(), 1000, "bounded");
    for node in &nodes {
        let id = node["node_id"].as_str().unwrap();
        assert!(id == "test-node" || id.starts_with("fake"), "{id}");
        if id == "test-node" {
            assert_eq!(node["version"], env!("CARGO_PKG_VERSION"), "its own heartbeat, not the spoof");
        }
    }
    app.stop().await;
}
