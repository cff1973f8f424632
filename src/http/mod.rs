//! The HTTP layer: the router, its shared state, and the middleware every request passes
//! (a tracing span and metrics per request, HTTPS enforcement, a body limit, panic catching, JSON
//! 404 and 405).

mod access;
mod auth;
mod error;
mod extract;
mod fast;
mod guard;
mod health;
mod limits;
pub(crate) mod listener;
mod observe;
pub(crate) mod openapi;
mod origins;
mod owner;
mod page;
pub(crate) mod presence;
mod reply;
mod rooms;
mod server;
mod sse;
mod stream_conn;
mod subscribe;
mod timer;
mod transport;
mod ws;

use std::{ops::Deref, sync::Arc, time::Duration};

use axum::{Router, middleware};
use tower::{ServiceBuilder, util::BoxCloneSyncService};
use tower_http::cors::{AllowOrigin, CorsLayer};

pub(crate) use access::AccessLog;
pub(crate) use auth::{Owner, Reader};
pub(crate) use error::{ApiError, ErrorResponse};
pub(crate) use fast::App;
pub(crate) use limits::RateLimits;
pub(crate) use listener::Timeouts;
pub(crate) use origins::Origins;
pub(crate) use server::serve;
pub(crate) use transport::HttpsPolicy;

use crate::{
    auth::Authenticator, directory::Directory, health::Health, live::Hub, rooms::Rooms, sessions::Sessions,
    telemetry::Metrics,
};

/// Request bodies larger than this get 413 (docs/architecture.md, "Errors and input").
pub(crate) const MAX_BODY_BYTES: usize = 16 * 1024;
/// The batch read's body limit: its largest valid request (1000 distinct ids of 128 characters,
/// about 131 KB of compact JSON) with room for some whitespace, and no more.
pub(crate) const MAX_BATCH_BODY_BYTES: usize = 144 * 1024;

/// What every handler can reach: a cheap `Clone` handle over the shared parts.
#[derive(Clone)]
pub(crate) struct AppState(Arc<Shared>);

pub(crate) struct Shared {
    /// The read and write paths.
    pub directory: Directory,
    /// The live feed: subscriptions of event streams and WebSockets.
    pub hub: Arc<Hub>,
    /// Who is in each room.
    pub rooms: Arc<Rooms>,
    /// The device sessions this node holds.
    pub sessions: Arc<Sessions>,
    /// What the node knows about itself.
    pub health: Health,
    pub auth: Authenticator,
    pub limits: RateLimits,
    pub access: AccessLog,
    pub metrics: Arc<Metrics>,
    /// `nats.kv.ttl`: the ttl of a write that names none.
    pub default_ttl: Duration,
    /// `service.body_timeout`.
    pub body_timeout: Duration,
    /// Whose pages may open live streams: the node's own and `service.cors.allowed_origins`.
    pub origins: Origins,
}

impl AppState {
    pub(crate) fn new(shared: Shared) -> Self {
        Self(Arc::new(shared))
    }
}

impl Deref for AppState {
    type Target = Shared;
    fn deref(&self) -> &Shared {
        &self.0
    }
}

/// The middleware every route passes, outermost first, in one layer: each `Router::layer` wraps
/// every route in another boxed route, cloned (an allocation) and driven on every request. A
/// macro because the stack's type is unnameable; `named` names the route for a service that no
/// router matched (the fast path).
macro_rules! middleware {
    ($state:expr, $https:expr, $named:expr) => {
        ServiceBuilder::new()
            // Outermost: it also answers a panic (`guard`), counted and logged like any answer.
            .layer(observe::ObserveLayer::new($state.clone(), $named))
            .option_layer(cors($state.origins.allowed()))
            // Without service.tls (a loopback-only port) there is nothing to enforce, and plain
            // requests do not pay for the check.
            .option_layer($https.map(|policy| middleware::from_fn_with_state(policy, transport::enforce)))
    };
}

/// The whole API with its middleware: the router, and the one route served before it
/// ([`fast`]).
pub(crate) fn router(state: AppState, https: Option<Arc<HttpsPolicy>>) -> App {
    let routes = Router::new()
        .merge(presence::routes())
        .merge(rooms::routes())
        .route("/api/v2/presence/stream", axum::routing::get(sse::stream))
        .route("/api/v2/ws", axum::routing::get(ws::upgrade))
        .merge(page::routes())
        .merge(health::routes())
        .merge(openapi::routes())
        .fallback(|| async { ApiError::NotFound("no such route".into()) })
        .method_not_allowed_fallback(|| async { ApiError::MethodNotAllowed });
    let router = routes.layer(middleware!(state, https.clone(), None)).with_state(state.clone());
    let reads_peer = https.is_some() || state.limits.limits_reads();
    let get_one = middleware!(state, https, Some(fast::ROUTE)).service(fast::get_one(state));
    App::new(router, BoxCloneSyncService::new(get_one), reads_peer)
}

/// `service.cors`: which pages may call the API from a browser (none unless configured; the
/// node's own page is same-origin and needs nothing).
fn cors(allowed: &[String]) -> Option<CorsLayer> {
    use axum::http::{HeaderName, HeaderValue, Method, header};
    if allowed.is_empty() {
        return None;
    }
    let origins = if allowed.iter().any(|o| o == "*") {
        AllowOrigin::any()
    } else {
        AllowOrigin::list(allowed.iter().filter_map(|o| HeaderValue::from_str(o).ok()))
    };
    Some(
        CorsLayer::new()
            .allow_origin(origins)
            .allow_methods([Method::GET, Method::PUT, Method::POST, Method::DELETE])
            .allow_headers([
                header::AUTHORIZATION,
                header::CONTENT_TYPE,
                HeaderName::from_static("last-event-id"),
            ])
            .expose_headers([presence::STALE_HEADER, presence::DEGRADED_HEADER, header::RETRY_AFTER])
            .max_age(Duration::from_secs(600)),
    )
}
