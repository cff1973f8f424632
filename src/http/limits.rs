//! Rate limits (governor, GCRA): reads per client IP, writes per user. Over the limit a request
//! gets 429 with `Retry-After` and the JSON envelope.

use std::{net::IpAddr, num::NonZeroU32, time::Duration};

use axum::{
    extract::{ConnectInfo, FromRequestParts},
    http::{HeaderMap, request::Parts},
};
use governor::{
    DefaultKeyedRateLimiter, Quota, RateLimiter,
    clock::{Clock, DefaultClock},
};

use super::{ApiError, AppState, listener::ClientAddr};
use crate::{config::RateLimitConfig, telemetry::metrics::RateLabels};

pub(crate) struct RateLimits {
    reads: Option<DefaultKeyedRateLimiter<IpAddr>>,
    writes: Option<DefaultKeyedRateLimiter<String>>,
    trust_forwarded_for: bool,
}

fn quota(per_second: u32, burst: u32) -> Quota {
    let nz = |n: u32| NonZeroU32::new(n.max(1)).expect("at least 1");
    Quota::per_second(nz(per_second)).allow_burst(nz(burst))
}

impl RateLimits {
    pub(crate) fn new(config: &RateLimitConfig) -> Self {
        let enabled = config.enabled;
        Self {
            reads: enabled.then(|| RateLimiter::keyed(quota(config.reads_per_second, config.read_burst))),
            writes: enabled.then(|| RateLimiter::keyed(quota(config.writes_per_second, config.write_burst))),
            trust_forwarded_for: config.trust_forwarded_for,
        }
    }

    /// A write by `user`: Ok, or the 429 to answer.
    pub(crate) fn check_write(&self, user: &str) -> Result<(), ApiError> {
        let Some(limiter) = &self.writes else { return Ok(()) };
        limiter
            .check_key(&user.to_string())
            .map_err(|not_until| too_many(not_until.wait_time_from(DefaultClock::default().now())))
    }

    /// Forgets keys that are back at full burst, so the maps do not grow without bound.
    pub(crate) fn retain_recent(&self) {
        if let Some(l) = &self.reads {
            l.retain_recent();
        }
        if let Some(l) = &self.writes {
            l.retain_recent();
        }
    }

    fn client_ip(&self, headers: &HeaderMap, peer: IpAddr) -> IpAddr {
        if !self.trust_forwarded_for {
            return peer;
        }
        headers
            .get("x-forwarded-for")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.split(',').next())
            .and_then(|ip| ip.trim().parse().ok())
            .unwrap_or(peer)
    }
}

fn too_many(wait: Duration) -> ApiError {
    ApiError::TooManyRequests(wait.as_secs_f64().ceil().max(1.0) as u64)
}

/// Proof that a read passed the per-IP limit: an extractor, so that a handler's signature says it
/// is limited, with no middleware on the hot path.
pub(crate) struct ReadLimited;

impl FromRequestParts<AppState> for ReadLimited {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let Some(limiter) = &state.limits.reads else { return Ok(ReadLimited) };
        let Some(ConnectInfo(ClientAddr(peer))) = parts.extensions.get::<ConnectInfo<ClientAddr>>() else {
            return Ok(ReadLimited);
        };
        let ip = state.limits.client_ip(&parts.headers, peer.ip());
        limiter.check_key(&ip).map(|_| ReadLimited).map_err(|not_until| {
            state.metrics.rate_limited.get_or_create(&RateLabels { kind: "read" }).inc();
            too_many(not_until.wait_time_from(DefaultClock::default().now()))
        })
    }
}
