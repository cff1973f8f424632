//! Rooms: members entering and leaving one room they all watch, a large room churning across
//! two nodes, and typing across nodes. Every session is a real WebSocket with `hello`; the nodes
//! run with `rooms.open` (any token joins).

use std::collections::HashMap;

use futures::{SinkExt, StreamExt};
use tokio::sync::mpsc::{UnboundedSender, unbounded_channel};
use tokio_tungstenite::tungstenite::Message;

use super::*;

/// What a member's connection received: a room message's (user, device) entries by kind, and
/// its typing list, at the moment it arrived.
pub(crate) struct Received {
    pub(crate) at: Instant,
    pub(crate) reader: usize,
    /// The users a snapshot (`joined`, `room_snapshot`) lists.
    pub(crate) members: Vec<String>,
    pub(crate) joins: Vec<String>,
    pub(crate) leaves: Vec<String>,
    pub(crate) typing: Option<Vec<String>>,
}

fn users_of(value: &serde_json::Value, group: &str) -> Vec<String> {
    value[group].as_object().map(|g| g.keys().cloned().collect()).unwrap_or_default()
}

/// A session at `authority` whose incoming room messages go to `seen` (as reader `reader`) and
/// that sends what arrives on the returned channel (`null`: a close frame).
pub(crate) async fn member(
    authority: &str,
    token: &str,
    reader: usize,
    seen: UnboundedSender<Received>,
) -> UnboundedSender<serde_json::Value> {
    let (socket, _) = open_session(authority, token, "bench").await;
    let (mut sink, mut stream) = socket.split();
    let (tx, mut rx) = unbounded_channel::<serde_json::Value>();
    tokio::spawn(async move {
        while let Some(message) = rx.recv().await {
            if message.is_null() {
                let _ = sink.close().await; // a close frame: the session ends at once
                return;
            }
            if sink.send(Message::text(message.to_string())).await.is_err() {
                return;
            }
        }
    });
    tokio::spawn(async move {
        while let Some(Ok(message)) = stream.next().await {
            let Message::Text(text) = message else { continue };
            let at = Instant::now();
            let value: serde_json::Value = serde_json::from_str(&text).unwrap();
            let kind = value["type"].as_str().unwrap_or_default();
            if !["joined", "room", "left", "room_snapshot"].contains(&kind) {
                continue;
            }
            let typing = value["typing"]
                .as_array()
                .map(|t| t.iter().filter_map(|u| u.as_str().map(String::from)).collect());
            let received = Received {
                at,
                reader,
                members: users_of(&value, "members"),
                joins: users_of(&value, "joins"),
                leaves: users_of(&value, "leaves"),
                typing,
            };
            if seen.send(received).is_err() {
                return;
            }
        }
    });
    tx
}

/// The records a node wrote for its sessions so far (`presence_session_writes_total`).
pub(crate) async fn session_writes(authority: &str) -> f64 {
    let text = reqwest::get(format!("http://{authority}/metrics")).await.unwrap().text().await.unwrap();
    let series = r#"presence_session_writes_total{outcome="written"}"#;
    text.lines().find_map(|l| l.strip_prefix(series)?.trim().parse().ok()).unwrap_or(0.0)
}

pub(crate) fn percentiles(hist: &Histogram<u64>) -> (f64, f64, f64) {
    let ms = |q| hist.value_at_quantile(q) as f64 / 1000.0;
    (ms(0.5), ms(0.99), hist.max() as f64 / 1000.0)
}

