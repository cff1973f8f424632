//! Presence that follows connections (docs/sessions.md, "Sessions"): real WebSocket clients holding device
//! sessions at real nodes, read and watched from others.

mod bounds;
mod devices;
mod nodes;

use std::time::Duration;

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::helpers::{
    ChaosProxy, ServiceProcess, TestApp, eventually, json_of, leaf_app, leaf_app_with, live::Ws, mint,
};

const SECOND: Duration = Duration::from_secs(1);

/// `user` as `app` shows them to anyone (no token); `{"status": "unknown"}` for a user never
/// seen (404).
async fn read(app: &TestApp, user: &str) -> Value {
    let (status, body) = json_of(app.get(&format!("/api/v2/presence/{user}")).await).await;
    if status == StatusCode::NOT_FOUND {
        return json!({"status": "unknown"});
    }
    assert_eq!(status, StatusCode::OK, "{body}");
    body["data"][user].clone()
}

/// `user` as they see themselves (their own token).
async fn read_own(app: &TestApp, user: &str) -> Value {
    let request = app.http.get(app.url(&format!("/api/v2/presence/{user}"))).bearer_auth(mint(user));
    let (_, body) = json_of(request.send().await.unwrap()).await;
    body["data"][user].clone()
}

async fn wait_for(app: &TestApp, user: &str, what: &str, check: impl Fn(&Value) -> bool) -> Value {
    let what = format!("{user} {what} at {}", app.config.service.node_id);
    eventually(Duration::from_secs(10), &what, || async {
        let shown = read(app, user).await;
        check(&shown).then_some(shown)
    })
    .await
}

/// A subscriber to `user` over a WebSocket, past its snapshot.
async fn watcher(app: &TestApp, user: &str) -> Ws {
    let mut ws = Ws::connect(app).await;
    ws.send(json!({"type": "subscribe", "users": [user]})).await;
    ws.expect("snapshot", Duration::from_secs(5)).await;
    ws
}

/// Every change a subscriber receives within `within`.
async fn changes_within(ws: &mut Ws, within: Duration) -> Vec<Value> {
    let deadline = tokio::time::Instant::now() + within;
    let mut changes = Vec::new();
    while let Some(message) =
        ws.next_within(deadline.saturating_duration_since(tokio::time::Instant::now())).await
    {
        if message["type"] == "changes" {
            changes.extend(message["changes"].as_array().unwrap().iter().cloned());
        }
    }
    changes
}

/// The next change a subscriber receives, within `within`.
async fn next_change(ws: &mut Ws, within: Duration) -> Value {
    loop {
        let message = ws.next_within(within).await.expect("a change arrives");
        if message["type"] == "changes" {
            return message["changes"][0].clone();
        }
    }
}

/// Drops the connection without a close frame, as a crashed client or a lost network does.
fn drop_abruptly(ws: Ws) {
    drop(ws.socket);
}

/// Sessions that end quickly: a grace of a second, a node taken for dead after 5 s.
fn quick(config: &mut presence::config::Config) {
    config.sessions.grace = SECOND;
    config.sessions.node_timeout = 5 * SECOND;
}

/// The leaf `node_id` as a process of its own: a center's leaf, with a short node timeout and
/// grace.
fn leaf_process(dir: &std::path::Path, center_leaf_port: u16, node_id: &str) -> ServiceProcess {
    ServiceProcess::start_leaf(
        dir,
        center_leaf_port,
        node_id,
        "",
        "sessions:\n  grace: 1s\n  node_timeout: 5s\n",
    )
}
