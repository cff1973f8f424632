//! Who gets in, and what they may do once in: nobody reaches a node's NATS without credentials
//! (not a raw client, which could otherwise forge presences straight into the bucket); event
//! readers may listen to presence events and nothing else; an external NATS is reached with the
//! credentials it asks for. Leaves in `leaves.rs`, secrets kept out of reach in `secrets.rs`.

mod leaves;
mod secrets;

use std::time::Duration;

use futures::StreamExt;
use presence::config::{Config, NatsTls, NatsUser, Secret};
use reqwest::StatusCode;
use serde_json::json;

use crate::helpers::{NatsServer, Pki, TestApp, assert_error, json_of, stored_value};

const READER: &str = "dashboard";
const READER_PASSWORD: &str = "dashboard-password-0123456789";

/// A node with the event reader `READER`.
fn with_a_reader(c: &mut Config) {
    c.nats.event_readers =
        vec![NatsUser { user: READER.into(), password: Secret::new(READER_PASSWORD.into()) }];
}

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
    let app = TestApp::spawn_with(with_a_reader).await;
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

/// A node on the external NATS `server`, dialled as `localhost` (the name in its certificate),
/// configured by `adjust`.
async fn try_external(server: &NatsServer, adjust: impl FnOnce(&mut Config)) -> Result<TestApp, String> {
    let port = server.port;
    TestApp::try_spawn_with(move |c| {
        c.nats.embedded = false;
        c.nats.url = format!("nats://localhost:{port}");
        c.nats.startup_timeout = Duration::from_secs(3);
        adjust(c);
    })
    .await
}

async fn works(app: &TestApp) {
    let (status, body) = json_of(app.put("ext", json!({"status": "away"})).await).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let (status, body) = json_of(app.read("ext").await).await;
    assert_eq!((status, &body["data"]["ext"]["status"]), (StatusCode::OK, &json!("away")), "{body}");
}

#[tokio::test]
async fn an_external_nats_is_reached_with_a_token_over_verified_tls() {
    let pki = Pki::new(&["nats.test"]);
    let server = NatsServer::start_secured(format!(
        "tls {{ cert_file: {:?}, key_file: {:?}, timeout: 2 }}\nauthorization {{ token: \"external-token-0123456789\" }}",
        pki.cert("nats.test"),
        pki.key("nats.test"),
    ))
    .await;
    let tls = NatsTls { ca_file: Some(pki.ca()), ..NatsTls::default() };
    let token = Secret::new("external-token-0123456789".into());
    let (t, k) = (tls.clone(), token.clone());
    let app = try_external(&server, move |c| {
        c.nats.tls = Some(t);
        c.nats.token = Some(k);
    })
    .await
    .unwrap();
    works(&app).await;
    app.stop().await;

    let stranger = Pki::new(&["nats.test"]);
    let t = tls.clone();
    let error =
        try_external(&server, move |c| c.nats.tls = Some(NatsTls { ca_file: Some(stranger.ca()), ..t }))
            .await
            .err()
            .expect("a server whose certificate the CA did not sign is refused");
    assert!(!error.contains("external-token"), "the token stays out of errors: {error}");
    let no_token = try_external(&server, move |c| c.nats.tls = Some(tls)).await;
    assert!(no_token.is_err(), "no token, no entry");
}

#[tokio::test]
async fn an_external_nats_with_mutual_tls_takes_the_services_client_certificate() {
    let pki = Pki::new(&["nats.test", "presence.test"]);
    let server = NatsServer::start_secured(format!(
        "tls {{ cert_file: {:?}, key_file: {:?}, ca_file: {:?}, verify: true, timeout: 2 }}\n\
         authorization {{ users = [ {{ user: svc, password: \"service-password-0123\" }} ] }}",
        pki.cert("nats.test"),
        pki.key("nats.test"),
        pki.ca(),
    ))
    .await;
    let with_cert = NatsTls {
        ca_file: Some(pki.ca()),
        cert_file: Some(pki.cert("presence.test")),
        key_file: Some(pki.key("presence.test")),
    };
    let credentials = |c: &mut Config| {
        c.nats.user = Some("svc".into());
        c.nats.password = Some(Secret::new("service-password-0123".into()));
    };
    let app = try_external(&server, |c| {
        credentials(c);
        c.nats.tls = Some(with_cert);
    })
    .await
    .unwrap();
    works(&app).await;
    app.stop().await;
    let without_cert = try_external(&server, |c| {
        credentials(c);
        c.nats.tls = Some(NatsTls { ca_file: Some(pki.ca()), ..NatsTls::default() });
    })
    .await;
    assert!(without_cert.is_err(), "a client without a certificate got in");
}

#[tokio::test]
async fn an_external_nats_in_operator_mode_takes_a_creds_file() {
    let operator = crate::helpers::operator::Operator::new();
    let server = NatsServer::start_secured(operator.server_config.clone()).await;
    let dir = tempfile::tempdir().unwrap();
    let creds = dir.path().join("presence.creds");
    std::fs::write(&creds, &operator.creds).unwrap();
    let path = creds.clone();
    let app = try_external(&server, move |c| c.nats.credentials = Some(path)).await.unwrap();
    works(&app).await;
    app.stop().await;
    let anonymous = try_external(&server, |_| {}).await;
    assert!(anonymous.is_err(), "no credentials, no entry");
    let missing = try_external(&server, |c| c.nats.credentials = Some("/nonexistent.creds".into())).await;
    assert!(missing.err().unwrap().contains("nats.credentials"), "the error names the key");
}
