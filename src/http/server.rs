//! Serving connections: hyper's HTTP/1.1 on each admitted connection, with the limits a server
//! facing the Internet needs. A client must send a request's headers within
//! `service.header_timeout`, which is also how long a kept-alive connection may wait for its next
//! request; a connection that moves no byte in either direction for `service.idle_timeout`
//! (a stalled body, a client that stops reading its response) is closed; the read buffer, and so
//! what a partial request head can cost, is bounded. (The body's own deadline,
//! `service.body_timeout`, is the JSON extractor's.) On shutdown the loop stops accepting and
//! every connection finishes its request in flight, then closes.

use std::{pin::pin, sync::Arc, time::Duration};

use axum::{Router, extract::ConnectInfo};
use hyper::{body::Incoming, server::conn::http1};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio_util::{sync::CancellationToken, task::TaskTracker};
use tower::ServiceExt;

use super::listener::{Activity, ClientAddr, CountingListener};
use crate::telemetry::{Metrics, metrics::ReasonLabels};

/// The most a connection's read buffer holds: room for the longest request head we accept (a
/// URI of up to 64 KiB plus headers), and no more.
const MAX_READ_BUFFER: usize = 128 * 1024;

/// The per-connection limits.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Timeouts {
    pub header: Duration,
    pub idle: Duration,
}

/// Serves `router` on `listener` until `stop`; then waits for the connections to finish.
pub(crate) async fn serve(
    mut listener: CountingListener,
    router: Router,
    timeouts: Timeouts,
    metrics: Arc<Metrics>,
    stop: CancellationToken,
) {
    let connections = TaskTracker::new();
    loop {
        let (stream, peer) = tokio::select! {
            () = stop.cancelled() => break,
            accepted = listener.accept() => accepted,
        };
        let activity = stream.activity();
        let router = router.clone();
        let service = hyper::service::service_fn(move |mut request: hyper::Request<Incoming>| {
            request.extensions_mut().insert(ConnectInfo(ClientAddr(peer)));
            router.clone().oneshot(request)
        });
        let connection = http1::Builder::new()
            .timer(TokioTimer::new())
            .header_read_timeout(timeouts.header)
            .max_buf_size(MAX_READ_BUFFER)
            .serve_connection(TokioIo::new(stream), service)
            .with_upgrades();
        let (stop, metrics) = (stop.clone(), metrics.clone());
        connections.spawn(async move {
            let mut connection = pin!(connection);
            let outcome = tokio::select! {
                outcome = connection.as_mut() => outcome,
                () = idle(&activity, timeouts.idle) => {
                    metrics.http_timeouts.get_or_create(&ReasonLabels { reason: "idle" }).inc();
                    return;
                }
                () = stop.cancelled() => {
                    connection.as_mut().graceful_shutdown();
                    tokio::select! {
                        outcome = connection.as_mut() => outcome,
                        () = idle(&activity, timeouts.idle) => return,
                    }
                }
            };
            if let Err(e) = outcome
                && e.is_timeout()
            {
                metrics.http_timeouts.get_or_create(&ReasonLabels { reason: "header" }).inc();
            }
        });
    }
    connections.close();
    connections.wait().await;
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
