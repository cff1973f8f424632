//! Encryption at rest: an encrypted store holds no plaintext presence; a start with a wrong key,
//! or none, stops before anything is created and loses nothing; keys rotate with `previous_key`;
//! a plaintext store is converted on its first encrypted start.

use std::{
    path::{Path, PathBuf},
    time::Duration,
};

use presence::config::{Cipher, Encryption, Secret};
use reqwest::StatusCode;
use serde_json::json;

use crate::helpers::{
    OPERATOR, OPERATOR_PASSWORD, ServiceProcess, TestApp, eventually, json_of, test_config,
};

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

/// Whether any file of the data directory (the store, and anything the node keeps beside it such
/// as its cache's snapshot) holds `needle`.
fn store_contains(store: &Path, needle: &str) -> bool {
    files(store).iter().any(|(path, _)| {
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

/// Whether the leaf's copy of the bucket (a mirror in its own JetStream) holds a record yet.
async fn copy_holds_a_record(leaf_nats_url: &str) -> bool {
    let js = async_nats::jetstream::new(crate::helpers::nats_connect(leaf_nats_url).await);
    match js.get_stream("KV_presence").await {
        Ok(mut copy) => copy.info().await.is_ok_and(|info| info.state.messages >= 1),
        Err(_) => false,
    }
}

/// A leaf keeps a copy of the bucket on its own disk: with `nats.jetstream.encryption` that copy
/// is as unreadable as the center's store; without it, the same check finds the write, and that
/// leaf (a process of its own, to read its log) warns that its center encrypts and it does not.
#[tokio::test]
async fn a_leafs_copy_of_the_bucket_is_encrypted_like_the_centers_store() {
    let (center_store, sealed_store, open_dir) =
        (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let center = node(center_store.path(), encryption(KEY, None)).await;
    let port = center.config.nats.leaf_port;
    let sealed_dir = sealed_store.path().to_path_buf();
    let sealed = crate::helpers::leaf_app_with(port, "leaf-sealed", "eu-west", move |c| {
        c.nats.data_dir = sealed_dir;
        c.nats.jetstream.encryption = encryption(NEXT_KEY, None);
    })
    .await;
    let operator = format!("  operators: [{{user: {OPERATOR}, password: {OPERATOR_PASSWORD}}}]\n");
    let mut open = ServiceProcess::start_leaf(open_dir.path(), port, "leaf-open", &operator, "");
    open.wait_healthy().await;
    center.set(USER, json!({"status": "busy", "message": MARKER})).await;
    let open_nats = format!("nats://{OPERATOR}:{OPERATOR_PASSWORD}@127.0.0.1:{}", open.nats_port);
    for leaf in [sealed.nats_url(), open_nats] {
        eventually(Duration::from_secs(30), "the leaf's copy holds the write", || async {
            copy_holds_a_record(&leaf).await.then_some(())
        })
        .await;
    }
    let open_store = open_dir.path().join("nats-data");
    assert!(store_contains(&open_store, MARKER), "an unencrypted copy shows it (the check can see it)");
    for store in [center_store.path(), sealed_store.path()] {
        assert!(!store_contains(store, MARKER), "a message in plaintext in {}", store.display());
        assert!(!store_contains(store, USER), "a user id in plaintext in {}", store.display());
    }
    eventually(Duration::from_secs(10), "the plaintext leaf warns", || async {
        let log = open.log();
        log.lines()
            .find(|l| {
                l.contains("WARN")
                    && l.contains("the center encrypts its store at rest and this leaf does not")
            })
            .map(str::to_string)
    })
    .await;
    drop(open);
    for app in [sealed, center] {
        app.stop().await;
    }
}
