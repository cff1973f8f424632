//! The workload: concurrent clients, each bound to one node, on a few hot users. Writers PUT
//! unique values (and read back at their node), readers make single and multi-user reads, a live
//! client per node follows the hot users' changes. Every operation is recorded as the client saw
//! it; the revisions a write made come from the audit log afterwards (what landed, and where).

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

use super::history::{Kind, Op, Outcome};

/// A node the clients talk to.
#[derive(Clone)]
pub(crate) struct Node {
    pub(crate) name: String,
    /// `http://host:port`.
    pub(crate) url: String,
}

/// The shape of a run.
#[derive(Clone)]
pub(crate) struct Shape {
    pub(crate) users: Vec<String>,
    pub(crate) writers_per_node: usize,
    /// Pause between one client's operations.
    pub(crate) pace: Duration,
    /// A token for a user.
    pub(crate) mint: Arc<dyn Fn(&str) -> String + Send + Sync>,
}

/// The recorder the clients share: times are nanoseconds since it started.
#[derive(Clone)]
pub(crate) struct Recorder {
    started: Instant,
    ops: Arc<Mutex<Vec<Op>>>,
}

impl Recorder {
    pub(crate) fn new() -> Self {
        Self { started: Instant::now(), ops: Arc::default() }
    }

    pub(crate) fn now(&self) -> u64 {
        self.started.elapsed().as_nanos() as u64
    }

    pub(crate) fn record(&self, op: Op) {
        self.ops.lock().expect("recorder lock").push(op);
    }

    pub(crate) fn history(&self) -> Vec<Op> {
        self.ops.lock().expect("recorder lock").clone()
    }
}

/// Runs the clients against `nodes` until `stop`.
pub(crate) async fn run(nodes: &[Node], shape: &Shape, recorder: &Recorder, stop: &CancellationToken) {
    let http = reqwest::Client::builder().timeout(Duration::from_secs(5)).build().unwrap();
    let mut tasks = tokio::task::JoinSet::new();
    let mut client = 0;
    for node in nodes {
        for _ in 0..shape.writers_per_node {
            client += 1;
            let context = (client, node.clone(), shape.clone(), recorder.clone(), http.clone());
            tasks.spawn(writer(context, stop.clone()));
        }
        client += 1;
        let context = (client, node.clone(), shape.clone(), recorder.clone(), http.clone());
        tasks.spawn(reader(context, stop.clone()));
        client += 1;
        let context = (client, node.clone(), shape.clone(), recorder.clone(), http.clone());
        tasks.spawn(follower(context, stop.clone()));
    }
    while tasks.join_next().await.is_some() {}
}

type Context = (usize, Node, Shape, Recorder, reqwest::Client);

fn op(client: usize, node: &Node, kind: Kind, user: &str, invoked_at: u64, returned_at: u64) -> Op {
    Op {
        client,
        node: node.name.clone(),
        kind,
        user: user.to_string(),
        invoked_at,
        returned_at,
        outcome: Outcome::Unknown,
        revision: None,
        value: None,
    }
}

/// PUTs unique values to the hot users, each followed by a read of it at the same node.
async fn writer((client, node, shape, recorder, http): Context, stop: CancellationToken) {
    let mut every = tokio::time::interval(shape.pace);
    for seq in 0.. {
        tokio::select! {
            () = stop.cancelled() => return,
            _ = every.tick() => {}
        }
        let user = &shape.users[(client + seq) % shape.users.len()];
        let value = format!("c{client}-{seq}");
        let invoked = recorder.now();
        let answer = http
            .put(format!("{}/api/v2/presence/{user}", node.url))
            .bearer_auth((shape.mint)(user))
            .json(&json!({"status": "online", "message": value, "ttl": 3600}))
            .send()
            .await;
        let mut write = op(client, &node, Kind::Write, user, invoked, 0);
        write.value = Some(value);
        write.outcome = match answer {
            Ok(r) if r.status() == 200 => Outcome::Ok,
            Ok(r) if r.status() == 504 => Outcome::Unknown,
            Ok(r) => {
                let body = r.text().await.unwrap_or_default();
                if body.contains("may or may not") { Outcome::Unknown } else { Outcome::Failed }
            }
            Err(_) => Outcome::Unknown,
        };
        write.returned_at = recorder.now();
        recorder.record(write);
        read(client, &node, user, (&recorder, &http)).await;
    }
}

/// One single-user read, recorded.
async fn read(client: usize, node: &Node, user: &str, (recorder, http): (&Recorder, &reqwest::Client)) {
    let invoked = recorder.now();
    let answer = http.get(format!("{}/api/v2/presence/{user}", node.url)).send().await;
    let mut read = op(client, node, Kind::Read, user, invoked, 0);
    match answer {
        Ok(r) if r.status() == 404 => read.outcome = Outcome::Absent,
        Ok(r) if r.status() == 200 => {
            let degraded = r.headers().contains_key("x-presence-degraded");
            let body: Value = r.json().await.unwrap_or_default();
            if !degraded {
                read.outcome = Outcome::Ok;
                read.value = body["data"][user]["message"].as_str().map(String::from);
            }
        }
        _ => {}
    }
    read.returned_at = recorder.now();
    recorder.record(read);
}

