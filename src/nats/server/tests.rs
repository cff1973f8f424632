//! The embedded server's unit tests: its configuration file and version checks.

use super::*;
use crate::config::SERVICE_USER;

#[test]
fn versions_parse_and_compare() {
    assert_eq!(parse_version("nats-server: v2.15.1"), Some((2, 15, 1)));
    assert_eq!(parse_version("nats-server: v2.11.0-RC.1"), Some((2, 11, 0)));
    assert!(parse_version("nats-server: v2.9.10").unwrap() < MIN_VERSION);
    assert_eq!(parse_version("garbage"), None);
}

#[test]
fn config_has_domain_limits_and_leaf_listener() {
    let pw = Secret::new("service-password-0123456789".into());
    let text = render_config(&Config::default(), "center-1", Path::new("/tmp/x"), &pw, Some(&pw));
    for needle in
        ["domain: \"center\"", "max_file_store: 10000000000", "no_advertise: true", "\"127.0.0.1:7422\""]
    {
        assert!(text.contains(needle), "{needle} missing in\n{text}");
    }
    let mut leaf = Config::default();
    leaf.service.node_type = NodeType::Leaf;
    leaf.service.node_id = "leaf-eu".into();
    leaf.nats.center_url = Some("center-a.example:7422, nats-leaf://center-b.example:7422".into());
    let text = render_config(&leaf, "leaf-eu", Path::new("/tmp/x"), &pw, None);
    for needle in [
        "domain: \"leaf-eu\"",
        "\"nats-leaf://center-a.example:7422\", \"nats-leaf://center-b.example:7422\"",
        "ping_interval: \"3s\"",
        "s2_auto",
    ] {
        assert!(text.contains(needle), "{needle} missing in\n{text}");
    }
    assert!(!text.contains("no_advertise"), "a leaf opens no leafnode listener");
    assert!(!text.contains("sync_interval"), "nats-server's default unless configured");
    leaf.nats.jetstream.sync_interval = Some(SyncInterval::Always);
    assert!(
        render_config(&leaf, "leaf-eu", Path::new("/tmp/x"), &pw, None).contains("  sync_interval: always\n")
    );
    leaf.nats.jetstream.sync_interval = Some(SyncInterval::Every(std::time::Duration::from_secs(10)));
    assert!(
        render_config(&leaf, "leaf-eu", Path::new("/tmp/x"), &pw, None)
            .contains("  sync_interval: \"10s\"\n")
    );
}

#[test]
fn the_file_holds_hashes_and_a_leaf_finds_its_credentials_in_its_environment() {
    let pw = Secret::new("service-password-0123456789".into());
    let leaf_pw = Secret::new("leaf password/with@signs".into());
    let center = render_config(&Config::default(), "center-1", Path::new("/tmp/x"), &pw, Some(&leaf_pw));
    assert!(!center.contains(pw.expose()) && !center.contains("leaf password"), "{center}");
    let hash_of = |user: &str| {
        let line = center.lines().find(|l| l.contains(&format!("user: \"{user}\""))).unwrap();
        line.split('"').find(|s| s.starts_with("$2a$")).unwrap().to_string()
    };
    // The service's own password is 64 random characters, checked at each of its connections:
    // the least cost. A password a person chose gets cost 10.
    let (service, leaf_hash) = (hash_of(SERVICE_USER), hash_of(LEAF_USER));
    assert!(service.starts_with("$2a$04$") && leaf_hash.starts_with("$2a$10$"), "{center}");
    assert!(bcrypt::verify(pw.expose(), &service).unwrap(), "the hash is of the service's password");
    assert!(bcrypt::verify(leaf_pw.expose(), &leaf_hash).unwrap(), "the hash is of the leaf password");

    let mut leaf = Config::default();
    leaf.service.node_type = NodeType::Leaf;
    leaf.nats.center_url = Some("center-a.example:7422, nats-leaf://center-b.example:7422".into());
    leaf.nats.leaf_password = Some(leaf_pw);
    let text = render_config(&leaf, "leaf-eu", Path::new("/tmp/x"), &pw, None);
    assert!(text.contains("urls: [$PRESENCE_LEAF_REMOTE_0, $PRESENCE_LEAF_REMOTE_1]"), "{text}");
    assert!(!text.contains("leaf%20password") && !text.contains("leaf password"), "{text}");
    let remotes: Vec<(String, String)> =
        leaf_remotes(&leaf).into_iter().map(|(name, url)| (name, url.expose().to_string())).collect();
    assert_eq!(
        remotes,
        [
            (
                "PRESENCE_LEAF_REMOTE_0".into(),
                "nats-leaf://leaf:leaf%20password%2Fwith%40signs@center-a.example:7422".into()
            ),
            (
                "PRESENCE_LEAF_REMOTE_1".into(),
                "nats-leaf://leaf:leaf%20password%2Fwith%40signs@center-b.example:7422".into()
            ),
        ]
    );
    leaf.nats.leaf_password = None;
    assert!(leaf_remotes(&leaf).is_empty(), "nothing to carry without a password");
}
