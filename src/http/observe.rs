//! The middleware every request passes first: the Prometheus request counter and latency
//! histogram, the access-log line the configuration asks for, and (at debug level) a span with
//! the route template and user id.
//!
//! A tower service rather than `axum::middleware::from_fn`: that one clones the boxed route and
//! boxes it again on every request, which was a tenth of a cached GET's instructions
//! (BENCHMARKS.md, "Issue 27").

use std::{
    convert::Infallible,
    future::Future,
    pin::Pin,
    task::{Context, Poll},
    time::Instant,
};

use axum::{
    extract::{MatchedPath, Request},
    response::Response,
};
use tower::{Layer, Service};
use tracing::{Instrument, field::Empty};

use super::{AppState, access};
use crate::telemetry::metrics::{self, HttpLabels};

/// Adds [`Observe`] to every route.
#[derive(Clone)]
pub(super) struct ObserveLayer(pub AppState);

impl<S> Layer<S> for ObserveLayer {
    type Service = Observe<S>;
    fn layer(&self, inner: S) -> Observe<S> {
        Observe { inner, state: self.0.clone() }
    }
}

/// A route with its request observed.
#[derive(Clone)]
pub(super) struct Observe<S> {
    inner: S,
    state: AppState,
}

impl<S> Service<Request> for Observe<S>
where
    S: Service<Request, Response = Response, Error = Infallible>,
    S::Future: Send + 'static,
{
    type Response = Response;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Response, Infallible>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request) -> Self::Future {
        let started = Instant::now();
        let route =
            request.extensions().get::<MatchedPath>().map_or("unmatched", MatchedPath::as_str).to_string();
        let method = metrics::method_label(request.method());
        let span = tracing::debug_span!("request", method, route, user_id = Empty);
        let answer = self.inner.call(request).instrument(span);
        let state = self.state.clone();
        Box::pin(async move {
            let Ok(response) = answer.await;
            let status = response.status();
            let elapsed = started.elapsed();
            let refused = response.extensions().get::<access::RefusedToken>();
            state.access.record(access::Finished { method, route: &route, status, elapsed, refused });
            let labels = HttpLabels { method, route, status: status.as_u16() };
            state.metrics.http_requests.get_or_create(&labels).inc();
            state.metrics.http_duration.get_or_create(&labels).observe(elapsed.as_secs_f64());
            Ok(response)
        })
    }
}
