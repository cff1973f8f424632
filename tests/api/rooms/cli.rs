//! The command line's rooms: `presence token --rooms` mints a claim the node honours, and
//! `presence watch --room` prints a room's members and changes.

use tokio::io::AsyncBufReadExt;

use super::*;
use crate::helpers::SECRET;

#[tokio::test]
async fn presence_token_rooms_and_presence_watch_room() {
    let app = TestApp::spawn().await;
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("presence.yaml");
    std::fs::write(&config, format!("auth:\n  jwt_secret: {SECRET}\n")).unwrap();
    let minted = std::process::Command::new(env!("CARGO_BIN_EXE_presence"))
        .args(["token", "--user", "ann", "--rooms", "doc-*,team-42", "--config"])
        .arg(&config)
        .output()
        .unwrap();
    assert!(minted.status.success(), "{}", String::from_utf8_lossy(&minted.stderr));
    let token = String::from_utf8(minted.stdout).unwrap().trim().to_string();
    let bad = std::process::Command::new(env!("CARGO_BIN_EXE_presence"))
        .args(["token", "--user", "ann", "--rooms", "doc.*", "--config"])
        .arg(&config)
        .output()
        .unwrap();
    assert!(!bad.status.success() && String::from_utf8_lossy(&bad.stderr).contains("--rooms"));

    // The watcher reads the room with the token from the environment (never in a URL).
    let mut watch = tokio::process::Command::new(env!("CARGO_BIN_EXE_presence"))
        .args(["watch", "--url", &format!("http://{}", app.addr), "--room", "doc-1"])
        .env("PRESENCE_TOKEN", &token)
        .stdout(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut lines = tokio::io::BufReader::new(watch.stdout.take().unwrap()).lines();
    let mut next =
        async || tokio::time::timeout(5 * SECOND, lines.next_line()).await.unwrap().unwrap().unwrap();
    assert!(next().await.starts_with("USER              DEVICE            KIND     EVENT"));
    assert!(next().await.ends_with("doc-1: 0 users on 0 devices"));

    // The minted token joins: its claim is honoured.
    let mut ws = Ws::connect(&app).await;
    ws.send(json!({"type": "hello", "token": token, "device": "tab", "kind": "web"})).await;
    ws.expect("welcome", 5 * SECOND).await;
    join(&mut ws, "team-42", json!({})).await;
    join(&mut ws, "doc-1", json!({"x": 1})).await;
    assert_eq!(next().await, r#"ann               tab               web      joined   {"x":1}"#);
    assert!(next().await.ends_with("doc-1: 1 users on 1 devices"));
    ws.send(json!({"type": "leave", "room": "doc-1"})).await;
    assert!(next().await.contains("left"));
    watch.kill().await.unwrap();

    // Without the token, a room that is not public is refused, and the command says so.
    let refused = tokio::process::Command::new(env!("CARGO_BIN_EXE_presence"))
        .args(["watch", "--url", &format!("http://{}", app.addr), "--room", "doc-1"])
        .env_remove("PRESENCE_TOKEN")
        .output()
        .await
        .unwrap();
    assert!(!refused.status.success());
    assert!(
        String::from_utf8_lossy(&refused.stderr).contains("403"),
        "{}",
        String::from_utf8_lossy(&refused.stderr)
    );
    app.stop().await;
}
