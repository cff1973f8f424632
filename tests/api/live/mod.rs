//! Live presence: the event stream and the WebSocket, over real sockets, against real nodes.

mod metering;
mod sse;
mod websocket;
mod wire;

use std::{
    collections::HashMap,
    time::{Duration, Instant},
};

use chrono::{DateTime, Utc};
use reqwest::StatusCode;
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_tungstenite::tungstenite::Message;

use crate::helpers::{
    ChaosProxy, TestApp, assert_error, eventually, json_of, leaf_app,
    live::{Sse, Ws},
};

const SECOND: Duration = Duration::from_secs(1);
const FIVE: Duration = Duration::from_secs(5);

/// The revision of each change, by user, in the order received: never lower after higher.
fn assert_revisions_only_grow(changes: &[Value]) {
    let mut last: HashMap<String, u64> = HashMap::new();
    for change in changes {
        let user = change["user_id"].as_str().unwrap().to_string();
        let revision = change["revision"].as_u64().unwrap();
        let before = last.insert(user.clone(), revision).unwrap_or(0);
        assert!(revision >= before, "{user}: revision {revision} after {before}: {changes:#?}");
    }
}

/// Waits until `/health` counts `n` open streams (closed ones are forgotten).
async fn streams_open(app: &TestApp, n: u64) {
    let what = format!("{n} streams open");
    eventually(FIVE, &what, || async { (app.health().await["streams"] == n).then_some(()) }).await;
}

fn metric(text: &str, series: &str) -> f64 {
    text.lines()
        .find_map(|l| l.strip_prefix(series).and_then(|v| v.trim().parse().ok()))
        .unwrap_or_else(|| panic!("no {series} in the metrics"))
}

/// Reads changes until one for `user` is among them too.
async fn resumed_or_more(sse: &mut Sse, mut changes: Vec<Value>, user: &str) -> Vec<Value> {
    if !changes.iter().any(|c| c["user_id"] == user) {
        changes.extend(sse.changes_until(FIVE, |c| c["user_id"] == user).await);
    }
    changes
}
