//! HTTPS enforcement (docs/security.md, "HTTPS"). With `service.tls` in `direct` mode every connection is
//! TLS and every answer carries `Strict-Transport-Security`. In `proxy` mode a TLS-terminating
//! proxy in front says how the client came in (`Forwarded: proto=` or `X-Forwarded-Proto`), and
//! it is believed only from `service.tls.trusted_proxies`: a request that did not arrive over
//! HTTPS gets 403, never a redirect (the request, and any token in it, already crossed in clear).
//! A request straight from this machine's loopback never crossed a network and passes. Without
//! `service.tls` the port is loopback-only (the configuration insists) and plain HTTP is fine.

use std::{net::IpAddr, sync::Arc};

use axum::{
    extract::{Request, State},
    http::{HeaderMap, HeaderValue, header},
    middleware::Next,
    response::{IntoResponse, Response},
};
use ipnet::IpNet;

use super::{ApiError, listener::Peer};
use crate::config::{ServiceConfig, TlsMode};

/// What the node requires of a request's transport.
#[derive(Debug, Clone)]
pub(crate) struct HttpsPolicy {
    /// The HSTS value of HTTPS answers (none when `service.tls.hsts` is empty or without TLS).
    hsts: Option<HeaderValue>,
    /// Proxy mode: the proxies believed about the client's scheme.
    proxies: Option<Vec<IpNet>>,
}

impl HttpsPolicy {
    /// The policy of `service.tls`; none without it (a loopback-only port: nothing to enforce).
    pub(crate) fn new(service: &ServiceConfig) -> Option<Arc<Self>> {
        let tls = service.tls.as_ref()?;
        let hsts = HeaderValue::from_str(tls.hsts.trim()).ok().filter(|v| !v.is_empty());
        let proxies = (tls.mode == TlsMode::Proxy).then(|| tls.trusted_proxies.clone());
        Some(Arc::new(Self { hsts, proxies }))
    }

    /// Whether the request came over HTTPS (`Some(true)`), is allowed in plain (`Some(false)`),
    /// or must be refused (`None`).
    fn judge(&self, tls: bool, peer: Option<IpAddr>, headers: &HeaderMap) -> Option<bool> {
        if tls {
            return Some(true);
        }
        let Some(proxies) = &self.proxies else {
            // Direct mode: every connection is TLS; nothing arrives here in plain.
            return None;
        };
        let peer = peer?.to_canonical();
        if proxies.iter().any(|net| net.contains(&peer)) {
            return (forwarded_proto(headers).as_deref() == Some("https")).then_some(true);
        }
        peer.is_loopback().then_some(false)
    }
}

/// The scheme the client used, as the nearest proxy reports it: `Forwarded`'s first `proto=`,
/// else the first `X-Forwarded-Proto` value.
fn forwarded_proto(headers: &HeaderMap) -> Option<String> {
    let first = |name| headers.get(name).and_then(|v: &HeaderValue| v.to_str().ok());
    if let Some(forwarded) = first(header::FORWARDED) {
        let element = forwarded.split(',').next().unwrap_or_default();
        return element.split(';').find_map(|pair| {
            let (key, value) = pair.trim().split_once('=')?;
            key.trim()
                .eq_ignore_ascii_case("proto")
                .then(|| value.trim().trim_matches('"').to_ascii_lowercase())
        });
    }
    let proto = first(header::HeaderName::from_static("x-forwarded-proto"))?;
    Some(proto.split(',').next().unwrap_or_default().trim().to_ascii_lowercase())
}

/// The middleware: refuses what must not be served in plain, marks HTTPS answers with HSTS.
pub(crate) async fn enforce(
    State(policy): State<Arc<HttpsPolicy>>,
    request: Request,
    next: Next,
) -> Response {
    let peer = request.extensions().get::<Peer>();
    let tls = peer.is_some_and(|p| p.tls);
    let peer = peer.map(|p| p.addr.ip());
    let Some(https) = policy.judge(tls, peer, request.headers()) else {
        return ApiError::HttpsRequired.into_response();
    };
    let mut response = next.run(request).await;
    if let (true, Some(hsts)) = (https, &policy.hsts) {
        response.headers_mut().insert(header::STRICT_TRANSPORT_SECURITY, hsts.clone());
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::ServiceTls;

    fn proxy_policy() -> HttpsPolicy {
        let service = ServiceConfig {
            tls: Some(ServiceTls {
                mode: TlsMode::Proxy,
                trusted_proxies: vec!["10.0.0.0/8".parse().unwrap()],
                ..ServiceTls::default()
            }),
            ..ServiceConfig::default()
        };
        HttpsPolicy::new(&service).unwrap().as_ref().clone()
    }

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        pairs.iter().map(|(k, v)| (header::HeaderName::from_static(k), v.parse().unwrap())).collect()
    }

    #[test]
    fn a_proxy_is_believed_only_from_its_address_and_only_about_https() {
        let policy = proxy_policy();
        let proxy = Some("10.1.2.3".parse().unwrap());
        let stranger = Some("203.0.113.9".parse().unwrap());
        let https = headers(&[("x-forwarded-proto", "https")]);
        assert_eq!(policy.judge(false, proxy, &https), Some(true));
        assert_eq!(policy.judge(false, proxy, &headers(&[("x-forwarded-proto", "http")])), None);
        assert_eq!(policy.judge(false, proxy, &headers(&[])), None);
        assert_eq!(
            policy.judge(false, proxy, &headers(&[("forwarded", "for=1.2.3.4;proto=https, proto=http")])),
            Some(true)
        );
        assert_eq!(policy.judge(false, proxy, &headers(&[("forwarded", "for=1.2.3.4;proto=http")])), None);
        assert_eq!(policy.judge(false, stranger, &https), None, "a header from anyone else is not believed");
        assert_eq!(policy.judge(false, Some("127.0.0.1".parse().unwrap()), &headers(&[])), Some(false));
        assert_eq!(policy.judge(true, stranger, &headers(&[])), Some(true));
    }
}