/// Single and multi-user reads of the hot users, in turn.
async fn reader((client, node, shape, recorder, http): Context, stop: CancellationToken) {
    let mut every = tokio::time::interval(shape.pace);
    for seq in 0.. {
        tokio::select! {
            () = stop.cancelled() => return,
            _ = every.tick() => {}
        }
        if seq % 2 == 0 {
            let user = &shape.users[seq % shape.users.len()];
            read(client, &node, user, (&recorder, &http)).await;
            continue;
        }
        let invoked = recorder.now();
        let url = format!("{}/api/v2/presence?users={}", node.url, shape.users.join(","));
        let answer = http.get(url).send().await;
        let returned = recorder.now();
        let Ok(r) = answer else { continue };
        if r.status() != 200 || r.headers().contains_key("x-presence-degraded") {
            continue;
        }
        let body: Value = r.json().await.unwrap_or_default();
        for user in &shape.users {
            let mut read = op(client, &node, Kind::MultiRead, user, invoked, returned);
            let message = body["data"][user]["message"].as_str();
            read.outcome =
                if body["data"][user]["last_seen"].is_null() { Outcome::Absent } else { Outcome::Ok };
            read.value = message.map(String::from);
            recorder.record(read);
        }
    }
}

/// Follows the hot users' changes on an event stream, reopening it when it ends.
async fn follower((client, node, shape, recorder, _): Context, stop: CancellationToken) {
    let url = format!("{}/api/v2/presence/stream?users={}", node.url, shape.users.join(","));
    let streaming = reqwest::Client::builder().connect_timeout(Duration::from_secs(2)).build().unwrap();
    while !stop.is_cancelled() {
        let Ok(mut response) = streaming.get(&url).send().await else { continue };
        let mut buffer = String::new();
        loop {
            let chunk = tokio::select! {
                () = stop.cancelled() => return,
                chunk = response.chunk() => chunk,
            };
            let Ok(Some(chunk)) = chunk else { break };
            buffer.push_str(&String::from_utf8_lossy(&chunk));
            while let Some(at) = buffer.find("\n\n") {
                let block: String = buffer.drain(..at + 2).collect();
                let data: String = block.lines().filter_map(|l| l.strip_prefix("data: ")).collect();
                let Ok(event) = serde_json::from_str::<Value>(&data) else { continue };
                let at = recorder.now();
                for change in event["changes"].as_array().into_iter().flatten() {
                    let user = change["user_id"].as_str().unwrap_or_default();
                    let mut seen = op(client, &node, Kind::Live, user, at, at);
                    seen.outcome = Outcome::Ok;
                    seen.revision = change["revision"].as_u64();
                    seen.value = change["presence"]["message"].as_str().map(String::from);
                    recorder.record(seen);
                }
            }
        }
    }
}

/// Gives every write and read the revision its value was written at, from what the audit log
/// holds of the hot users (a value's one update event): the ground truth of what landed.
pub(crate) async fn revisions(js: &async_nats::jetstream::Context, users: &[String]) -> HashMap<String, u64> {
    use async_nats::jetstream::consumer::{DeliverPolicy, push::OrderedConfig};
    use futures::StreamExt;
    // One ordered consumer over the hot users' update events, read to where the log stood. (A
    // cluster may still be electing leaders after its last fault: asked until it answers.)
    let config = OrderedConfig {
        deliver_subject: js.client().new_inbox(),
        filter_subjects: users.iter().map(|user| format!("presence.update.{user}")).collect(),
        deliver_policy: DeliverPolicy::All,
        ..Default::default()
    };
    let deadline = Instant::now() + Duration::from_secs(120);
    let (consumer, pending) = loop {
        let attempt = async {
            let log = js.get_stream("PRESENCE_EVENTS").await.ok()?;
            let mut consumer = log.create_consumer(config.clone()).await.ok()?;
            let pending = consumer.info().await.ok()?.num_pending;
            Some((consumer, pending))
        };
        if let Some(ready) = attempt.await {
            break ready;
        }
        assert!(Instant::now() < deadline, "the audit log does not answer");
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    let mut messages = consumer.messages().await.expect("the audit log's messages");
    let mut written = HashMap::new();
    for _ in 0..pending {
        let message = tokio::time::timeout(Duration::from_secs(30), messages.next())
            .await
            .expect("the audit log keeps coming")
            .expect("the audit log goes on")
            .expect("an audit-log message");
        let event: Value = serde_json::from_slice(&message.payload).unwrap_or_default();
        if let (Some(value), Some(revision)) =
            (event["presence"]["message"].as_str(), event["revision"].as_u64())
        {
            written.insert(value.to_string(), revision);
        }
    }
    written
}

/// Fills in the revisions of writes and reads from `written` and, for a value the audit log does
/// not hold (a write whose outcome was unknown, that landed and was overwritten before its event
/// was stored), from the live changes that showed it with its revision. A live change and a
/// final read carry their own.
pub(crate) fn resolve(history: &mut [Op], written: &HashMap<String, u64>) {
    let mut known = written.clone();
    for op in history.iter().filter(|op| op.kind == Kind::Live) {
        if let (Some(value), Some(revision)) = (&op.value, op.revision) {
            known.entry(value.clone()).or_insert(revision);
        }
    }
    for op in history.iter_mut().filter(|op| !matches!(op.kind, Kind::Live | Kind::Final)) {
        if let Some(value) = &op.value {
            // A write answered 200 counts only with what the audit log holds (its proof of landing).
            let source = if op.kind == Kind::Write && op.outcome == Outcome::Ok { written } else { &known };
            op.revision = source.get(value).copied();
        }
    }
}
