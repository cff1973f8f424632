//! Configuration as a user writes it: the design document's YAML (docs/design.md, 9.1), and errors that name the key.

use std::{process::Command, time::Duration};

use presence::config::{LogFormat, NodeType, from_sources};

const DESIGN_YAML: &str = include_str!("../fixtures/design-9.1.yaml");

#[test]
fn the_design_documents_yaml_parses_as_it_stands() {
    let secret = "a-secret-from-the-environment-0123456789";
    let env = vec![("JWT_SECRET".to_string(), secret.to_string())];
    let c = from_sources(Some(DESIGN_YAML), &env).unwrap();
    c.validate().unwrap();
    assert_eq!(c.service.port, 8080);
    assert_eq!(c.service.node_type, NodeType::Center);
    assert_eq!(c.node_id(), "center-node-1");
    assert!(c.nats.embedded);
    assert_eq!(c.nats.jetstream.max_memory, 1_000_000_000);
    assert_eq!(c.nats.jetstream.max_file, 10_000_000_000);
    assert_eq!(c.nats.kv.bucket, "presence");
    assert_eq!(c.nats.kv.ttl, Duration::from_secs(3600));
    assert_eq!(c.cache.max_cost, 1_000_000);
    assert_eq!(c.cache.num_counters, 100_000);
    assert_eq!(c.auth.jwt_secret.as_ref().unwrap().expose(), secret);
    assert_eq!(c.auth.jwt_issuer, "presence-service");
    assert_eq!(c.auth.jwt_ttl, Duration::from_secs(24 * 3600));
    assert_eq!(c.logging.format, LogFormat::Json);

    let without_secret = from_sources(Some(DESIGN_YAML), &[]).unwrap();
    without_secret.validate().unwrap();
    assert!(without_secret.auth.jwt_secret.is_none(), "unset JWT_SECRET means a generated secret");
}

fn run_with_config(yaml: &str) -> (bool, String) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("c.yaml");
    std::fs::write(&path, yaml).unwrap();
    let out =
        Command::new(env!("CARGO_BIN_EXE_presence")).args(["serve", "--config"]).arg(&path).output().unwrap();
    (out.status.success(), String::from_utf8_lossy(&out.stderr).into_owned())
}

#[test]
fn config_errors_name_the_key_and_exit_non_zero() {
    for (yaml, key) in [
        ("service:\n  port: 99999\n", "service.port"),
        ("nats:\n  kv:\n    ttl: forever\n", "nats.kv.ttl"),
        ("nats:\n  jetstream:\n    max_memory: -1\n", "nats.jetstream.max_memory"),
        ("auth:\n  jwt_secret: tooshort\n", "auth.jwt_secret"),
        ("logging:\n  format: xml\n", "logging.format"),
        ("service:\n  node_id: a.b\n", "service.node_id"),
        // Nothing listens beyond loopback without TLS, nor encrypts with a key too short.
        ("service:\n  host: 0.0.0.0\n", "service.tls"),
        ("service:\n  tls:\n    mode: proxy\n", "service.tls.trusted_proxies"),
        ("nats:\n  host: 0.0.0.0\n", "nats.host"),
        ("nats:\n  leaf_host: 0.0.0.0\n", "nats.leaf_host"),
        ("nats:\n  leaf_tls: {cert_file: a, key_file: b, ca_file: c}\n", "nats.leaf_tls.leaves"),
        ("nats:\n  jetstream:\n    encryption: {key: short}\n", "nats.jetstream.encryption.key"),
        ("nats:\n  jetstream:\n    encryption: {key: \"\"}\n", "nats.jetstream.encryption.key"),
        // The embedded server keeps bcrypt hashes, which read no more than 71 bytes of a password.
        (&format!("nats:\n  leaf_password: {}\n", "x".repeat(72)), "nats.leaf_password"),
        (&format!("nats:\n  operators: [{{user: ops, password: {}}}]\n", "x".repeat(72)), "nats.operators"),
        // A rotation's previous secret is as long as a secret, and not the current one.
        (
            "auth:\n  jwt_secret: 0123456789abcdef0123456789abcdef\n  previous_jwt_secret: short\n",
            "auth.previous_jwt_secret",
        ),
        (
            "auth:\n  jwt_secret: 0123456789abcdef0123456789abcdef\n  previous_jwt_secret: 0123456789abcdef0123456789abcdef\n",
            "auth.previous_jwt_secret",
        ),
    ] {
        let (ok, stderr) = run_with_config(yaml);
        assert!(!ok, "{yaml} should fail");
        assert!(stderr.contains(key), "{yaml}: stderr names {key}: {stderr}");
    }
    let (ok, stderr) = run_with_config("service:\n  prot: 1\n");
    assert!(!ok && stderr.contains("prot"), "{stderr}");
}

#[test]
fn a_missing_nats_server_says_how_to_install_it() {
    let dir = tempfile::tempdir().unwrap();
    let yaml = format!(
        "service:\n  port: 0\nnats:\n  server_bin: /nonexistent/nats-server\n  data_dir: {}\n",
        dir.path().join("d").display()
    );
    let (ok, stderr) = run_with_config(&yaml);
    assert!(!ok);
    assert!(stderr.contains("install-nats-server"), "{stderr}");
}

#[test]
fn the_design_documents_discovery_layout_drives_a_leaf() {
    let yaml = "service:\n  node_type: leaf\n  node_id: leaf-eu-west-1\n  region: eu-west-1\n\
                center_node:\n  host: center.presence.internal\n  nats_port: 4222\n  leaf_port: 7422\n\
                leaf_nodes:\n  - region: us-east-1\n    host: leaf-us-east.presence.internal\n  \
                - region: eu-west-1\n    host: leaf-eu-west.presence.internal\n";
    let c = from_sources(Some(yaml), &[]).unwrap();
    c.validate().unwrap();
    assert_eq!(c.center_urls(), vec!["nats-leaf://center.presence.internal:7422".to_string()]);
    assert_eq!(c.leaf_nodes.len(), 2);
    assert_eq!(c.leaf_domain(), "leaf-eu-west-1");

    let lonely = from_sources(Some("service:\n  node_type: leaf\n"), &[]).unwrap();
    assert_eq!(lonely.validate().unwrap_err().key, "nats.center_url");
}
