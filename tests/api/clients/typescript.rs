//! The TypeScript client (`clients/typescript`, built by `scripts/test`) in Node 20 against real
//! nodes: its view rules (`node --test`), and a scenario this test drives: watches and a room at
//! a leaf, the leaf killed (`kill -9` of service and NATS) under it, a write made meanwhile, the
//! failover to the center unseen by another watcher, a member joining, the center replaced by an
//! empty one (the status written again), a token refused on reconnect.

use std::{
    path::{Path, PathBuf},
    process::Stdio,
};

use serde_json::json;
use tokio::{
    io::{AsyncBufReadExt, AsyncWriteExt, BufReader, Lines},
    process::{ChildStdout, Command},
};

use crate::{
    helpers::{ServiceProcess, TestApp, kill9, live::Ws, mint_rooms},
    rooms::{join, member},
};

fn client_dir() -> PathBuf {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("clients/typescript");
    assert!(
        dir.join("dist/index.js").exists(),
        "run the tests with scripts/test: it builds the TypeScript client"
    );
    dir
}

#[tokio::test]
async fn the_view_rules_hold_in_node() {
    let out = Command::new("node")
        .args(["--test", "test/view.test.mjs"])
        .current_dir(client_dir())
        .output()
        .await
        .unwrap();
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The scenario's next `step NAME`, within 30 s.
async fn step(lines: &mut Lines<BufReader<ChildStdout>>, name: &str) {
    let wanted = format!("step {name}");
    let found = tokio::time::timeout(std::time::Duration::from_secs(30), async {
        while let Some(line) = lines.next_line().await.unwrap() {
            if line == wanted {
                return true;
            }
        }
        false
    });
    assert!(found.await.unwrap_or(false), "the scenario did not reach `{name}`");
}

#[tokio::test]
async fn in_node_the_client_fails_over_keeps_its_room_and_stops_on_a_refused_token() {
    // The first start binds a port the OS chose; the restarts take the same address.
    let center = TestApp::spawn().await;
    let port = center.addr.port();
    let dir = tempfile::tempdir().unwrap();
    let mut leaf = ServiceProcess::start_leaf(dir.path(), center.config.nats.leaf_port, "leaf-t", "", "");
    leaf.wait_healthy().await;
    center.set("zed", json!({"status": "online"})).await;
    let mut node = Command::new("node")
        .arg("test/scenario.mjs")
        .current_dir(client_dir())
        .env("LEAF_URL", leaf.url(""))
        .env("CENTER_URL", center.url(""))
        .env("TOKEN", mint_rooms("kay", &["doc-*"]))
        .env("EXPIRED_TOKEN", super::rust::expired_token("kay"))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut orders = node.stdin.take().unwrap();
    let mut lines = BufReader::new(node.stdout.take().unwrap()).lines();
    step(&mut lines, "ready").await;
    // Another client watches kay at the center.
    let mut other = Ws::connect(&center).await;
    other.send(json!({"type": "subscribe", "users": ["kay", "marker"]})).await;
    let nats = leaf.nats_pid().expect("the leaf's nats-server pid");
    leaf.kill9();
    kill9(nats);
    center.set("zed", json!({"status": "busy"})).await;
    orders.write_all(b"killed\n").await.unwrap();
    step(&mut lines, "reconnected").await;
    // Nobody saw kay go: a later change at the center arrives with nothing of kay's going before it.
    center.set("marker", json!({"status": "online"})).await;
    loop {
        let message = other.next_within(std::time::Duration::from_secs(10)).await.expect("the marker");
        let changes = message["changes"].as_array().cloned().unwrap_or_default();
        for change in &changes {
            let status = &change["presence"]["status"];
            assert!(change["user_id"] != "kay" || status == "busy", "kay was seen going: {change}");
        }
        if changes.iter().any(|c| c["user_id"] == "marker") {
            break;
        }
    }
    let mut lee = member(&center, "lee", "tab", &["doc-*"]).await;
    join(&mut lee, "doc-1", json!({"role": "guest"})).await;
    orders.write_all(b"joined\n").await.unwrap();
    step(&mut lines, "seen").await;
    drop((lee, other));
    // The center replaced by one with nothing stored, twice: the status written again; then, with
    // an expired token, the reconnect refused.
    center.stop().await;
    let center = TestApp::spawn_with(|c| c.service.port = port).await;
    orders.write_all(b"restarted\n").await.unwrap();
    step(&mut lines, "reasserted").await;
    step(&mut lines, "expiring").await;
    center.stop().await;
    let center = TestApp::spawn_with(|c| c.service.port = port).await;
    orders.write_all(b"restarted\n").await.unwrap();
    step(&mut lines, "done").await;
    assert!(node.wait().await.unwrap().success());
    center.stop().await;
}
