//! The presence lifecycle: expiry transitions in the KV with exactly one expire event, update
//! events and the audit log, history, erasure and retention.

mod erasure;
mod events;
mod expiry;
mod repair;

use std::time::Duration;

use chrono::{DateTime, Utc};
use futures::StreamExt;
use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::helpers::{NatsServer, TestApp, assert_error, bucket, eventually, external_app, json_of, mint};

fn nats_url(app: &TestApp) -> String {
    app.nats_url()
}

async fn subscribe(url: &str, subject: &str) -> (async_nats::Client, async_nats::Subscriber) {
    let client = crate::helpers::nats_connect(url).await;
    let sub = client.subscribe(subject.to_string()).await.unwrap();
    client.flush().await.unwrap();
    (client, sub)
}

/// Every message that arrives within `quiet` of the previous one (or of the start).
async fn drain(sub: &mut async_nats::Subscriber, quiet: Duration) -> Vec<Value> {
    let mut out = Vec::new();
    while let Ok(Some(m)) = tokio::time::timeout(quiet, sub.next()).await {
        out.push(serde_json::from_slice(&m.payload).unwrap());
    }
    out
}

async fn stored(url: &str, user: &str) -> Option<Value> {
    let kv = bucket(url).await;
    kv.get(format!("user.{user}")).await.unwrap().map(|b| serde_json::from_slice(&b).unwrap())
}

fn time(v: &Value) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(v.as_str().unwrap()).unwrap().with_timezone(&Utc)
}
