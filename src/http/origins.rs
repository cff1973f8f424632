//! Which browser pages may open a live stream or a WebSocket: the node's own page, at one of the
//! node's own addresses, and the origins in `service.cors.allowed_origins`. The `Host` header is
//! never trusted for this: a DNS-rebinding page (a name of the attacker's, pointed at this node)
//! sends a `Host` and an `Origin` that agree, and must not get in.

use std::net::SocketAddr;

pub(crate) struct Origins {
    /// `service.cors.allowed_origins` (`*`: any).
    allowed: Vec<String>,
    /// The node's own origins: where its page is served from.
    own: Vec<String>,
}

impl Origins {
    /// The origins of a node listening on `local` (with `https` when it serves TLS itself).
    /// Listening on loopback, or on every address, its page may be loaded from `localhost`,
    /// `127.0.0.1` or `[::1]`; on one address, from that address. Any other name (a proxy's, a
    /// DNS name of the node's) goes in `allowed_origins`.
    pub(crate) fn new(allowed: Vec<String>, local: SocketAddr, https: bool) -> Self {
        let ip = local.ip();
        let hosts = if ip.is_loopback() || ip.is_unspecified() {
            vec!["localhost".to_string(), "127.0.0.1".to_string(), "[::1]".to_string()]
        } else {
            vec![SocketAddr::new(ip, 0).to_string().trim_end_matches(":0").to_string()]
        };
        let (scheme, default_port) = if https { ("https", 443) } else { ("http", 80) };
        let port = local.port();
        let mut own: Vec<String> = hosts.iter().map(|host| format!("{scheme}://{host}:{port}")).collect();
        if port == default_port {
            own.extend(hosts.iter().map(|host| format!("{scheme}://{host}")));
        }
        Self { allowed, own }
    }

    /// `service.cors.allowed_origins`, which the REST API's CORS answers follow too.
    pub(crate) fn allowed(&self) -> &[String] {
        &self.allowed
    }

    /// Whether a page from `origin` may use the node's live streams.
    pub(crate) fn allows(&self, origin: &str) -> bool {
        let origin = origin.to_ascii_lowercase();
        self.own.contains(&origin) || self.allowed.iter().any(|allowed| allowed == "*" || *allowed == origin)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn own_addresses_and_the_list_only_never_the_host_header() {
        let loopback =
            Origins::new(vec!["https://app.example".into()], "127.0.0.1:8080".parse().unwrap(), false);
        for fine in
            ["http://127.0.0.1:8080", "http://localhost:8080", "http://[::1]:8080", "https://app.example"]
        {
            assert!(loopback.allows(fine), "{fine}");
        }
        for refused in ["http://evil.example:8080", "https://127.0.0.1:8080", "http://127.0.0.1:8081", "null"]
        {
            assert!(!loopback.allows(refused), "{refused}");
        }
        let public = Origins::new(vec![], "192.0.2.7:443".parse().unwrap(), true);
        assert!(public.allows("https://192.0.2.7") && public.allows("https://192.0.2.7:443"));
        assert!(!public.allows("https://localhost"), "not on loopback");
        let v6 = Origins::new(vec![], "[2001:db8::5]:9000".parse().unwrap(), false);
        assert!(v6.allows("http://[2001:db8::5]:9000"));
        assert!(
            Origins::new(vec!["*".into()], "127.0.0.1:1".parse().unwrap(), false)
                .allows("https://any.example")
        );
    }
}
