//! Clients that hold connections open without finishing their requests, or open too many: each
//! is cut off within the configured time or turned away, and the node keeps serving others.

use std::time::{Duration, Instant};

use reqwest::StatusCode;
use serde_json::{Value, json};
use tokio::{io::AsyncWriteExt, net::TcpStream};

use crate::helpers::{TestApp, mint, read_until};

/// Reads until the server closes the connection (or `limit` passes: then panics); returns what
/// it sent and when it closed.
async fn until_closed(stream: &mut TcpStream, limit: Duration) -> (String, Duration) {
    let started = Instant::now();
    let (received, closed) = read_until(stream, limit, |_| false).await;
    assert!(closed, "the server keeps a stalled connection open");
    (received, started.elapsed())
}

async fn connect(app: &TestApp) -> TcpStream {
    TcpStream::connect(app.addr).await.unwrap()
}

/// A node whose header and idle timeouts are these.
fn timeouts(header: Duration, idle: Duration) -> impl FnOnce(&mut presence::config::Config) {
    move |c| {
        c.service.header_timeout = header;
        c.service.idle_timeout = idle;
    }
}

fn quick() -> impl FnOnce(&mut presence::config::Config) {
    |c| {
        c.service.header_timeout = Duration::from_secs(1);
        c.service.body_timeout = Duration::from_secs(1);
        c.service.idle_timeout = Duration::from_secs(2);
    }
}

async fn metric(app: &TestApp, series: &str) -> u64 {
    app.metric(series).await as u64
}

#[tokio::test]
async fn half_sent_headers_are_cut_off_after_the_header_timeout() {
    let app = TestApp::spawn_with(quick()).await;
    let mut stalled = Vec::new();
    for _ in 0..50 {
        let mut stream = connect(&app).await;
        stream.write_all(b"GET /api/v2/presence/x HTTP/1.1\r\nHost: a\r\nX-Pad: ").await.unwrap();
        stream.write_all(&vec![b'a'; 16 * 1024]).await.unwrap();
        stalled.push(stream);
    }
    assert_eq!(app.read("x").await.status(), StatusCode::NOT_FOUND, "others are still served");
    for stream in &mut stalled {
        let (_, after) = until_closed(stream, Duration::from_secs(5)).await;
        assert!(after < Duration::from_secs(4), "closed after {after:?}");
    }
    assert!(metric(&app, "presence_http_timeouts_total{reason=\"header\"} ").await >= 50);
    app.stop().await;
}

#[tokio::test]
async fn an_idle_kept_alive_connection_is_closed() {
    let app = TestApp::spawn_with(quick()).await;
    let mut stream = connect(&app).await;
    stream.write_all(b"GET /health HTTP/1.1\r\nHost: a\r\n\r\n").await.unwrap();
    let (received, after) = until_closed(&mut stream, Duration::from_secs(5)).await;
    assert!(received.starts_with("HTTP/1.1 200"), "{received}");
    assert!(
        after < Duration::from_secs(4),
        "a kept-alive connection waits no longer than the header timeout"
    );
    app.stop().await;
}

/// A connection that never sends a byte is closed after the header timeout, not the (longer)
/// idle timeout; the plain-HTTP port speaks HTTP/1.1 only (HTTP/2 is for TLS, by ALPN), so a
/// client with HTTP/2 "prior knowledge" gets no HTTP/2.
#[tokio::test]
async fn a_silent_connection_lasts_the_header_timeout_and_plain_http_is_http1_only() {
    let app = TestApp::spawn_with(timeouts(Duration::from_secs(1), Duration::from_secs(30))).await;
    let mut silent = connect(&app).await;
    let (received, after) = until_closed(&mut silent, Duration::from_secs(10)).await;
    assert!(received.is_empty() && after < Duration::from_secs(4), "closed after {after:?}: {received}");

    let mut h2c = connect(&app).await;
    h2c.write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\x00\x00\x00\x04\x00\x00\x00\x00\x00").await.unwrap();
    let (received, _) = until_closed(&mut h2c, Duration::from_secs(10)).await;
    assert!(received.is_empty() || received.starts_with("HTTP/1.1 "), "an HTTP/2 answer: {received:?}");
    app.stop().await;
}

#[tokio::test]
async fn a_body_that_does_not_arrive_gets_408() {
    let app = TestApp::spawn_with(quick()).await;
    let mut stream = connect(&app).await;
    let head = format!(
        "PUT /api/v2/presence/slow HTTP/1.1\r\nHost: a\r\nAuthorization: Bearer {}\r\n\
         Content-Type: application/json\r\nContent-Length: 100\r\n\r\n{{\"status\":",
        mint("slow")
    );
    stream.write_all(head.as_bytes()).await.unwrap();
    let (received, after) = until_closed(&mut stream, Duration::from_secs(5)).await;
    assert!(received.starts_with("HTTP/1.1 408"), "{received}");
    let body: Value = serde_json::from_str(received.split("\r\n\r\n").nth(1).unwrap()).unwrap();
    assert_eq!(body["success"], false);
    assert!(after < Duration::from_secs(4), "{after:?}");
    assert_eq!(app.read("slow").await.status(), StatusCode::NOT_FOUND, "nothing was stored");
    app.stop().await;
}

