//! Nobody gets into a node's NATS without credentials: not a raw client (which could otherwise
//! forge presences straight into the bucket), not a leaf without the leafnode password. Event
//! readers may listen to presence events and nothing else.

use std::time::Duration;

use futures::StreamExt;
use presence::config::{Config, LeafTls, NatsTls, NatsUser, NodeType, Secret};
use reqwest::StatusCode;
use serde_json::json;

use crate::helpers::{NatsServer, Pki, TestApp, assert_error, eventually, json_of, stored_value};

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
    let leaf = TestApp::spawn_with(|config| {
        config.service.node_type = presence::config::NodeType::Leaf;
        config.service.node_id = "intruder".into();
        config.nats.center_url = Some(format!("nats-leaf://127.0.0.1:{leaf_port}"));
        config.nats.leaf_password = Some(Secret::new("not-the-leaf-password-0123".into()));
    })
    .await;
    refused_by_the_center(&leaf, "the wrong password").await;
    eventually(Duration::from_secs(2), "the center still serves", || async {
        (center.health().await["status"] == "ok").then_some(())
    })
    .await;
    leaf.stop().await;
    center.stop().await;
}

/// A leaf the center did not admit: it started on its own (it waited for its center at
/// start-up and was not let in), and stays on its own: degraded, no bucket, writes refused.
async fn refused_by_the_center(leaf: &TestApp, what: &str) {
    assert_eq!(leaf.health().await["status"], "degraded", "a leaf with {what}");
    let (_, nats) = leaf.nats_health().await;
    assert_eq!(nats["bucket"], false, "a leaf with {what} reached the bucket: {nats}");
    let write = leaf.put("intruder", json!({"status": "online"})).await;
    assert_eq!(write.status(), StatusCode::SERVICE_UNAVAILABLE, "a leaf with {what} wrote");
}

/// A center whose leafnode listener takes mutual TLS and admits `leaves`.
async fn tls_center(pki: &Pki, leaves: &[&str]) -> TestApp {
    let tls = pki.center("center.test", leaves);
    TestApp::spawn_with(move |c| c.nats.leaf_tls = Some(tls)).await
}

/// Makes `config` a leaf dialling `center` by name (`localhost`, in the certificates), over TLS
/// with `tls`.
fn as_tls_leaf(config: &mut Config, center: &TestApp, node_id: &str, tls: Option<LeafTls>) {
    config.service.node_type = NodeType::Leaf;
    config.service.node_id = node_id.into();
    config.nats.center_url = Some(format!("localhost:{}", center.config.nats.leaf_port));
    config.nats.leaf_tls = tls;
}

#[tokio::test]
async fn a_leaf_with_its_certificate_works_end_to_end_with_only_a_leafs_rights() {
    let pki = Pki::new(&["center.test", "leaf-a.test"]);
    let center = tls_center(&pki, &["leaf-a.test"]).await;
    let leaf_tls = pki.leaf("leaf-a.test");
    let leaf = TestApp::spawn_with(|c| as_tls_leaf(c, &center, "leaf-a", Some(leaf_tls))).await;
    let conf = std::fs::read_to_string(leaf.data_dir().join("nats-server.conf")).unwrap();
    assert!(conf.contains("tls://localhost:"), "the leaf dials the center over TLS:\n{conf}");

    // Writes, reads, history and erasure cross the link both ways.
    let (status, body) =
        json_of(leaf.put("lea", json!({"status": "busy", "message": "over TLS"})).await).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let (status, body) = json_of(center.read("lea").await).await;
    assert_eq!((status, &body["data"]["lea"]["message"]), (StatusCode::OK, &json!("over TLS")), "{body}");
    center.set("cem", json!({"status": "away"})).await;
    eventually(Duration::from_secs(5), "the center's write reaches the leaf", || async {
        (json_of(leaf.read("cem").await).await.1["data"]["cem"]["status"] == "away").then_some(())
    })
    .await;
    let (_, history) = json_of(leaf.history("lea", None).await).await;
    assert_eq!(history["data"]["lea"][0]["kind"], "update", "{history}");
    // A device session at the leaf is written into the center's bucket with a leaf's rights.
    let session = crate::helpers::live::Ws::session(&leaf, "lea", "tab", "web").await;
    eventually(Duration::from_secs(5), "the leaf's session reaches the center", || async {
        let shown = json_of(center.read("lea").await).await.1;
        (shown["data"]["lea"]["devices"] == json!({"web": "online"})).then_some(())
    })
    .await;
    session.close().await;
    assert_eq!(leaf.erase("lea").await.status(), StatusCode::OK);
    assert_error(center.read("lea").await, StatusCode::NOT_FOUND).await;

    // The region's copy follows the center's bucket with a leaf's rights.
    let local = crate::helpers::nats_connect(&leaf.nats_url()).await;
    let last = |client: async_nats::Client| async move {
        let js = async_nats::jetstream::new(client);
        js.get_stream("KV_presence").await.ok()?.info().await.ok().map(|i| i.state.last_sequence)
    };
    let operator = crate::helpers::nats_connect(&center.nats_url()).await;
    let wanted = last(operator.clone()).await.unwrap();
    eventually(Duration::from_secs(20), "the leaf's copy has the center's last revision", || async {
        (last(local.clone()).await >= Some(wanted)).then_some(())
    })
    .await;

    // Through the leaf's own server, nothing beyond a leaf's rights reaches the center.
    let js = async_nats::jetstream::with_domain(local.clone(), "center");
    assert!(js.delete_stream("KV_presence").await.is_err(), "a leaf deleted the bucket");
    assert!(js.delete_stream("PRESENCE_EVENTS").await.is_err(), "a leaf deleted the audit log");
    assert!(js.create_stream("STOLEN").await.is_err(), "a leaf created a stream at the center");
    let center_js = async_nats::jetstream::new(operator);
    assert!(center_js.get_stream("KV_presence").await.is_ok(), "the bucket is still there");
    assert!(center_js.get_stream("STOLEN").await.is_err());
    leaf.stop().await;
    center.stop().await;
}

