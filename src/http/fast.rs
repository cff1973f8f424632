//! The API as the serving loop sees it: [`App`], axum's router with one route taken before it.
//!
//! `GET /api/v2/presence/{user_id}` is read far more often than anything else, and axum's router
//! cost a cached read about a fifth of its instructions: matching the path, percent-decoding the
//! parameter into two `Arc<str>`, an extension map for them, the route's boxed service cloned and
//! its future boxed (callgrind, BENCHMARKS.md "Issue 27"). A request of exactly that shape (a
//! GET, one path segment after `/api/v2/presence/` with no percent-encoding, not a static route's
//! name) goes to the same handler (`presence::get_one` and its extractors) behind the same
//! middleware, with the route's name given to the metrics and the access log; every other
//! request, an encoded id included, goes through the router. tests/api/reads/fast.rs holds the
//! two ways to the same answer.

use std::{convert::Infallible, future::Future};

use axum::{Router, extract::Request, handler::Handler, http::Method, response::Response};
use futures::future::Either;
use tower::{ServiceExt, util::BoxCloneSyncService};

use super::{AppState, listener::Peer};

/// The route the fast path serves, as the router names it.
pub(super) const ROUTE: &str = "/api/v2/presence/{user_id}";
const PREFIX: &str = "/api/v2/presence/";
/// Static routes under [`PREFIX`]: the router answers them (its route names differ).
const STATIC: [&str; 2] = ["batch", "stream"];

/// The router, and the one route served without it.
#[derive(Clone)]
pub(crate) struct App {
    router: Router,
    get_one: BoxCloneSyncService<Request, Response, Infallible>,
    /// Whether the fast path reads the connection's [`Peer`] (the HTTPS policy, the per-IP read
    /// limit); when nothing does, it is not put in the request (an extension map: three
    /// allocations).
    get_one_reads_peer: bool,
}

impl App {
    pub(super) fn new(
        router: Router,
        get_one: BoxCloneSyncService<Request, Response, Infallible>,
        get_one_reads_peer: bool,
    ) -> Self {
        Self { router, get_one, get_one_reads_peer }
    }

    /// The router alone (for a connection sniffed as an event stream's, whose route it is).
    pub(super) fn router(&self) -> Router {
        self.router.clone()
    }

    /// Answers `request`, which came from `peer` (never an error: the middleware turns every
    /// failure into an answer). Only the service that answers is cloned (the router is an `Arc`;
    /// the fast path's boxed service, one allocation).
    pub(super) fn answer(
        &self,
        mut request: Request,
        peer: &Peer,
    ) -> impl Future<Output = Result<Response, Infallible>> + Send + use<> {
        if is_read_of_one(&request) {
            if self.get_one_reads_peer {
                request.extensions_mut().insert(peer.clone());
            }
            Either::Left(self.get_one.clone().oneshot(request))
        } else {
            request.extensions_mut().insert(peer.clone());
            Either::Right(self.router.clone().oneshot(request))
        }
    }
}

/// The handler of the fast path, extractors and all.
pub(super) fn get_one(
    state: AppState,
) -> impl tower::Service<Request, Response = Response, Error = Infallible, Future: Send + 'static>
+ Clone
+ Send
+ Sync
+ 'static {
    super::presence::get_one.with_state(state)
}

/// A GET of one user by an id the router would hand to `get_one` unchanged.
fn is_read_of_one(request: &Request) -> bool {
    if request.method() != Method::GET {
        return false;
    }
    let Some(id) = request.uri().path().strip_prefix(PREFIX) else { return false };
    !id.is_empty() && !id.contains(['/', '%']) && !STATIC.contains(&id)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_plain_reads_of_one_user_take_the_fast_path() {
        let request = |method: Method, uri: &str| {
            Request::builder().method(method).uri(uri).body(Default::default()).unwrap()
        };
        for uri in ["/api/v2/presence/u1", "/api/v2/presence/a.b-c_d?x=1", "/api/v2/presence/batchx"] {
            assert!(is_read_of_one(&request(Method::GET, uri)), "{uri}");
        }
        for uri in [
            "/api/v2/presence/",
            "/api/v2/presence",
            "/api/v2/presence/u%31",
            "/api/v2/presence/u1/history",
            "/api/v2/presence/u1/",
            "/api/v2/presence/batch",
            "/api/v2/presence/stream",
            "/api/v2/presencex/u1",
        ] {
            assert!(!is_read_of_one(&request(Method::GET, uri)), "{uri}");
        }
        for method in [Method::HEAD, Method::PUT, Method::DELETE, Method::OPTIONS, Method::POST] {
            assert!(!is_read_of_one(&request(method, "/api/v2/presence/u1")));
        }
    }
}
