//! The HTTP listener: accepts TCP connections within the caps (`service.max_connections` in all,
//! `service.max_connections_per_ip` per client address), counts them for `/metrics`, and tracks
//! when each last moved a byte (for the idle timeout). A connection over a cap gets a JSON 503
//! (all full) or 429 (too many from that address) and is closed, without reaching hyper.

use std::{
    collections::HashMap,
    io,
    net::{IpAddr, Ipv6Addr, SocketAddr},
    pin::Pin,
    sync::{
        Arc, Mutex,
        atomic::{AtomicU64, AtomicUsize, Ordering::Relaxed},
    },
    task::{Context, Poll},
    time::Duration,
};

use ipnet::IpNet;
use prometheus_client::metrics::gauge::Gauge;
use tokio::{
    io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf},
    net::{TcpListener, TcpStream},
    time::Instant,
};
use tokio_util::sync::CancellationToken;

use crate::telemetry::{Metrics, metrics::ReasonLabels};

/// What the per-address limits (reads, connections, streams) count as one client: an IPv4
/// address, or an IPv6 /64, the block one subscriber is given, in which a host has 2^64
/// addresses to rotate through.
pub(crate) fn client_network(ip: IpAddr) -> IpAddr {
    match ip.to_canonical() {
        IpAddr::V6(v6) => IpAddr::V6(Ipv6Addr::from(u128::from(v6) & !(u128::from(u64::MAX)))),
        v4 => v4,
    }
}

/// What a request knows of its connection, in its extensions: one value, inserted once per
/// request by `server::serve` (each insertion is an allocation and a map insert on every GET).
#[derive(Debug, Clone)]
pub(crate) struct Peer {
    /// The peer's address (behind proxies, the nearest one's: `limits` finds the client).
    pub addr: SocketAddr,
    /// Over TLS in this process or not (`http::transport` decides what a plain request may do).
    pub tls: bool,
    /// Closes the connection when cancelled: a live stream whose client stopped reading cannot
    /// be ended from inside its response.
    pub closer: CancellationToken,
}

impl<S: Send + Sync> axum::extract::FromRequestParts<S> for Peer {
    type Rejection = super::ApiError;

    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        _: &S,
    ) -> Result<Self, Self::Rejection> {
        parts.extensions.get::<Peer>().cloned().ok_or(super::ApiError::Internal)
    }
}

/// The most a connection's read buffer holds: room for the longest request head we accept (a
/// URI of up to 64 KiB plus headers), and no more.
pub(crate) const MAX_READ_BUFFER: usize = 128 * 1024;

/// The per-connection limits.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Timeouts {
    pub header: Duration,
    pub idle: Duration,
}

/// The connection caps.
#[derive(Debug, Clone)]
pub(crate) struct Caps {
    pub total: usize,
    pub per_ip: usize,
    /// Addresses the per-IP cap does not apply to: the trusted proxies, whose one address stands
    /// for many clients.
    pub exempt: Vec<IpNet>,
}

pub(crate) struct CountingListener {
    inner: TcpListener,
    caps: Caps,
    open: Gauge,
    metrics: Arc<Metrics>,
    counts: Arc<Counts>,
    epoch: Instant,
}

/// Open connections, in all and by peer address.
#[derive(Default)]
struct Counts {
    total: AtomicUsize,
    per_ip: Mutex<HashMap<IpAddr, usize>>,
}

impl CountingListener {
    pub(crate) fn new(inner: TcpListener, caps: Caps, metrics: Arc<Metrics>) -> Self {
        let open = metrics.open_connections.clone();
        Self { inner, caps, open, metrics, counts: Arc::default(), epoch: Instant::now() }
    }