#[tokio::test]
async fn a_leaf_without_a_valid_certificate_is_refused() {
    let pki = Pki::new(&["center.test", "leaf-a.test", "stranger.test"]);
    let other_ca = Pki::new(&["leaf-a.test"]);
    let center = tls_center(&pki, &["leaf-a.test"]).await;
    let attempts = [
        ("no certificate", None),
        (
            "a certificate from another CA",
            Some(LeafTls { ca_file: pki.ca(), ..other_ca.leaf("leaf-a.test") }),
        ),
        ("a valid certificate the center does not admit", Some(pki.leaf("stranger.test"))),
    ];
    for (what, tls) in attempts {
        let leaf = TestApp::spawn_with(|config| as_tls_leaf(config, &center, "intruder", tls)).await;
        refused_by_the_center(&leaf, what).await;
        leaf.stop().await;
    }
    let (status, body) = json_of(center.read("anyone").await).await;
    assert_eq!(status, StatusCode::NOT_FOUND, "the center still serves: {body}");
    center.stop().await;
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

/// The nats-server configurations a center and a leaf generate hold no usable secret: the
/// passwords the server accepts as bcrypt hashes, and the leaf's center URLs (which carry its
/// password) through the server's environment. Everyone still gets in with their password.
#[tokio::test]
async fn the_generated_server_configurations_hold_no_password() {
    let center = TestApp::spawn_with(|c| {
        c.nats.event_readers =
            vec![NatsUser { user: READER.into(), password: Secret::new(READER_PASSWORD.into()) }];
    })
    .await;
    let leaf = crate::helpers::leaf_app(center.config.nats.leaf_port, "leaf-h", "eu-west").await;
    assert_eq!(
        leaf.put("hana", json!({"status": "online"})).await.status(),
        StatusCode::OK,
        "the leaf got in"
    );
    for app in [&center, &leaf] {
        let conf = std::fs::read_to_string(app.data_dir().join("nats-server.conf")).unwrap();
        let service = std::fs::read_to_string(app.data_dir().join("nats-password")).unwrap();
        let secrets =
            [service.trim(), crate::helpers::OPERATOR_PASSWORD, READER_PASSWORD, "test-leaf-password"];
        for secret in secrets {
            assert!(!conf.contains(secret), "{secret} in {}:\n{conf}", app.config.service.node_id);
        }
        assert!(conf.contains("password: \"$2a$10$"), "bcrypt hashes:\n{conf}");
    }
    let leaf_conf = std::fs::read_to_string(leaf.data_dir().join("nats-server.conf")).unwrap();
    assert!(leaf_conf.contains("urls: [$PRESENCE_LEAF_REMOTE_0]"), "{leaf_conf}");
    crate::helpers::nats_connect(&center.nats_url()).await; // the operator, by its password
    let reader = async_nats::ConnectOptions::with_user_and_password(READER.into(), READER_PASSWORD.into())
        .connect(url(&center))
        .await;
    assert!(reader.is_ok(), "the event reader, by its password");
    leaf.stop().await;
    center.stop().await;
}