/// `rooms-enter --url URL --tokens FILE --members N --spread-ms MS`: N members enter one room
/// within MS, each watching it (a member receives the room's changes), then leave within MS.
/// Counts every room message the node sends them (Ably counts 200 × 201 × 2 = 80,400 for 200
/// members without batching) and the delay from each join (leave) sent to its arrival at each
/// member that was in the room.
pub(crate) async fn rooms_enter(args: &[String]) {
    let authority = arg(args, "--url").expect("--url").trim_start_matches("http://").to_string();
    let tokens = read_tokens(&arg(args, "--tokens").expect("--tokens FILE"));
    let n = num(args, "--members", 200) as usize;
    let spread = Duration::from_millis(num(args, "--spread-ms", 1000));
    let (seen_tx, mut seen_rx) = unbounded_channel();
    let mut members = Vec::new();
    for (i, (_, token)) in tokens.iter().take(n).enumerate() {
        members.push(member(&authority, token, i, seen_tx.clone()).await);
    }
    let users: Vec<&str> = tokens.iter().take(n).map(|(u, _)| u.as_str()).collect();
    let room = format!("bench-{}", rand::random::<u32>());
    let mut sent: HashMap<(String, bool), Instant> = HashMap::new();
    let phase = |join: bool| {
        let (members, users, room) = (&members, &users, &room);
        async move {
            let mut at = HashMap::new();
            let started = Instant::now();
            for (i, member) in members.iter().enumerate() {
                tokio::time::sleep_until((started + spread.mul_f64(i as f64 / n as f64)).into()).await;
                let message = match join {
                    true => json!({"type": "join", "room": room, "meta": {"n": i}}),
                    false => json!({"type": "leave", "room": room}),
                };
                at.insert((users[i].to_string(), join), Instant::now());
                member.send(message).unwrap();
            }
            at
        }
    };
    sent.extend(phase(true).await);
    tokio::time::sleep(Duration::from_secs(2)).await; // every join delivered
    sent.extend(phase(false).await);
    tokio::time::sleep(Duration::from_secs(2)).await;
    let mut received = Vec::new();
    while let Ok(r) = seen_rx.try_recv() {
        received.push(r);
    }
    // Which members were in the room when each event happened: those whose join went before it
    // and whose leave did not.
    // (A member that leaves within a window of a change may leave before the change's batch
    // goes out: it is counted only if it stayed 100 ms more.)
    let in_room = |reader: usize, at: Instant| {
        let user = users[reader].to_string();
        sent[&(user.clone(), true)] <= at && sent[&(user, false)] > at + Duration::from_millis(100)
    };
    let mut hist = Histogram::<u64>::new(3).unwrap();
    let (mut expected, mut delivered) = (0u64, 0u64);
    for ((user, join), at) in &sent {
        for (reader, name) in users.iter().enumerate() {
            if name == user || !in_room(reader, *at) {
                continue;
            }
            expected += 1;
            let arrival = received.iter().filter(|r| r.reader == reader && r.at >= *at).find(|r| {
                (if *join { &r.joins } else { &r.leaves }).contains(user)
                    || (*join && r.members.contains(user))
            });
            if let Some(r) = arrival {
                delivered += 1;
                hist.record((r.at.duration_since(*at).as_micros() as u64).max(1)).unwrap();
            }
        }
    }
    let messages = received.len();
    // Closed cleanly: the sessions end now, not after the grace during the next phase.
    for member in &members {
        let _ = member.send(serde_json::Value::Null);
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    let (p50, p99, max) = percentiles(&hist);
    let ably = 2 * n * (n + 1);
    println!(
        "{}",
        json!({"what": "rooms_enter", "members": n, "messages": messages, "unbatched": ably,
               "share_pct": (messages as f64 * 100.0 / ably as f64 * 100.0).round() / 100.0,
               "expected": expected, "delivered": delivered,
               "p50_ms": p50, "p99_ms": p99, "max_ms": max, "rps": messages})
    );
    std::process::exit(0);
}

/// `rooms-churn --url A --other-url B --tokens FILE --members N --rate R --seconds S [--pid-a P
/// --pid-b P]`: N members in one room, half connected at each node, 1,000 more connected but
/// outside; then R joins and R leaves per second (at both nodes) for S seconds, while a watcher
/// at each node follows the room: the delay from each join or leave sent at one node until the
/// other node's watcher receives it.
pub(crate) async fn rooms_churn(args: &[String]) {
    let strip = |s: String| s.trim_start_matches("http://").to_string();
    let nodes =
        [strip(arg(args, "--url").expect("--url")), strip(arg(args, "--other-url").expect("--other-url"))];
    let tokens = read_tokens(&arg(args, "--tokens").expect("--tokens FILE"));
    let n = num(args, "--members", 10_000) as usize;
    let rate = num(args, "--rate", 500);
    let seconds = num(args, "--seconds", 10);
    let spare = 1000;
    let room = format!("big-{}", rand::random::<u32>());
    // The watchers: one per node (readers 0 and 1); members' own messages are not read.
    let (seen_tx, mut seen_rx) = unbounded_channel();
    let mut watchers = Vec::new();
    for (i, node) in nodes.iter().enumerate() {
        let watcher = member(node, &tokens[i].1, i, seen_tx.clone()).await;
        watcher.send(json!({"type": "watch_room", "room": room})).unwrap();
        watchers.push(watcher);
    }
    let (quiet_tx, _quiet_rx) = unbounded_channel();
    let pool = &tokens[2..2 + n + spare];
    let gate = Arc::new(tokio::sync::Semaphore::new(256));
    let mut opening = tokio::task::JoinSet::new();
    for (i, (_, token)) in pool.iter().enumerate() {
        let (node, token, gate, quiet) =
            (nodes[i % 2].clone(), token.clone(), gate.clone(), quiet_tx.clone());
        opening.spawn(async move {
            let _permit = gate.acquire_owned().await.unwrap();
            (i, member(&node, &token, usize::MAX, quiet).await)
        });
    }
    let mut sessions: Vec<Option<UnboundedSender<serde_json::Value>>> = vec![None; pool.len()];
    while let Some(Ok((i, tx))) = opening.join_next().await {
        sessions[i] = Some(tx);
    }
    let sessions: Vec<UnboundedSender<serde_json::Value>> =
        sessions.into_iter().map(Option::unwrap).collect();
    // A moment for the caller to measure the nodes with every session open and no member yet.
    println!("{}", json!({"what": "rooms_sessions_open", "sessions": sessions.len()}));
    tokio::time::sleep(Duration::from_secs(5)).await;
    let opened = Instant::now();
    // Members of a large room follow its count, not every change (`"members": false`): the
    // fan-out of a change to 10,000 members is what the count spares.
    for s in sessions.iter().take(n) {
        s.send(json!({"type": "join", "room": room, "members": false})).unwrap();
        tokio::time::sleep(Duration::from_micros(200)).await; // 5,000 joins a second
    }
    tokio::time::sleep(Duration::from_secs(5)).await; // every join written and seen
    println!("{}", json!({"what": "rooms_filled", "members": n, "fill_s": opened.elapsed().as_secs_f64()}));
    while seen_rx.try_recv().is_ok() {}

    let mut inside: std::collections::VecDeque<usize> = (0..n).collect();
    let mut outside: std::collections::VecDeque<usize> = (n..n + spare).collect();
    let mut sent: Vec<(usize, bool, Instant)> = Vec::new();
    let per_tick = (rate / 100).max(1);
    let mut ticker = tokio::time::interval(Duration::from_millis(10));
    let started = Instant::now();
    while started.elapsed() < Duration::from_secs(seconds) {
        ticker.tick().await;
        for _ in 0..per_tick {
            let leaving = inside.pop_front().unwrap();
            sessions[leaving].send(json!({"type": "leave", "room": room})).unwrap();
            sent.push((leaving, false, Instant::now()));
            outside.push_back(leaving);
            let joining = outside.pop_front().unwrap();
            sessions[joining].send(json!({"type": "join", "room": room, "members": false})).unwrap();
            sent.push((joining, true, Instant::now()));
            inside.push_back(joining);
        }
    }
    let churned = started.elapsed().as_secs_f64();
    // For the caller: the churn is over (its CPU and writes are counted up to here).
    println!("{}", json!({"what": "rooms_churn_done", "seconds": churned}));
    tokio::time::sleep(Duration::from_secs(3)).await;
    let mut received: Vec<Received> = Vec::new();
    while let Ok(r) = seen_rx.try_recv() {
        received.push(r);
    }
    // Each change, sent at node i % 2, as the other node's watcher first shows it.
    let mut by_user: HashMap<(usize, &str, bool), Vec<Instant>> = HashMap::new();
    for r in &received {
        for u in &r.joins {
            by_user.entry((r.reader, u.as_str(), true)).or_default().push(r.at);
        }
        for u in &r.leaves {
            by_user.entry((r.reader, u.as_str(), false)).or_default().push(r.at);
        }
    }
    let mut hist = Histogram::<u64>::new(3).unwrap();
    let mut unseen = 0u64;
    for (i, join, at) in &sent {
        let other = 1 - (i % 2);
        let shown = by_user.get(&(other, pool[*i].0.as_str(), *join));
        match shown.and_then(|times| times.iter().find(|t| *t >= at)) {
            Some(t) => hist.record((t.duration_since(*at).as_micros() as u64).max(1)).unwrap(),
            None => unseen += 1,
        }
    }
    let (p50, p99, max) = percentiles(&hist);
    println!(
        "{}",
        json!({"what": "rooms_churn", "members": n, "rate": rate, "changes": sent.len(),
               "changes_per_s": (sent.len() as f64 / churned).round(), "unseen": unseen,
               "messages": received.len(), "p50_ms": p50, "p99_ms": p99, "max_ms": max,
               "rps": (sent.len() as f64 / churned).round()})
    );
    std::process::exit(0);
}
