//! Serving connections: hyper's HTTP/1.1 on each admitted connection (over TLS: HTTP/2 or
//! HTTP/1.1, as ALPN chose), with the limits a server
//! facing the Internet needs. A client must send a request's headers within
//! `service.header_timeout`, which is also how long a kept-alive connection may wait for its next
//! request; a connection that moves no byte in either direction for `service.idle_timeout`
//! (a stalled body, a client that stops reading its response) is closed; the read buffer, and so
//! what a partial request head can cost, is bounded. (The body's own deadline,
//! `service.body_timeout`, is the JSON extractor's.) On shutdown the loop stops accepting and
//! every connection finishes its request in flight, then closes.

use std::{pin::pin, sync::Arc, time::Duration};

use axum::{Router, extract::ConnectInfo};
use hyper::body::Incoming;
use hyper_util::{
    rt::{TokioExecutor, TokioIo, TokioTimer},
    server::conn::auto,
};
use tokio_util::{either::Either, sync::CancellationToken, task::TaskTracker};
use tower::ServiceExt;

use super::listener::{Activity, ClientAddr, CountedStream, CountingListener};
use crate::{
    telemetry::{Metrics, metrics::ReasonLabels},
    tls::ServerTls,
};

/// The most a connection's read buffer holds: room for the longest request head we accept (a
/// URI of up to 64 KiB plus headers), and no more.
const MAX_READ_BUFFER: usize = 128 * 1024;

/// The per-connection limits.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Timeouts {
    pub header: Duration,
    pub idle: Duration,
}

/// Closes the request's connection when cancelled: a live stream whose client stopped reading
/// cannot be ended from inside its response.
#[derive(Debug, Clone)]
pub(crate) struct ConnectionCloser(pub CancellationToken);

/// How a request reached this node, in each request's extensions: over TLS in this process or
/// not (`http::transport` decides what a plain request may do).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Transport {
    pub tls: bool,
}

/// Serves `router` on `listener` until `stop`; then waits for the connections to finish. With
/// `tls`, every connection first completes a TLS handshake (within the header timeout) and then
/// speaks HTTP/2 or HTTP/1.1 as ALPN chose; without, HTTP/1.1.
pub(crate) async fn serve(
    mut listener: CountingListener,
    router: Router,
    tls: Option<Arc<ServerTls>>,
    limits: (Timeouts, Arc<Metrics>),
    stop: CancellationToken,
) {
    let (timeouts, metrics) = limits;
    let connections = TaskTracker::new();
    loop {
        let (stream, peer) = tokio::select! {
            () = stop.cancelled() => break,
            accepted = listener.accept() => accepted,
        };
        let router = router.clone();
        let transport = Transport { tls: tls.is_some() };
        let closer = CancellationToken::new();
        let close = closer.clone();
        let service = hyper::service::service_fn(move |mut request: hyper::Request<Incoming>| {
            request.extensions_mut().insert(ConnectInfo(ClientAddr(peer)));
            request.extensions_mut().insert(transport);
            request.extensions_mut().insert(ConnectionCloser(close.clone()));
            router.clone().oneshot(request)
        });
        let (stop, metrics, tls) = (stop.clone(), metrics.clone(), tls.clone());
        connections.spawn(async move {
            let activity = stream.activity();
            let Some(stream) = secured(stream, tls.as_deref(), timeouts.header).await else {
                metrics.http_timeouts.get_or_create(&ReasonLabels { reason: "tls_handshake" }).inc();
                return;
            };
            let mut builder = auto::Builder::new(TokioExecutor::new());
            builder
                .http1()
                .timer(TokioTimer::new())
                .header_read_timeout(timeouts.header)
                .max_buf_size(MAX_READ_BUFFER);
            builder.http2().timer(TokioTimer::new()).max_concurrent_streams(MAX_H2_STREAMS);
            if !transport.tls {
                builder = builder.http1_only();
            }
            let connection = builder.serve_connection_with_upgrades(TokioIo::new(stream), service);
            let mut connection = pin!(connection);
            let outcome = tokio::select! {
                outcome = connection.as_mut() => outcome,
                () = idle(&activity, timeouts.idle) => {
                    metrics.http_timeouts.get_or_create(&ReasonLabels { reason: "idle" }).inc();
                    return;
                }
                () = closer.cancelled() => return,
                () = stop.cancelled() => {
                    connection.as_mut().graceful_shutdown();
                    tokio::select! {
                        outcome = connection.as_mut() => outcome,
                        () = idle(&activity, timeouts.idle) => return,
                    }
                }
            };
            if let Err(e) = outcome
                && e.downcast_ref::<hyper::Error>().is_some_and(hyper::Error::is_timeout)
            {
                metrics.http_timeouts.get_or_create(&ReasonLabels { reason: "header" }).inc();
            }
        });
    }
    connections.close();
    connections.wait().await;
}

/// Concurrent requests on one HTTP/2 connection.
const MAX_H2_STREAMS: u32 = 100;

type Secured = Either<CountedStream, tokio_rustls::server::TlsStream<CountedStream>>;

/// The connection as served: as it came, or after a TLS handshake completed within `limit`
/// (none if it did not).
async fn secured(stream: CountedStream, tls: Option<&ServerTls>, limit: Duration) -> Option<Secured> {
    let Some(tls) = tls else { return Some(Either::Left(stream)) };
    match tokio::time::timeout(limit, tls.acceptor().accept(stream)).await {
        Ok(Ok(stream)) => Some(Either::Right(stream)),
        _ => None,
    }
}

/// Completes once the connection has moved no byte for `limit`.
async fn idle(activity: &Activity, limit: Duration) {
    loop {
        let deadline = activity.last() + limit;
        if tokio::time::Instant::now() >= deadline {
            return;
        }
        tokio::time::sleep_until(deadline).await;
    }
}
