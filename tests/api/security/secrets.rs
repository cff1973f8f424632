//! Secrets stay where they belong: not in the generated nats-server configuration, not in the
//! embedded server's environment.

use reqwest::StatusCode;
use serde_json::json;

use super::{READER, READER_PASSWORD, url};
use crate::helpers::{ServiceProcess, TestApp, free_port};

/// The nats-server configurations a center and a leaf generate hold no usable secret: the
/// passwords the server accepts as bcrypt hashes, and the leaf's center URLs (which carry its
/// password) through the server's environment. Everyone still gets in with their password.
#[tokio::test]
async fn the_generated_server_configurations_hold_no_password() {
    let center = TestApp::spawn_with(super::with_a_reader).await;
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

/// The service's secrets (a JWT secret from the environment, a password in a `PRESENCE_...`
/// override) are not in the embedded server's environment, where any process of the same user
/// could read them (`/proc/PID/environ`): it inherits only a few harmless variables.
#[tokio::test]
async fn the_embedded_server_inherits_none_of_the_services_secrets() {
    const JWT: &str = "a-jwt-secret-from-the-environment-0123456789";
    const LEAF: &str = "a-leaf-password-from-an-override-0123";
    let dir = tempfile::tempdir().unwrap();
    let (http, nats, leaf) = (free_port(), free_port(), free_port());
    let yaml = format!(
        "service:\n  host: 127.0.0.1\n  port: {http}\n\
         nats:\n  port: {nats}\n  leaf_port: {leaf}\n  data_dir: {data}\n\
         auth:\n  jwt_secret: ${{JWT_SECRET}}\n",
        data = dir.path().join("nats-data").display(),
    );
    let env = [("JWT_SECRET", JWT), ("PRESENCE_NATS__LEAF_PASSWORD", LEAF), ("CANARY_OF_THE_TEST", "x")];
    let mut node = ServiceProcess::start_yaml_env(dir.path(), http, &yaml, &env).on_free_ports(nats, leaf);
    node.wait_healthy().await;
    let pid = node.nats_pid().expect("the embedded server's pid");
    let environ = std::fs::read(format!("/proc/{pid}/environ")).unwrap();
    let environ = String::from_utf8_lossy(&environ);
    for secret in [JWT, LEAF] {
        assert!(!environ.contains(secret), "a secret in the server's environment");
    }
    let names: Vec<&str> = environ.split('\0').filter_map(|v| v.split_once('=')).map(|(n, _)| n).collect();
    let harmless = ["PATH", "HOME", "TZ", "LANG", "LC_ALL", "TMPDIR"];
    assert!(names.iter().all(|n| harmless.contains(n)), "the server inherited {names:?}");
    assert!(names.contains(&"PATH"), "it keeps PATH: {names:?}");
}