#[tokio::test]
async fn a_client_that_stops_reading_is_cut_off_after_the_idle_timeout() {
    let app = TestApp::spawn_with(|c| {
        quick()(c);
        c.rate_limit.enabled = false;
    })
    .await;
    let ids: Vec<String> = (0..1000).map(|i| format!("{i:0>120}")).collect();
    let body = json!({"user_ids": ids}).to_string();
    let request = format!(
        "POST /api/v2/presence/batch HTTP/1.1\r\nHost: a\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    let mut stream = connect(&app).await;
    // Ask for ~140 KB answers over and over without reading any: the socket buffers fill, the
    // server's writes stall, and the connection moves no byte.
    let started = Instant::now();
    let pipelined = async {
        loop {
            stream.write_all(request.as_bytes()).await?;
        }
        #[allow(unreachable_code)]
        std::io::Result::Ok(())
    };
    let ended = tokio::time::timeout(Duration::from_secs(15), pipelined).await;
    assert!(ended.is_ok(), "the server never gave up on a client that does not read");
    assert!(started.elapsed() < Duration::from_secs(12));
    assert!(metric(&app, "presence_http_timeouts_total{reason=\"idle\"} ").await >= 1);
    app.stop().await;
}

#[tokio::test]
async fn connections_beyond_the_caps_are_turned_away_with_json() {
    let app = TestApp::spawn_with(|c| {
        c.service.max_connections_per_ip = 4;
        c.service.header_timeout = Duration::from_secs(30);
    })
    .await;
    let mut held = Vec::new();
    for _ in 0..4 {
        held.push(connect(&app).await);
    }
    let mut extra = connect(&app).await;
    let (received, _) = until_closed(&mut extra, Duration::from_secs(5)).await;
    assert!(received.starts_with("HTTP/1.1 429"), "{received}");
    let body: Value = serde_json::from_str(received.split("\r\n\r\n").nth(1).unwrap()).unwrap();
    assert_eq!(body["success"], false);
    drop(held.pop());
    let health = tokio::time::timeout(Duration::from_secs(5), async {
        loop {
            match app.http.get(app.url("/health")).send().await {
                Ok(r) if r.status() == StatusCode::OK => return,
                _ => tokio::time::sleep(Duration::from_millis(50)).await,
            }
        }
    });
    health.await.expect("a freed slot serves again");
    assert!(metric(&app, "presence_http_connections_refused_total{reason=\"per_ip\"} ").await >= 1);
    app.stop().await;

    let app = TestApp::spawn_with(|c| c.service.max_connections = 2).await;
    let _held: Vec<TcpStream> = vec![connect(&app).await, connect(&app).await];
    let mut extra = connect(&app).await;
    let (received, _) = until_closed(&mut extra, Duration::from_secs(5)).await;
    assert!(received.starts_with("HTTP/1.1 503"), "{received}");
}

/// Reads one answer (head and its `content-length` of body) from `stream` within 5 s.
async fn one_answer(stream: &mut TcpStream) -> String {
    let whole = |text: &str| {
        text.find("\r\n\r\n").is_some_and(|end| {
            let length = text[..end]
                .lines()
                .find_map(|l| l.to_ascii_lowercase().strip_prefix("content-length: ").map(str::to_string))
                .and_then(|n| n.trim().parse::<usize>().ok())
                .unwrap_or(0);
            text.len() >= end + 4 + length
        })
    };
    read_until(stream, Duration::from_secs(5), whole).await.0
}

/// A connection opened ahead of its first request (as browsers open them) is not held to what
/// was left of the header timeout afterwards: its next request, sent later than that but within
/// the timeout, is answered on the same connection.
#[tokio::test]
async fn a_connection_whose_first_request_came_late_keeps_the_whole_header_timeout_for_the_next() {
    let app = TestApp::spawn_with(timeouts(Duration::from_secs(2), Duration::from_secs(30))).await;
    let mut stream = connect(&app).await;
    // The client's own pauses are the behaviour under test, not a wait for the server.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    stream.write_all(b"GET /health HTTP/1.1\r\nHost: a\r\n\r\n").await.unwrap();
    let first = one_answer(&mut stream).await;
    assert!(first.starts_with("HTTP/1.1 200"), "{first}");
    tokio::time::sleep(Duration::from_millis(1000)).await;
    stream.write_all(b"GET /health HTTP/1.1\r\nHost: a\r\n\r\n").await.unwrap();
    let second = one_answer(&mut stream).await;
    assert!(second.starts_with("HTTP/1.1 200"), "the next request on the same connection: {second:?}");
    app.stop().await;
}
