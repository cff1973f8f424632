//! Typing across nodes: a member at one node types, a member at another reads it.

use tokio::sync::mpsc::unbounded_channel;

use super::*;
use crate::rooms::{Received, member, percentiles, session_writes};

/// `rooms-typing --url A --other-url B --tokens FILE --count N`: a member at A types in a room
/// (a start, then a stop, N times each, 250 ms apart) while a member at B is in it: the delay
/// from each signal sent to B's message showing it.
pub(crate) async fn rooms_typing(args: &[String]) {
    let strip = |s: String| s.trim_start_matches("http://").to_string();
    let (a, b) =
        (strip(arg(args, "--url").expect("--url")), strip(arg(args, "--other-url").expect("--other-url")));
    let tokens = read_tokens(&arg(args, "--tokens").expect("--tokens FILE"));
    let count = num(args, "--count", 500);
    let room = format!("chat-{}", rand::random::<u32>());
    let (seen_tx, mut seen_rx) = unbounded_channel();
    let (quiet_tx, _quiet_rx) = unbounded_channel();
    let typist = member(&a, &tokens[0].1, 0, quiet_tx).await;
    let reader = member(&b, &tokens[1].1, 1, seen_tx).await;
    typist.send(json!({"type": "join", "room": room})).unwrap();
    reader.send(json!({"type": "join", "room": room})).unwrap();
    // Both in, at both nodes: the reader has heard of the typist.
    loop {
        let r = tokio::time::timeout(Duration::from_secs(10), seen_rx.recv())
            .await
            .expect("the typist arrives")
            .unwrap();
        if r.joins.contains(&tokens[0].0) || r.members.contains(&tokens[0].0) {
            break;
        }
    }
    // The joins written (each session's write interval passed): what follows writes nothing.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let writes_before = session_writes(&a).await + session_writes(&b).await;
    let mut hist = Histogram::<u64>::new(3).unwrap();
    let mut lost = 0u64;
    for i in 0..count * 2 {
        let active = i % 2 == 0;
        let sent = Instant::now();
        typist.send(json!({"type": "typing", "room": room, "active": active})).unwrap();
        let wanted = |r: &Received| r.typing.as_ref().is_some_and(|t| t.contains(&tokens[0].0) == active);
        let deadline = sent + Duration::from_secs(2);
        loop {
            match tokio::time::timeout_at(deadline.into(), seen_rx.recv()).await {
                Ok(Some(r)) if r.at >= sent && wanted(&r) => {
                    hist.record((r.at.duration_since(sent).as_micros() as u64).max(1)).unwrap();
                    break;
                }
                Ok(Some(_)) => continue,
                _ => {
                    lost += 1;
                    break;
                }
            }
        }
        // Within a connection's budget of signals (rooms.signals_per_second, 5 by default; a
        // client types once every few seconds), and past the room's batch window.
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let writes = session_writes(&a).await + session_writes(&b).await - writes_before;
    for session in [&typist, &reader] {
        let _ = session.send(serde_json::Value::Null);
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    let (p50, p99, max) = percentiles(&hist);
    println!(
        "{}",
        json!({"what": "rooms_typing", "signals": count * 2, "lost": lost, "p50_ms": p50, "p99_ms": p99,
               "max_ms": max, "rps": count * 2, "session_writes_during_signals": writes})
    );
    std::process::exit(0);
}
