//! An event stream on a plain HTTP/1.1 connection, served without hyper.
//!
//! hyper keeps two 8 KiB buffers for as long as a connection lives (one it reads into, one it
//! writes headers into), which an open event stream never gives back: most of what an idle
//! subscriber cost (BENCHMARKS.md, "Issue 27"). A connection whose first request line, as it
//! arrived, is a GET of an event stream (`/api/v2/presence/stream`, `/api/v2/rooms/{room}/stream`)
//! is read here instead: the head parsed by httparse (hyper's own parser), the request served by
//! the same router (every layer, extractor and limit), the answer written as hyper writes it and
//! the events chunk by chunk from the body, with nothing kept between them. The connection closes
//! when the answer ends (`connection: close`). Over TLS, and for anything else, hyper serves.

use std::time::{Duration, SystemTime};

use axum::{
    Router,
    body::Body,
    http::{HeaderName, HeaderValue, Request, Response, Version, header},
    response::IntoResponse,
};
use bytes::Bytes;
use http_body_util::BodyExt;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tower::ServiceExt;

use super::{
    ApiError,
    listener::{Activity, CountedStream, MAX_READ_BUFFER, Peer, Timeouts},
};

/// As many header lines as hyper takes.
const MAX_HEADERS: usize = 100;
/// What a client may send after its request head on a stream (it has nothing to send) before
/// the connection is closed.
const MAX_TRAILING: usize = 64 * 1024;
/// The most of a non-stream answer (an error) collected to be written with its length.
const MAX_ANSWER: usize = 1024 * 1024;

/// Whether `start`, the first bytes of a connection, begin the request line of an event stream.
/// Decided on what has arrived: a line cut before its path ends is not one (hyper serves it).
pub(super) fn is_event_stream(start: &[u8]) -> bool {
    let Some(target) = start.strip_prefix(b"GET ") else { return false };
    let Some(end) = target.iter().position(|&b| b == b'?' || b == b' ') else { return false };
    let path = &target[..end];
    path == b"/api/v2/presence/stream"
        || path
            .strip_prefix(b"/api/v2/rooms/")
            .and_then(|rest| rest.strip_suffix(b"/stream"))
            .is_some_and(|room| !room.is_empty() && !room.contains(&b'/'))
}

/// How a connection served here ended, for the timeout metrics.
pub(super) enum Ended {
    /// The request head did not arrive within the header timeout.
    HeaderTimeout,
    /// No byte moved either way for the idle timeout.
    Idle,
    /// Answered, closed by the client or by the node, or failed.
    Done,
}

/// Serves the one request of `stream` and closes it.
pub(super) async fn serve(
    mut stream: CountedStream,
    router: Router,
    peer: Peer,
    timeouts: Timeouts,
) -> Ended {
    let activity = stream.activity();
    let closer = peer.closer.clone();
    let request = match tokio::time::timeout(timeouts.header, read_request(&mut stream)).await {
        Err(_) => return Ended::HeaderTimeout,
        Ok(Err(Unreadable::Closed)) => return Ended::Done,
        Ok(Err(Unreadable::Refused(answer))) => {
            let _ = write_answer(&mut stream, answer.into_response()).await;
            return Ended::Done;
        }
        Ok(Ok(request)) => request,
    };
    let version = request.version();
    let mut request = request.map(|()| Body::empty());
    request.extensions_mut().insert(peer);
    let Ok(response) = router.oneshot(request).await;
    let is_stream = response
        .headers()
        .get(header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"text/event-stream"));
    if !is_stream {
        let _ = write_answer(&mut stream, response).await;
        return Ended::Done;
    }
    let (parts, body) = response.into_parts();
    let chunked = version == Version::HTTP_11;
    let head = head_of(&parts, chunked.then_some("transfer-encoding: chunked"));
    let watch = (&activity, timeouts.idle, &closer);
    if let Some(ended) = unless_idle(stream.write_all(&head), watch).await {
        return ended;
    }
    relay(&mut stream, body, chunked, watch).await
}

/// Why no request came out of a connection.
enum Unreadable {
    Closed,
    /// An answer to give instead (a malformed or oversized head).
    Refused(ApiError),
}

/// Reads and parses the request head (its body, which an event stream's GET has not, is not read).
async fn read_request(stream: &mut CountedStream) -> Result<Request<()>, Unreadable> {
    let mut buffer = Vec::with_capacity(1024);
    loop {
        if buffer.len() >= MAX_READ_BUFFER {
            return Err(Unreadable::Refused(ApiError::BadRequest("request head too large".into())));
        }
        buffer.reserve(1024);
        match stream.read_buf(&mut buffer).await {
            Ok(0) | Err(_) => return Err(Unreadable::Closed),
            Ok(_) => {}
        }
        let mut lines = [httparse::EMPTY_HEADER; MAX_HEADERS];
        let mut parsed = httparse::Request::new(&mut lines);
        match parsed.parse(&buffer) {
            Ok(httparse::Status::Partial) => continue,
            Ok(httparse::Status::Complete(_)) => return request_of(&parsed).ok_or_else(malformed),
            Err(_) => return Err(malformed()),
        }
    }
}

fn malformed() -> Unreadable {
    Unreadable::Refused(ApiError::BadRequest("malformed request".into()))
}

fn request_of(parsed: &httparse::Request<'_, '_>) -> Option<Request<()>> {
    let version = if parsed.version? == 0 { Version::HTTP_10 } else { Version::HTTP_11 };
    let mut request = Request::builder().method(parsed.method?).uri(parsed.path?).version(version);
    for line in parsed.headers.iter() {
        let name = HeaderName::from_bytes(line.name.as_bytes()).ok()?;
        request = request.header(name, HeaderValue::from_bytes(line.value).ok()?);
    }
    request.body(()).ok()
}