    /// The next connection within the caps.
    pub(crate) async fn accept(&mut self) -> (CountedStream, SocketAddr) {
        loop {
            let (stream, peer) = match self.inner.accept().await {
                Ok(accepted) => accepted,
                // Out of file descriptors and the like: back off briefly, as axum's own listener does.
                Err(e) => {
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            };
            let _ = stream.set_nodelay(true);
            match self.admit(peer.ip()) {
                Ok(ip) => {
                    self.open.inc();
                    let activity = Arc::new(AtomicU64::new(0));
                    let counted = CountedStream {
                        inner: stream,
                        open: self.open.clone(),
                        counts: self.counts.clone(),
                        ip,
                        epoch: self.epoch,
                        activity,
                    };
                    counted.touch();
                    return (counted, peer);
                }
                Err(refusal) => {
                    self.metrics
                        .http_connections_refused
                        .get_or_create(&ReasonLabels { reason: refusal.reason })
                        .inc();
                    tokio::spawn(refusal.answer(stream));
                }
            }
        }
    }

    /// Takes a slot for a connection from `ip`: which per-IP slot it holds (none if exempt).
    fn admit(&self, ip: IpAddr) -> Result<Option<IpAddr>, Refusal> {
        let ip = ip.to_canonical();
        if self.counts.total.fetch_add(1, Relaxed) >= self.caps.total {
            self.counts.total.fetch_sub(1, Relaxed);
            return Err(Refusal {
                reason: "total",
                status: "503 Service Unavailable",
                error: "too many connections",
            });
        }
        if self.caps.exempt.iter().any(|net| net.contains(&ip)) {
            return Ok(None);
        }
        let ip = client_network(ip);
        let mut per_ip = self.counts.per_ip.lock().expect("connection counts lock");
        let count = per_ip.entry(ip).or_insert(0);
        if *count >= self.caps.per_ip {
            drop(per_ip);
            self.counts.total.fetch_sub(1, Relaxed);
            return Err(Refusal {
                reason: "per_ip",
                status: "429 Too Many Requests",
                error: "too many connections from this address",
            });
        }
        *count += 1;
        Ok(Some(ip))
    }
}

/// A connection turned away, and the answer it gets.
struct Refusal {
    reason: &'static str,
    status: &'static str,
    error: &'static str,
}

impl Refusal {
    /// Writes a JSON error and closes, reading what the client sent meanwhile so that the close
    /// is not a reset that could swallow the answer. At most a second of work.
    async fn answer(self, mut stream: TcpStream) {
        let body = serde_json::json!({"success": false, "error": self.error}).to_string();
        let response = format!(
            "HTTP/1.1 {}\r\ncontent-type: application/json\r\ncontent-length: {}\r\nretry-after: 1\r\n\
             connection: close\r\n\r\n{body}",
            self.status,
            body.len()
        );
        let _ = tokio::time::timeout(Duration::from_secs(1), async {
            stream.write_all(response.as_bytes()).await?;
            stream.shutdown().await?;
            let mut sink = [0u8; 4096];
            while stream.read(&mut sink).await? > 0 {}
            io::Result::Ok(())
        })
        .await;
    }
}

/// An admitted connection: counted out of the gauge and the caps when dropped, and stamped with
/// the time of its last byte in or out.
pub(crate) struct CountedStream {
    inner: TcpStream,
    open: Gauge,
    counts: Arc<Counts>,
    ip: Option<IpAddr>,
    epoch: Instant,
    activity: Arc<AtomicU64>,
}

/// When a connection last moved a byte.
#[derive(Clone)]
pub(crate) struct Activity {
    epoch: Instant,
    last_ms: Arc<AtomicU64>,
}

impl Activity {
    pub(crate) fn last(&self) -> Instant {
        self.epoch + Duration::from_millis(self.last_ms.load(Relaxed))
    }

    /// Completes once the connection has moved no byte for `limit`.
    pub(crate) async fn idle(&self, limit: Duration) {
        loop {
            let deadline = self.last() + limit;
            if Instant::now() >= deadline {
                return;
            }
            tokio::time::sleep_until(deadline).await;
        }
    }
}

impl CountedStream {
    pub(crate) fn activity(&self) -> Activity {
        Activity { epoch: self.epoch, last_ms: self.activity.clone() }
    }

    /// The bytes that have arrived, without taking them (waits for the first).
    pub(crate) async fn peek(&self, buf: &mut [u8]) -> io::Result<usize> {
        self.inner.peek(buf).await
    }

    fn touch(&self) {
        self.activity.store(self.epoch.elapsed().as_millis() as u64, Relaxed);
    }

    fn moved<T>(&self, poll: Poll<io::Result<T>>) -> Poll<io::Result<T>> {
        if matches!(poll, Poll::Ready(Ok(_))) {
            self.touch();
        }
        poll
    }
}

impl Drop for CountedStream {
    fn drop(&mut self) {
        self.open.dec();
        self.counts.total.fetch_sub(1, Relaxed);
        if let Some(ip) = self.ip {
            let mut per_ip = self.counts.per_ip.lock().expect("connection counts lock");
            if let Some(count) = per_ip.get_mut(&ip) {
                *count -= 1;
                if *count == 0 {
                    per_ip.remove(&ip);
                }
            }
        }
    }
}

impl AsyncRead for CountedStream {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let poll = Pin::new(&mut self.inner).poll_read(cx, buf);
        self.moved(poll)
    }
}

impl AsyncWrite for CountedStream {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        let poll = Pin::new(&mut self.inner).poll_write(cx, buf);
        self.moved(poll)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let poll = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        self.moved(poll)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_ipv6_client_is_its_64_and_an_ipv4_client_its_address() {
        let network = |ip: &str| client_network(ip.parse().unwrap()).to_string();
        assert_eq!(network("2001:db8:1:2:aaaa:bbbb:cccc:dddd"), "2001:db8:1:2::");
        assert_eq!(network("2001:db8:1:2::1"), network("2001:db8:1:2:ffff::9"));
        assert_ne!(network("2001:db8:1:2::1"), network("2001:db8:1:3::1"));
        assert_eq!(network("203.0.113.5"), "203.0.113.5");
        assert_eq!(network("::ffff:203.0.113.5"), "203.0.113.5", "a mapped IPv4 address is IPv4");
    }
}
