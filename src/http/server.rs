//! Serving connections: hyper's HTTP/1.1 on each admitted connection (over TLS: HTTP/2 or
//! HTTP/1.1, as ALPN chose), with the limits a server
//! facing the Internet needs. A client must send a request's headers within
//! `service.header_timeout`, which is also how long a kept-alive connection may wait for its next
//! request; a connection that moves no byte in either direction for `service.idle_timeout`
//! (a stalled body, a client that stops reading its response) is closed; the read buffer, and so
//! what a partial request head can cost, is bounded. (The body's own deadline,
//! `service.body_timeout`, is the JSON extractor's.) On shutdown the loop stops accepting and
//! every connection finishes its request in flight, then closes.

use std::{
    pin::Pin,
    sync::Arc,
    time::{Duration, Instant},
};

use axum::body::Body;
use hyper::{
    body::Incoming,
    server::conn::{http1, http2},
};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tokio_util::{either::Either, sync::CancellationToken, task::TaskTracker};

use super::{
    App,
    listener::{Activity, CountedStream, CountingListener, MAX_READ_BUFFER, Peer, Timeouts},
    stream_conn,
};
use crate::{
    telemetry::{Metrics, metrics::ReasonLabels},
    tls::ServerTls,
};

/// Serves `app` on `listener` until `stop`; then waits for the connections to finish. With
/// `tls`, every connection first completes a TLS handshake (within the header timeout) and then
/// speaks HTTP/2 or HTTP/1.1 as ALPN chose; without, HTTP/1.1.
pub(crate) async fn serve(
    mut listener: CountingListener,
    app: App,
    tls: Option<Arc<ServerTls>>,
    limits: (Timeouts, Arc<Metrics>),
    stop: CancellationToken,
) {
    let (timeouts, metrics) = limits;
    let connections = TaskTracker::new();
    loop {
        let (stream, addr) = tokio::select! {
            () = stop.cancelled() => break,
            accepted = listener.accept() => accepted,
        };
        let app = app.clone();
        let (stop, metrics, tls) = (stop.clone(), metrics.clone(), tls.clone());
        connections.spawn(async move {
            let timed_out = |reason| {
                metrics.http_timeouts.get_or_create(&ReasonLabels { reason }).inc();
            };
            // The first bytes of a plain connection must come within the header timeout, as a
            // TLS handshake must. hyper then bounds each request head by the whole timeout (it
            // also bounds a kept-alive connection's wait for its next request by it, so it is
            // not shortened for them); an event stream's one request gets what is left of it.
            if tls.is_none() {
                let started = Instant::now();
                let sniffed = sniff(&stream, timeouts.header, &stop).await;
                let header = timeouts.header.saturating_sub(started.elapsed()).max(Duration::from_millis(1));
                match sniffed {
                    Sniffed::EventStream => {
                        // Its own closer: the node's stop ends an event stream through the hub
                        // (with a last event), not by dropping the connection.
                        let peer = Peer { addr, tls: false, closer: CancellationToken::new() };
                        match stream_conn::serve(stream, app.router(), peer, Timeouts { header, ..timeouts })
                            .await
                        {
                            stream_conn::Ended::HeaderTimeout => timed_out("header"),
                            stream_conn::Ended::Idle => timed_out("idle"),
                            stream_conn::Ended::Done => {}
                        }
                        return;
                    }
                    Sniffed::Silent => return timed_out("header"),
                    Sniffed::Gone => return,
                    Sniffed::Other => {}
                }
            }
            // A child of `stop`, so that the connection's task watches one token for both (told
            // apart by `drive`).
            let closer = stop.child_token();
            let peer = Peer { addr, tls: tls.is_some(), closer: closer.clone() };
            let service = hyper::service::service_fn(move |request: hyper::Request<Incoming>| {
                app.answer(request.map(Body::new), &peer)
            });
            let activity = stream.activity();
            let Some(stream) = secured(stream, tls.as_deref(), timeouts.header).await else {
                return timed_out("tls_handshake");
            };
            let h2 = matches!(&stream, Either::Right(tls) if tls.get_ref().1.alpn_protocol() == Some(b"h2"));
            let io = TokioIo::new(stream);
            let watch = (&activity, timeouts.idle, &closer, &stop);
            // Each protocol's connection on the heap at its own size: inline, the task would be
            // as large as the larger of the two (and the TLS handshake's), for every connection
            // and every idle event stream it holds.
            let outcome = if h2 {
                let mut builder = http2::Builder::new(TokioExecutor::new());
                builder.timer(TokioTimer::new()).max_concurrent_streams(MAX_H2_STREAMS);
                let mut connection = Box::pin(builder.serve_connection(io, service));
                drive(connection.as_mut(), |c| c.graceful_shutdown(), watch).await
            } else {
                let mut builder = http1::Builder::new();
                builder
                    .timer(super::timer::ConnectionTimer::default())
                    .header_read_timeout(timeouts.header)
                    .max_buf_size(MAX_READ_BUFFER);
                let mut connection = Box::pin(builder.serve_connection(io, service).with_upgrades());
                drive(connection.as_mut(), |c| c.graceful_shutdown(), watch).await
            };
            match outcome {
                Ended::Idle => timed_out("idle"),
                Ended::Served(Err(e)) if e.is_timeout() => timed_out("header"),
                Ended::Served(_) | Ended::Closed => {}
            }
        });
    }
    connections.close();
    connections.wait().await;
}

