//! An event stream's connection on the wire, read byte by byte: on plain HTTP/1.1 the node serves
//! it without hyper (src/http/stream_conn.rs), so what hyper did for it is checked here: the
//! head, the chunked framing (or none for HTTP/1.0), the end of the stream when the client goes,
//! the header timeout, and a malformed head.

use tokio::net::TcpStream;

use super::*;
use crate::helpers::read_until;

/// Sends `request` on a new connection to `app`.
async fn send(app: &TestApp, request: &str) -> TcpStream {
    let mut stream = TcpStream::connect(app.addr).await.unwrap();
    stream.write_all(request.as_bytes()).await.unwrap();
    stream
}

#[tokio::test]
async fn a_stream_over_http_1_1_is_chunked_closes_after_and_ends_when_the_client_goes() {
    let app = TestApp::spawn().await;
    let request = "GET /api/v2/presence/stream?users=wire HTTP/1.1\r\nhost: x\r\n\r\n";
    let mut stream = send(&app, request).await;
    let (head, closed) = read_until(&mut stream, FIVE, |t| t.contains("event: snapshot")).await;
    assert!(!closed, "{head}");
    let lower = head.to_lowercase();
    assert!(lower.starts_with("http/1.1 200 ok\r\n"), "{head}");
    for line in
        ["content-type: text/event-stream", "transfer-encoding: chunked", "connection: close", "date: "]
    {
        assert!(lower.contains(line), "no {line:?} in {head}");
    }
    // A chunk: its length in hex on a line of its own, then the event.
    let body = &head[head.find("\r\n\r\n").unwrap() + 4..];
    let (size, event) = body.split_once("\r\n").unwrap();
    assert!(usize::from_str_radix(size, 16).unwrap() >= event.trim_end().len(), "{body:?}");
    streams_open(&app, 1).await;

    app.set("wire", json!({"status": "busy"})).await;
    let (changed, _) = read_until(&mut stream, FIVE, |t| t.contains("event: change")).await;
    assert!(changed.contains("\"status\":\"busy\""), "{changed}");

    drop(stream);
    streams_open(&app, 0).await;
    app.stop().await;
}

#[tokio::test]
async fn a_stream_over_http_1_0_ends_with_the_connection_and_a_split_request_line_is_served_too() {
    let app = TestApp::spawn().await;
    let mut stream = send(&app, "GET /api/v2/presence/stream?users=old HTTP/1.0\r\n\r\n").await;
    let (head, _) = read_until(&mut stream, FIVE, |t| t.contains("event: snapshot")).await;
    let lower = head.to_lowercase();
    assert!(!lower.contains("transfer-encoding"), "HTTP/1.0 has no chunks: {head}");
    assert!(lower.contains("\r\n\r\nevent: snapshot"), "the events follow the head as they are: {head}");

    // A request line that arrives in pieces is served all the same (by hyper).
    let mut split = TcpStream::connect(app.addr).await.unwrap();
    split.write_all(b"GET /api/v2/pre").await.unwrap();
    // A pause in what the client sends (not a wait for the node): the pieces arrive apart.
    tokio::time::sleep(Duration::from_millis(100)).await;
    split.write_all(b"sence/stream?users=old HTTP/1.1\r\nhost: x\r\n\r\n").await.unwrap();
    let (text, closed) = read_until(&mut split, FIVE, |t| t.contains("event: snapshot")).await;
    assert!(!closed && text.starts_with("HTTP/1.1 200 OK"), "{text}");
    streams_open(&app, 2).await;
    app.stop().await;
}

#[tokio::test]
async fn a_stream_request_cut_short_times_out_and_a_malformed_one_gets_the_envelope() {
    let app = TestApp::spawn_with(|c| c.service.header_timeout = SECOND).await;
    let started = Instant::now();
    let mut stream = send(&app, "GET /api/v2/presence/stream?users=a HTTP/1.1\r\nhost: x\r\n").await;
    let (text, closed) = read_until(&mut stream, FIVE, |_| false).await;
    assert!(closed && text.is_empty(), "closed without an answer: {text:?}");
    let waited = started.elapsed();
    assert!(waited >= SECOND && waited < FIVE, "closed after the header timeout: {waited:?}");
    let metrics = app.metrics().await;
    assert!(metric(&metrics, "presence_http_timeouts_total{reason=\"header\"}") >= 1.0);

    let mut stream = send(&app, "GET /api/v2/presence/stream?users=a HTTP/1.1\r\nbad header\r\n\r\n").await;
    let (text, closed) = read_until(&mut stream, FIVE, |_| false).await;
    assert!(closed, "{text}");
    assert!(text.starts_with("HTTP/1.1 400 Bad Request\r\n"), "{text}");
    let body: Value = serde_json::from_str(&text[text.find("\r\n\r\n").unwrap() + 4..]).unwrap();
    assert_eq!(body["success"], false, "{body}");

    // A refusal from the route itself comes whole, with its length.
    let mut stream = send(&app, "GET /api/v2/presence/stream HTTP/1.1\r\nhost: x\r\n\r\n").await;
    let (text, closed) = read_until(&mut stream, FIVE, |_| false).await;
    assert!(closed && text.starts_with("HTTP/1.1 400 Bad Request\r\n"), "{text}");
    let (head, body) = text.split_once("\r\n\r\n").unwrap();
    assert!(head.to_lowercase().contains(&format!("content-length: {}", body.len())), "{text}");
    assert!(body.contains("`users` is required"), "{body}");
    app.stop().await;
}
