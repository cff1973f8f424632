//! Encryption at rest: an encrypted store holds no plaintext presence; a start with a wrong key,
//! or none, stops before anything is created and loses nothing; keys rotate with `previous_key`;
//! a plaintext store is converted on its first encrypted start.

use std::path::{Path, PathBuf};

use presence::config::{Cipher, Encryption, Secret};
use reqwest::StatusCode;
use serde_json::json;

use crate::helpers::{TestApp, json_of, test_config};

const KEY: &str = "first-encryption-key-of-32-bytes-or-more";
const NEXT_KEY: &str = "second-encryption-key-of-32-bytes-or-more";
const USER: &str = "user-ines-5b2c";
const MARKER: &str = "MARKER-plaintext-7f3a";

fn encryption(key: &str, previous: Option<&str>) -> Option<Encryption> {
    Some(Encryption {
        cipher: Cipher::Chachapoly,
        key: Secret::new(key.into()),
        previous_key: previous.map(|p| Secret::new(p.into())),
    })
}

async fn node(store: &Path, encryption: Option<Encryption>) -> TestApp {
    let store = store.to_path_buf();
    TestApp::spawn_with(move |c| {
        c.nats.data_dir = store;
        c.nats.jetstream.encryption = encryption;
    })
    .await
}

/// The start-up error of a node on `store` with `encryption`.
async fn refused(store: &Path, encryption: Option<Encryption>) -> String {
    let dir = tempfile::tempdir().unwrap();
    let mut config = test_config(dir.path());
    config.nats.data_dir = store.to_path_buf();
    config.nats.jetstream.encryption = encryption;
    match presence::app::Application::build(config).await {
        Ok(_) => panic!("a node started on a store it could not read"),
        Err(e) => format!("{e:#}"),
    }
}

/// Every file under `dir`, with its size.
fn files(dir: &Path) -> Vec<(PathBuf, u64)> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap().filter_map(Result::ok) {
        let path = entry.path();
        if path.is_dir() {
            out.extend(files(&path));
        } else {
            out.push((path.clone(), entry.metadata().unwrap().len()));
        }
    }
    out.sort();
    out
}

fn store_contains(store: &Path, needle: &str) -> bool {
    files(&store.join("jetstream")).iter().any(|(path, _)| {
        let bytes = std::fs::read(path).unwrap();
        bytes.windows(needle.len()).any(|w| w == needle.as_bytes())
    })
}

async fn reads_busy(app: &TestApp) {
    let (status, body) = json_of(app.read(USER).await).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["data"][USER]["message"], MARKER, "{body}");
}

#[tokio::test]
async fn an_encrypted_store_holds_no_plaintext_and_a_wrong_key_loses_nothing() {
    let store = tempfile::tempdir().unwrap();
    let app = node(store.path(), encryption(KEY, None)).await;
    app.set(USER, json!({"status": "busy", "message": MARKER})).await;
    app.stop().await;
    assert!(!store_contains(store.path(), MARKER), "a message in plaintext on disk");
    assert!(!store_contains(store.path(), USER), "a user id in plaintext on disk");
    let conf = std::fs::read_to_string(store.path().join("nats-server.conf")).unwrap();
    assert!(
        !conf.contains(KEY) && conf.contains("cipher: chachapoly"),
        "the key stays out of the file:\n{conf}"
    );

    let before = files(&store.path().join("jetstream"));
    for (what, wrong) in [("a wrong key", encryption(NEXT_KEY, None)), ("no key", None)] {
        let error = refused(store.path(), wrong).await;
        assert!(error.contains("did not load") && error.contains("KV_presence"), "{what}: {error}");
        assert!(
            error.contains("nats.jetstream.encryption.key"),
            "{what}: the error names the cause: {error}"
        );
        assert_eq!(files(&store.path().join("jetstream")), before, "{what}: the store was touched");
    }
    let app = node(store.path(), encryption(KEY, None)).await;
    reads_busy(&app).await;
    app.stop().await;
}

#[tokio::test]
async fn keys_rotate_and_a_plaintext_store_is_converted() {
    let store = tempfile::tempdir().unwrap();
    let app = node(store.path(), None).await;
    app.set(USER, json!({"status": "busy", "message": MARKER})).await;
    app.stop().await;
    assert!(
        store_contains(store.path(), MARKER),
        "a plaintext store shows the message (the check can see it)"
    );

    let app = node(store.path(), encryption(KEY, None)).await;
    reads_busy(&app).await;
    app.stop().await;
    assert!(!store_contains(store.path(), MARKER), "the first encrypted start converts the store");

    let app = node(store.path(), encryption(NEXT_KEY, Some(KEY))).await;
    reads_busy(&app).await;
    app.stop().await;
    let app = node(store.path(), encryption(NEXT_KEY, None)).await;
    reads_busy(&app).await;
    app.stop().await;
    let error = refused(store.path(), encryption(KEY, None)).await;
    assert!(error.contains("did not load"), "the old key no longer opens the store: {error}");
}
