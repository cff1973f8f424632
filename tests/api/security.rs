//! Nobody gets into a node's NATS without credentials: not a raw client (which could otherwise
//! forge presences straight into the bucket), not a leaf without the leafnode password. Event
//! readers may listen to presence events and nothing else.

use std::time::Duration;

use futures::StreamExt;
use presence::config::{NatsUser, Secret};
use reqwest::StatusCode;
use serde_json::json;

use crate::helpers::{TestApp, assert_error, eventually, stored_value};

const READER: &str = "dashboard";
const READER_PASSWORD: &str = "dashboard-password-0123456789";

fn url(app: &TestApp) -> String {
    format!("nats://127.0.0.1:{}", app.config.nats.port)
}

#[tokio::test]
async fn a_client_without_credentials_cannot_connect_or_forge_a_presence() {
    let app = TestApp::spawn().await;
    let anonymous = async_nats::connect(url(&app)).await;
    assert!(anonymous.is_err(), "the client port lets anyone in");
    let wrong =
        async_nats::ConnectOptions::with_user_and_password(crate::helpers::OPERATOR.into(), "guess".into())
            .connect(url(&app))
            .await;
    assert!(wrong.is_err(), "a wrong password is refused");
    let conf = std::fs::read_to_string(app.data_dir().join("nats-server.conf")).unwrap();
    let mode = std::fs::metadata(app.data_dir().join("nats-server.conf")).unwrap();
    assert_eq!(
        std::os::unix::fs::PermissionsExt::mode(&mode.permissions()) & 0o777,
        0o600,
        "it holds passwords"
    );
    assert!(conf.contains("authorization"));
    app.stop().await;
}

#[tokio::test]
async fn an_event_reader_listens_and_can_do_nothing_else() {
    let app = TestApp::spawn_with(|c| {
        c.nats.event_readers =
            vec![NatsUser { user: READER.into(), password: Secret::new(READER_PASSWORD.into()) }];
    })
    .await;
    let reader = async_nats::ConnectOptions::with_user_and_password(READER.into(), READER_PASSWORD.into())
        .connect(url(&app))
        .await
        .expect("a reader connects");
    let mut events = reader.subscribe("presence.update.>").await.unwrap();
    reader.flush().await.unwrap();
    app.set("rae", json!({"status": "online"})).await;
    let event = tokio::time::timeout(Duration::from_secs(5), events.next()).await.expect("an event").unwrap();
    assert_eq!(event.subject.as_str(), "presence.update.rae");

    // Forging a presence straight into the bucket, and deleting the audit log, are refused.
    let _ = reader.publish("$KV.presence.user.victim", stored_value("victim", "busy", "forged", 600)).await;
    let js = async_nats::jetstream::new(reader.clone());
    assert!(js.delete_stream("PRESENCE_EVENTS").await.is_err(), "a reader deleted the audit log");
    let _ = reader.flush().await;
    assert_error(app.read("victim").await, StatusCode::NOT_FOUND).await;
    let operator = crate::helpers::nats_connect(&app.nats_url()).await;
    let stream = async_nats::jetstream::new(operator).get_stream("PRESENCE_EVENTS").await;
    assert!(stream.is_ok(), "the audit log is still there");
    app.stop().await;
}

#[tokio::test]
async fn a_leaf_with_the_wrong_password_is_refused() {
    let center = TestApp::spawn().await;
    let leaf_port = center.config.nats.leaf_port;
    let dir = tempfile::tempdir().unwrap();
    let mut config = crate::helpers::test_config(dir.path());
    config.service.node_type = presence::config::NodeType::Leaf;
    config.service.node_id = "intruder".into();
    config.nats.center_url = Some(format!("nats-leaf://127.0.0.1:{leaf_port}"));
    config.nats.leaf_password = Some(Secret::new("not-the-leaf-password-0123".into()));
    config.nats.startup_timeout = Duration::from_secs(3);
    let error = match presence::app::Application::build(config).await {
        Ok(_) => panic!("a leaf without the password reached the center's bucket"),
        Err(e) => format!("{e:#}"),
    };
    assert!(error.contains("bucket"), "{error}");
    eventually(Duration::from_secs(2), "the center still serves", || async {
        (center.health().await["status"] == "ok").then_some(())
    })
    .await;
    center.stop().await;
}
