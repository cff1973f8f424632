//! Rate limits (governor, GCRA): reads per client IP, writes per user. Over the limit a request
//! gets 429 with `Retry-After` and the JSON envelope.

use std::{net::IpAddr, num::NonZeroU32, time::Duration};

use axum::{
    extract::FromRequestParts,
    http::{HeaderMap, request::Parts},
};
use governor::{
    DefaultKeyedRateLimiter, Quota, RateLimiter,
    clock::{Clock, DefaultClock},
};
use ipnet::IpNet;

use super::{
    ApiError, AppState,
    listener::{Peer, client_network},
};
use crate::{config::RateLimitConfig, model::UserId, telemetry::metrics::KindLabels};

pub(crate) struct RateLimits {
    reads: Option<DefaultKeyedRateLimiter<IpAddr>>,
    writes: Option<DefaultKeyedRateLimiter<String>>,
    /// `rate_limit.read_burst`: the most one request can be charged.
    read_burst: u32,
    trusted_proxies: Vec<IpNet>,
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
            read_burst: config.read_burst.max(1),
            trusted_proxies: config.trusted_proxies.clone(),
        }
    }

    /// Whether reads are limited per client address (and so need the connection's peer).
    pub(crate) fn limits_reads(&self) -> bool {
        self.reads.is_some()
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

    /// The client's address: the peer's, unless the peer is a trusted proxy; then the rightmost
    /// `X-Forwarded-For` entry that is not a trusted proxy (entries to its left are whatever the
    /// client chose to write).
    pub(super) fn client_ip(&self, headers: &HeaderMap, peer: IpAddr) -> IpAddr {
        let peer = peer.to_canonical();
        if !self.trusted(peer) {
            return peer;
        }
        let mut client = peer;
        let entries = headers.get_all("x-forwarded-for").iter().filter_map(|v| v.to_str().ok());
        let hops: Vec<&str> = entries.flat_map(|v| v.split(',')).collect();
        for hop in hops.iter().rev() {
            match hop.trim().parse::<IpAddr>().map(|ip| ip.to_canonical()) {
                Ok(ip) if self.trusted(ip) => client = ip,
                Ok(ip) => return ip,
                // Unreadable: believe nothing further left than the last proxy that was read.
                Err(_) => return client,
            }
        }
        client
    }

    fn trusted(&self, ip: IpAddr) -> bool {
        self.trusted_proxies.iter().any(|net| net.contains(&ip))
    }
}

/// An owner's writes, history reads and erasures share the per-user limit
/// (`rate_limit.writes_per_second`, `write_burst`).
pub(super) fn owner_limit(state: &AppState, user: &UserId) -> Result<(), ApiError> {
    state.limits.check_write(user).inspect_err(|_| {
        state.metrics.rate_limited.get_or_create(&KindLabels { kind: "write" }).inc();
    })
}

fn too_many(wait: Duration) -> ApiError {
    ApiError::TooManyRequests(wait.as_secs_f64().ceil().max(1.0) as u64)
}

/// Proof that a read passed the per-IP limit: an extractor, so that a handler's signature says it
/// is limited, with no middleware on the hot path. It holds the client's address, so that a
/// multi-user read can be charged for what it costs ([`ReadLimited::charge`]).
pub(crate) struct ReadLimited(Option<IpAddr>);

impl ReadLimited {
    /// Charges `n` more reads to the client: a multi-user read pays one per cache miss (a KV
    /// read each), so that one request cannot buy a thousand KV reads for the price of one. With
    /// the request's own read, at most the burst: a request costlier than that goes through once
    /// the client's bucket is full, rather than never.
    pub(crate) fn charge(&self, state: &AppState, n: usize) -> Result<(), ApiError> {
        let limits = &state.limits;
        let n = u32::try_from(n).unwrap_or(u32::MAX).min(limits.read_burst - 1);
        let (Some(limiter), Some(ip), Some(n)) = (&limits.reads, self.0, NonZeroU32::new(n)) else {
            return Ok(());
        };
        // Within the burst by construction, so the only refusal is "not yet".
        let Ok(Err(not_until)) = limiter.check_key_n(&ip, n) else { return Ok(()) };
        state.metrics.rate_limited.get_or_create(&KindLabels { kind: "read" }).inc();
        Err(too_many(not_until.wait_time_from(DefaultClock::default().now())))
    }
}

impl FromRequestParts<AppState> for ReadLimited {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let Some(limiter) = &state.limits.reads else { return Ok(ReadLimited(None)) };
        let Some(peer) = parts.extensions.get::<Peer>() else { return Ok(ReadLimited(None)) };
        let ip = client_network(state.limits.client_ip(&parts.headers, peer.addr.ip()));
        limiter.check_key(&ip).map(|_| ReadLimited(Some(ip))).map_err(|not_until| {
            state.metrics.rate_limited.get_or_create(&KindLabels { kind: "read" }).inc();
            too_many(not_until.wait_time_from(DefaultClock::default().now()))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{RateLimitConfig, units::parse_network};

    fn limits(trusted: &[&str]) -> RateLimits {
        let config = RateLimitConfig {
            trusted_proxies: trusted.iter().map(|t| parse_network(t).unwrap()).collect(),
            ..Default::default()
        };
        RateLimits::new(&config)
    }

    fn client(limits: &RateLimits, peer: &str, forwarded: &[&str]) -> String {
        let mut headers = HeaderMap::new();
        for value in forwarded {
            headers.append("x-forwarded-for", value.parse().unwrap());
        }
        limits.client_ip(&headers, peer.parse().unwrap()).to_string()
    }

    #[test]
    fn forwarded_for_is_believed_from_trusted_proxies_only_and_read_from_the_right() {
        let none = limits(&[]);
        assert_eq!(client(&none, "127.0.0.1", &["6.6.6.6"]), "127.0.0.1", "no proxies: ignored");
        let lb = limits(&["10.0.0.0/8", "127.0.0.1"]);
        assert_eq!(client(&lb, "192.0.2.9", &["6.6.6.6"]), "192.0.2.9", "not from a proxy: ignored");
        assert_eq!(client(&lb, "127.0.0.1", &["6.6.6.6, 203.0.113.5"]), "203.0.113.5", "rightmost untrusted");
        assert_eq!(
            client(&lb, "127.0.0.1", &["203.0.113.5, 10.1.2.3"]),
            "203.0.113.5",
            "through two proxies"
        );
        assert_eq!(client(&lb, "127.0.0.1", &["6.6.6.6", "203.0.113.5"]), "203.0.113.5", "several headers");
        assert_eq!(client(&lb, "127.0.0.1", &["10.9.9.9"]), "10.9.9.9", "all proxies: the leftmost");
        assert_eq!(
            client(&lb, "127.0.0.1", &["6.6.6.6, junk"]),
            "127.0.0.1",
            "unreadable: stop at the proxy"
        );
        assert_eq!(client(&lb, "::ffff:127.0.0.1", &["203.0.113.5"]), "203.0.113.5", "mapped IPv4 peer");
    }
}
