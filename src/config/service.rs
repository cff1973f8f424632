//! The `service`, `stream` and `sessions` sections: the node itself, its HTTP side, its live
//! streams and its device sessions, with their built-in defaults.

use std::{net::IpAddr, time::Duration};

use serde::Deserialize;

use super::units;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum NodeType {
    Center,
    Leaf,
}

impl NodeType {
    pub fn as_str(self) -> &'static str {
        match self {
            NodeType::Center => "center",
            NodeType::Leaf => "leaf",
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ServiceConfig {
    pub name: String,
    pub version: String,
    pub host: IpAddr,
    pub port: u16,
    pub node_type: NodeType,
    /// Empty means "derive one": `{node_type}-{hostname}`.
    pub node_id: String,
    pub region: Option<String>,
    /// How long in-flight requests may take to finish after SIGTERM.
    #[serde(with = "units::duration")]
    pub shutdown_timeout: Duration,
    /// How long a client may take to send a request's headers; also how long a kept-alive
    /// connection may wait for its next request.
    #[serde(with = "units::duration")]
    pub header_timeout: Duration,
    /// How long a request's body may take to arrive in full (408 after that).
    #[serde(with = "units::duration")]
    pub body_timeout: Duration,
    /// A connection that moves no byte in either direction for this long is closed.
    #[serde(with = "units::duration")]
    pub idle_timeout: Duration,
    /// Open connections in all; more are answered 503 and closed.
    pub max_connections: usize,
    /// Open connections from one client address (trusted proxies excepted); more are answered
    /// 429 and closed.
    pub max_connections_per_ip: usize,
    /// HTTPS, or the TLS-terminating proxy in front (see [`super::ServiceTls`]).
    pub tls: Option<super::ServiceTls>,
    /// Which web pages (origins) may call the API from a browser.
    pub cors: CorsConfig,
}

/// `service.cors`: the origins whose pages may call the API, the stream and the WebSocket from a
/// browser. Default: none (only the node's own page, which is same-origin).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct CorsConfig {
    /// Exact origins (`https://app.example.com`), or `*` for any.
    pub allowed_origins: Vec<String>,
}

impl CorsConfig {
    /// `*`, or a scheme (http, https) and a host, with no path.
    pub(crate) fn valid_origin(origin: &str) -> bool {
        origin == "*"
            || (origin.starts_with("http://") || origin.starts_with("https://"))
                && !origin.ends_with('/')
                && origin.split("://").nth(1).is_some_and(|host| {
                    !host.is_empty()
                        && !host.contains('/')
                        && host.is_ascii()
                        && !host.contains(char::is_whitespace)
                })
    }
}

/// `stream`: live presence (Server-Sent Events and WebSocket).
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct StreamConfig {
    /// Changes for one client within this window after a message go out together, at its end.
    #[serde(with = "units::duration")]
    pub batch_window: Duration,
    /// Open streams on this node; more are answered 503.
    pub max_connections: usize,
    /// Open streams from one client address; more are answered 429.
    pub max_connections_per_ip: usize,
    /// A client that leaves changes unread for this long is disconnected.
    #[serde(with = "units::duration")]
    pub write_timeout: Duration,
    /// A comment (SSE) or a ping (WebSocket) this often keeps an idle stream open; a WebSocket
    /// peer that answers no ping within two of these is dropped.
    #[serde(with = "units::duration")]
    pub keep_alive: Duration,
    /// The newest changes this node keeps for clients that reconnect with `Last-Event-ID`.
    pub resume_buffer: usize,
    /// Messages a WebSocket client may send per second, on average (pings and text alike).
    pub messages_per_second: usize,
    /// The most it may send at once; a client refused this many messages in a row is closed.
    pub message_burst: usize,
}

impl Default for StreamConfig {
    fn default() -> Self {
        Self {
            batch_window: Duration::from_millis(50),
            max_connections: 10_000,
            max_connections_per_ip: 100,
            write_timeout: Duration::from_secs(10),
            keep_alive: Duration::from_secs(15),
            resume_buffer: 10_000,
            messages_per_second: 20,
            message_burst: 40,
        }
    }
}

/// `sessions`: presence that follows connections (docs/sessions.md, "Sessions").
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SessionsConfig {
    /// A device with no `activity` for this long is idle; a user whose devices are all idle
    /// reads `away`.
    #[serde(with = "units::duration")]
    pub idle_after: Duration,
    /// How long a session that ended without a close frame is kept: a device that reconnects
    /// within it continues its session and nobody sees a change.
    #[serde(with = "units::duration")]
    pub grace: Duration,
    /// A node not heard from for this long (then the grace) is taken for dead: the sessions it
    /// held end.
    #[serde(with = "units::duration")]
    pub node_timeout: Duration,
    /// Devices one user may have connected at once; a further `hello` is refused.
    pub max_devices: usize,
    /// The least time between two record writes a user's sessions cause at this node: the
    /// transitions in between are coalesced into the next write, which says where they ended.
    #[serde(with = "units::duration")]
    pub write_interval: Duration,
}

impl Default for SessionsConfig {
    fn default() -> Self {
        Self {
            idle_after: Duration::from_secs(600),
            grace: Duration::from_secs(15),
            node_timeout: Duration::from_secs(30),
            max_devices: 10,
            write_interval: Duration::from_millis(500),
        }
    }
}

impl Default for ServiceConfig {
    fn default() -> Self {
        Self {
            name: "presence-service".into(),
            version: "v2".into(),
            host: IpAddr::from([127, 0, 0, 1]),
            port: 8080,
            node_type: NodeType::Center,
            node_id: String::new(),
            region: None,
            shutdown_timeout: Duration::from_secs(10),
            header_timeout: Duration::from_secs(10),
            body_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(60),
            max_connections: 10_000,
            max_connections_per_ip: 256,
            tls: None,
            cors: CorsConfig::default(),
        }
    }
}
