//! The KV bucket as NATS sees it, and a node that uses an external NATS instead of its own.

use std::time::Duration;

use async_nats::jetstream::{self, stream::StorageType};
use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::helpers::{TestApp, json_of};

async fn jetstream_of(app: &TestApp) -> jetstream::Context {
    let client = crate::helpers::nats_connect(&app.nats_url()).await;
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
        c.nats.user = Some(crate::helpers::OPERATOR.into());
        c.nats.password = Some(presence::config::Secret::new(crate::helpers::OPERATOR_PASSWORD.into()));
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

/// A center whose configuration would lower the shared streams' retention (deleting older
/// records) or replicas refuses to start, and changes nothing, unless the operator says so.
#[tokio::test]
async fn a_center_refuses_to_reduce_the_shared_settings_unless_told_to() {
    let nats = crate::helpers::NatsServer::start().await;
    let first = crate::helpers::external_app(&nats, "first").await;
    first.stop().await;
    let dir = tempfile::tempdir().unwrap();
    let mut config = crate::helpers::test_config(dir.path());
    config.nats.embedded = false;
    config.nats.url = nats.url();
    config.nats.kv.retention = Duration::from_secs(86_400);
    let error = match presence::app::Application::build(config.clone()).await {
        Ok(_) => panic!("shortened the bucket's retention without being told to"),
        Err(e) => format!("{e:#}"),
    };
    assert!(error.contains("retention") && error.contains("nats.allow_settings_reduction"), "{error}");
    let js = jetstream::new(async_nats::connect(nats.url()).await.unwrap());
    let max_age = |name: &'static str| {
        let js = js.clone();
        async move { js.get_stream(name).await.unwrap().info().await.unwrap().config.max_age }
    };
    assert_eq!(max_age("KV_presence").await, Duration::from_secs(30 * 86_400), "unchanged");

    config.nats.allow_settings_reduction = true;
    let app = presence::app::Application::build(config).await.expect("told to, it does");
    assert_eq!(max_age("KV_presence").await, Duration::from_secs(86_400));
    app.run_until(async {}).await.unwrap();
}

/// A center whose configuration raises the shared settings brings the streams up to date: the
/// bucket's and the audit log's retention follow `nats.kv.retention` and `events.retention`.
#[tokio::test]
async fn a_center_raises_the_shared_settings_of_both_streams() {
    let nats = crate::helpers::NatsServer::start().await;
    crate::helpers::external_app(&nats, "first").await.stop().await;
    let dir = tempfile::tempdir().unwrap();
    let mut config = crate::helpers::test_config(dir.path());
    config.nats.embedded = false;
    config.nats.url = nats.url();
    config.nats.kv.retention = Duration::from_secs(60 * 86_400);
    config.events.retention = Duration::from_secs(90 * 86_400);
    let app = presence::app::Application::build(config).await.expect("raising needs no permission");
    let js = jetstream::new(async_nats::connect(nats.url()).await.unwrap());
    let max_age = async |name: &str| js.get_stream(name).await.unwrap().info().await.unwrap().config.max_age;
    assert_eq!(max_age("KV_presence").await, Duration::from_secs(60 * 86_400));
    assert_eq!(max_age("PRESENCE_EVENTS").await, Duration::from_secs(90 * 86_400));
    app.run_until(async {}).await.unwrap();
}

/// An audit log made before erasures left markers (its subjects the two kinds of event only)
/// takes the markers' subject when a center starts on it, and an erasure there leaves its marker
/// (otherwise it could not: no stream would take it, and every erasure would fail).
#[tokio::test]
async fn a_center_gives_an_older_audit_log_the_erasure_markers_subject() {
    let nats = crate::helpers::NatsServer::start().await;
    let js = jetstream::new(async_nats::connect(nats.url()).await.unwrap());
    let older = async_nats::jetstream::stream::Config {
        name: "PRESENCE_EVENTS".into(),
        subjects: vec!["presence.update.>".into(), "presence.expire.>".into()],
        max_age: Duration::from_secs(30 * 86_400),
        duplicate_window: Duration::from_secs(120),
        max_messages_per_subject: 1000,
        ..Default::default()
    };
    js.create_stream(older).await.unwrap();
    let app = crate::helpers::external_app(&nats, "upgraded").await;
    let subjects =
        js.get_stream("PRESENCE_EVENTS").await.unwrap().info().await.unwrap().config.subjects.clone();
    assert!(subjects.iter().any(|s| s == "presence.erased.>"), "{subjects:?}");
    app.set("older", serde_json::json!({"status": "online"})).await;
    assert_eq!(app.erase("older").await.status(), reqwest::StatusCode::OK);
    let log = js.get_stream("PRESENCE_EVENTS").await.unwrap();
    let marker = log.get_last_raw_message_by_subject("presence.erased.user.older").await.expect("the marker");
    assert!(marker.sequence > 0);
    app.stop().await;
}
