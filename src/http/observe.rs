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
    sync::{Arc, RwLock},
    task::{Context, Poll},
    time::Instant,
};

use axum::{
    extract::{MatchedPath, Request},
    response::Response,
};
use prometheus_client::metrics::{counter::Counter, histogram::Histogram};
use tower::{Layer, Service};
use tracing::{Instrument, field::Empty, instrument::Instrumented};

use super::{AppState, access, guard::Guarded};
use crate::telemetry::metrics::{self, HttpLabels};

/// Adds [`Observe`] to every route.
#[derive(Clone)]
pub(super) struct ObserveLayer {
    state: AppState,
    /// The route's name where no router matched it (the fast path, `super::fast`).
    named: Option<&'static str>,
}

impl ObserveLayer {
    pub(super) fn new(state: AppState, named: Option<&'static str>) -> Self {
        Self { state, named }
    }
}

impl<S> Layer<S> for ObserveLayer {
    type Service = Observe<S>;
    fn layer(&self, inner: S) -> Observe<S> {
        Observe { inner, state: self.state.clone(), handles: Arc::default(), named: self.named }
    }
}

/// A route with its request observed.
#[derive(Clone)]
pub(super) struct Observe<S> {
    inner: S,
    state: AppState,
    handles: Arc<Handles>,
    named: Option<&'static str>,
}

/// The route a request took, as metrics and the access log name it.
enum Route {
    Matched(MatchedPath),
    Named(&'static str),
    Unmatched,
}

impl Route {
    fn as_str(&self) -> &str {
        match self {
            Route::Matched(path) => path.as_str(),
            Route::Named(name) => name,
            Route::Unmatched => "unmatched",
        }
    }
}

/// The request counter and latency histogram of the label sets one route has answered with
/// (an `Observe` serves one route, so a few): found by a short scan instead of two lookups in the
/// metric families' maps per request. The handles share their values with the families.
#[derive(Default)]
struct Handles(RwLock<Vec<(HttpLabels, Counter, Histogram)>>);

impl Handles {
    fn record(&self, state: &AppState, (method, route, status): (&'static str, &str, u16), seconds: f64) {
        let known = |(l, ..): &&(HttpLabels, Counter, Histogram)| {
            l.status == status && l.method == method && l.route == route
        };
        if let Some((_, count, latency)) = self.0.read().expect("handles lock").iter().find(known) {
            count.inc();
            latency.observe(seconds);
            return;
        }
        let labels = HttpLabels { method, route: route.to_string(), status };
        let count = state.metrics.http_requests.get_or_create(&labels).clone();
        let latency = state.metrics.http_duration.get_or_create(&labels).clone();
        count.inc();
        latency.observe(seconds);
        let mut handles = self.0.write().expect("handles lock");
        // Bounded: a route answers with a handful of statuses (the fallback with a few more).
        if handles.len() < 64 && !handles.iter().any(|h| known(&h)) {
            handles.push((labels, count, latency));
        }
    }
}

impl<S> Service<Request> for Observe<S>
where
    S: Service<Request, Response = Response, Error = Infallible>,
{
    type Response = Response;
    type Error = Infallible;
    type Future = Observed<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request) -> Self::Future {
        let started = Instant::now();
        let route = match (request.extensions().get::<MatchedPath>(), self.named) {
            (Some(matched), _) => Route::Matched(matched.clone()),
            (None, Some(name)) => Route::Named(name),
            (None, None) => Route::Unmatched,
        };
        let method = metrics::method_label(request.method());
        let span = tracing::debug_span!("request", method, route = route.as_str(), user_id = Empty);
        let inner = &mut self.inner;
        let answer = Guarded::call(move || inner.call(request).instrument(span));
        let done =
            Some(Done { state: self.state.clone(), handles: self.handles.clone(), started, method, route });
        Observed { answer, done }
    }
}

/// What is recorded once the answer is ready.
struct Done {
    state: AppState,
    handles: Arc<Handles>,
    started: Instant,
    method: &'static str,
    route: Route,
}

pin_project_lite::pin_project! {
    /// The route's answer, observed when it is ready: a future of its own rather than a boxed
    /// `async` block (an allocation and a copy of the route's future per request). A panic is
    /// answered 500 ([`Guarded`]) and observed as that.
    pub(super) struct Observed<F> {
        #[pin]
        answer: Guarded<Instrumented<F>>,
        done: Option<Done>,
    }
}

impl<F: Future<Output = Result<Response, Infallible>>> Future for Observed<F> {
    type Output = Result<Response, Infallible>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let Poll::Ready(response) = this.answer.poll(cx) else { return Poll::Pending };
        let Done { state, handles, started, method, route } = this.done.take().expect("polled after done");
        let (status, elapsed) = (response.status(), started.elapsed());
        let route = route.as_str();
        let refused = response.extensions().get::<access::RefusedToken>();
        state.access.record(access::Finished { method, route, status, elapsed, refused });
        handles.record(&state, (method, route, status.as_u16()), elapsed.as_secs_f64());
        Poll::Ready(Ok(response))
    }
}
