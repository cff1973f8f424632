//! The KV bucket as NATS sees it, and a node that uses an external NATS instead of its own.

use std::time::Duration;

use async_nats::jetstream::{self, stream::StorageType};
use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::helpers::{TestApp, json_of};

async fn jetstream_of(app: &TestApp) -> jetstream::Context {
    let client = async_nats::connect(format!("127.0.0.1:{}", app.config.nats.port)).await.unwrap();
    jetstream::new(client)
}

#[tokio::test]
async fn the_bucket_and_its_values_are_as_documented() {
    let app = TestApp::spawn().await;
    let (_, put) =
        json_of(app.put("lena", json!({"status": "away", "message": "tea", "ttl": 120})).await).await;
    let js = jetstream_of(&app).await;
    let kv = js.get_key_value("presence").await.unwrap();
    let info = js.get_stream("KV_presence").await.unwrap().cached_info().config.clone();
    assert_eq!(info.max_messages_per_subject, 1, "history 1");
    assert_eq!(info.storage, StorageType::File);
    assert_eq!(info.max_age, Duration::from_secs(30 * 24 * 3600), "retention");
    assert!(info.allow_message_ttl, "per-key TTL enabled");
    assert!(info.subject_delete_marker_ttl.is_some(), "expiry markers enabled");

    let raw: Value =
        serde_json::from_slice(&kv.get("user.lena").await.unwrap().expect("stored under user.{id}")).unwrap();
    let shown = &put["data"]["lena"];
    for field in ["user_id", "status", "message", "last_seen", "updated_at", "node_id", "ttl"] {
        assert!(raw.get(field).is_some(), "{field} stored: {raw}");
    }
    assert_eq!(raw["status"], shown["status"]);
    let updated = chrono::DateTime::parse_from_rfc3339(raw["updated_at"].as_str().unwrap()).unwrap();
    let expires = chrono::DateTime::parse_from_rfc3339(raw["expires_at"].as_str().unwrap()).unwrap();
    assert_eq!(expires - updated, chrono::Duration::seconds(120), "the absolute expiry time is stored");
    app.stop().await;
}

#[tokio::test]
async fn a_node_on_external_nats_shares_the_bucket() {
    let center = TestApp::spawn().await;
    let nats_url = format!("nats://127.0.0.1:{}", center.config.nats.port);
    let other = TestApp::spawn_with(|c| {
        c.nats.embedded = false;
        c.nats.url = nats_url;
        c.service.node_id = "external-node".into();
    })
    .await;
    let (status, _) = json_of(other.put("mona", json!({"status": "busy"})).await).await;
    assert_eq!(status, StatusCode::OK);
    let (status, body) = json_of(center.get("/api/v2/presence/mona").await).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["data"]["mona"]["node_id"], "external-node");
    other.stop().await;
    center.stop().await;
}

/// `nats.jetstream.sync_interval: always` reaches the embedded server, which takes writes with it.
#[tokio::test]
async fn the_embedded_server_can_sync_every_write() {
    let parsed =
        presence::config::from_sources(Some("nats:\n  jetstream:\n    sync_interval: always\n"), &[]);
    let sync = parsed.unwrap().nats.jetstream.sync_interval;
    let app = TestApp::spawn_with(move |c| c.nats.jetstream.sync_interval = sync).await;
    let conf = std::fs::read_to_string(app.data_dir().join("nats-server.conf")).unwrap();
    assert!(conf.contains("sync_interval: always"), "{conf}");
    app.set("sy", serde_json::json!({"status": "online"})).await;
    let bad =
        presence::config::from_sources(Some("nats:\n  jetstream:\n    sync_interval: sometimes\n"), &[]);
    assert_eq!(bad.unwrap_err().key, "nats.jetstream.sync_interval");
    app.stop().await;
}