/// How a connection ended.
enum Ended {
    Served(hyper::Result<()>),
    /// No byte moved either way for `service.idle_timeout`.
    Idle,
    /// Closed by the node: a live stream whose client stopped reading.
    Closed,
}

/// Serves `connection` until it ends, it idles for `idle`, `closer` closes it, or `stop` (whose
/// child `closer` is) asks it to `finish` its requests in flight (then it gets until it idles).
async fn drive<C: Future<Output = hyper::Result<()>>>(
    mut connection: Pin<&mut C>,
    finish: impl FnOnce(Pin<&mut C>),
    (activity, idle_for, closer, stop): (&Activity, Duration, &CancellationToken, &CancellationToken),
) -> Ended {
    // Biased: the connection first, as it is what wakes the task nearly every time.
    tokio::select! {
        biased;
        outcome = connection.as_mut() => return Ended::Served(outcome),
        () = closer.cancelled() => {}
        () = activity.idle(idle_for) => return Ended::Idle,
    }
    // `closer` is a child of `stop`: cancelled by itself, the node closes the connection.
    if !stop.is_cancelled() {
        return Ended::Closed;
    }
    finish(connection.as_mut());
    tokio::select! {
        biased;
        outcome = connection.as_mut() => Ended::Served(outcome),
        () = activity.idle(idle_for) => Ended::Idle,
    }
}

/// What a plain connection starts with.
enum Sniffed {
    /// The request line of an event stream: served by [`stream_conn`], without hyper.
    EventStream,
    /// Anything else: hyper's.
    Other,
    /// Nothing within the header timeout.
    Silent,
    /// Closed before a byte, or the node is stopping.
    Gone,
}

/// Looks at the first bytes of a plain connection, as they arrive, without taking them.
async fn sniff(stream: &CountedStream, limit: Duration, stop: &CancellationToken) -> Sniffed {
    // On the heap: the task keeps the size of its largest state for as long as it lives.
    let mut start = vec![0u8; 512];
    let peeked = tokio::select! {
        peeked = tokio::time::timeout(limit, stream.peek(&mut start)) => peeked,
        () = stop.cancelled() => return Sniffed::Gone,
    };
    match peeked {
        Err(_) => Sniffed::Silent,
        Ok(Ok(0) | Err(_)) => Sniffed::Gone,
        Ok(Ok(n)) if stream_conn::is_event_stream(&start[..n]) => Sniffed::EventStream,
        Ok(Ok(_)) => Sniffed::Other,
    }
}

/// Concurrent requests on one HTTP/2 connection.
const MAX_H2_STREAMS: u32 = 100;

type Secured = Either<CountedStream, tokio_rustls::server::TlsStream<CountedStream>>;

/// The connection as served: as it came, or after a TLS handshake completed within `limit`
/// (none if it did not).
async fn secured(stream: CountedStream, tls: Option<&ServerTls>, limit: Duration) -> Option<Secured> {
    let Some(tls) = tls else { return Some(Either::Left(stream)) };
    match tokio::time::timeout(limit, Box::pin(tls.acceptor().accept(stream))).await {
        Ok(Ok(stream)) => Some(Either::Right(stream)),
        _ => None,
    }
}