/// The status line and headers as hyper writes them, with a date, `connection: close` and
/// `framing` (the body's length or encoding, if any).
fn head_of(parts: &axum::http::response::Parts, framing: Option<&str>) -> Vec<u8> {
    let mut head = Vec::with_capacity(256);
    let reason = parts.status.canonical_reason().unwrap_or("");
    head.extend_from_slice(format!("HTTP/1.1 {} {reason}\r\n", parts.status.as_str()).as_bytes());
    for (name, value) in &parts.headers {
        if [header::CONNECTION, header::CONTENT_LENGTH, header::TRANSFER_ENCODING].contains(name) {
            continue;
        }
        head.extend_from_slice(name.as_str().as_bytes());
        head.extend_from_slice(b": ");
        head.extend_from_slice(value.as_bytes());
        head.extend_from_slice(b"\r\n");
    }
    let date = httpdate::fmt_http_date(SystemTime::now());
    head.extend_from_slice(format!("date: {date}\r\nconnection: close\r\n").as_bytes());
    if let Some(framing) = framing {
        head.extend_from_slice(framing.as_bytes());
        head.extend_from_slice(b"\r\n");
    }
    head.extend_from_slice(b"\r\n");
    head
}

/// Writes an answer that is not a stream (an error, in practice) with its length, and closes.
async fn write_answer(stream: &mut CountedStream, response: Response<Body>) -> std::io::Result<()> {
    let (parts, body) = response.into_parts();
    let body = http_body_util::Limited::new(body, MAX_ANSWER).collect().await.map(|b| b.to_bytes());
    let body = body.unwrap_or_else(|_| Bytes::new());
    let mut out = head_of(&parts, Some(&format!("content-length: {}", body.len())));
    out.extend_from_slice(&body);
    tokio::time::timeout(Duration::from_secs(10), async {
        stream.write_all(&out).await?;
        stream.shutdown().await
    })
    .await
    .unwrap_or(Ok(()))
}

type Watch<'a> = (&'a Activity, Duration, &'a tokio_util::sync::CancellationToken);

/// `work`, unless the connection idles or the node closes it first.
async fn unless_idle<T>(
    work: impl Future<Output = std::io::Result<T>>,
    (activity, idle_for, closer): Watch<'_>,
) -> Option<Ended> {
    tokio::select! {
        done = work => done.err().map(|_| Ended::Done),
        () = activity.idle(idle_for) => Some(Ended::Idle),
        () = closer.cancelled() => Some(Ended::Done),
    }
}

/// Writes the body's frames as they come until it ends, the client goes, the connection idles or
/// the node closes it.
async fn relay(stream: &mut CountedStream, mut body: Body, chunked: bool, watch: Watch<'_>) -> Ended {
    let (activity, idle_for, closer) = watch;
    let mut trailing = 0;
    loop {
        let mut scratch = [0u8; 64];
        let frame = tokio::select! {
            frame = body.frame() => frame,
            read = stream.read(&mut scratch) => match read {
                Ok(n) if n > 0 && trailing + n <= MAX_TRAILING => { trailing += n; continue }
                _ => return Ended::Done,
            },
            () = activity.idle(idle_for) => return Ended::Idle,
            () = closer.cancelled() => return Ended::Done,
        };
        let data = match frame {
            Some(Ok(frame)) => match frame.into_data() {
                Ok(data) if !data.is_empty() => data,
                _ => continue,
            },
            Some(Err(_)) => return Ended::Done,
            None => break,
        };
        let mut out = Vec::with_capacity(data.len() + 16);
        if chunked {
            out.extend_from_slice(format!("{:x}\r\n", data.len()).as_bytes());
        }
        out.extend_from_slice(&data);
        if chunked {
            out.extend_from_slice(b"\r\n");
        }
        if let Some(ended) = unless_idle(stream.write_all(&out), watch).await {
            return ended;
        }
    }
    let end: &[u8] = if chunked { b"0\r\n\r\n" } else { b"" };
    let finish = async {
        stream.write_all(end).await?;
        stream.shutdown().await
    };
    unless_idle(finish, watch).await.unwrap_or(Ended::Done)
}

#[cfg(test)]
mod tests {
    use super::is_event_stream;

    #[test]
    fn only_the_request_line_of_an_event_stream_is_one() {
        for line in [
            "GET /api/v2/presence/stream?users=a HTTP/1.1\r\n",
            "GET /api/v2/presence/stream HTTP/1.1\r\n",
            "GET /api/v2/presence/stream?users=a",
            "GET /api/v2/rooms/lobby/stream?x HTTP/1.1\r\n",
            "GET /api/v2/rooms/lobby/stream HTTP/1.0\r\n",
        ] {
            assert!(is_event_stream(line.as_bytes()), "{line}");
        }
        for line in [
            "GET /api/v2/presence/stream",
            "GET /api/v2/presence/str",
            "GET /api/v2/presence/streams HTTP/1.1\r\n",
            "GET /api/v2/presence/u1 HTTP/1.1\r\n",
            "HEAD /api/v2/presence/stream HTTP/1.1\r\n",
            "POST /api/v2/presence/stream HTTP/1.1\r\n",
            "GET /api/v2/rooms//stream HTTP/1.1\r\n",
            "GET /api/v2/rooms/a/b/stream HTTP/1.1\r\n",
            "GET /api/v2/rooms/lobby HTTP/1.1\r\n",
            "",
        ] {
            assert!(!is_event_stream(line.as_bytes()), "{line}");
        }
    }
}
