//! `presence watch --url URL alice bob`, a tail of presence changes: follows users from a
//! terminal over the node's Server-Sent Events stream, one line per change. It reconnects by itself (with
//! `Last-Event-ID`, so that nothing is missed) until interrupted.

use std::{path::Path, sync::Arc, time::Duration};

use anyhow::{Context, bail};
use bytes::{Buf, BytesMut};
use chrono::{SecondsFormat, Utc};
use http_body_util::{BodyExt, Empty};
use hyper::{Request, body::Bytes, header};
use hyper_util::rt::TokioIo;
use rustls_pki_types::{CertificateDer, pem::PemObject};
use serde::Deserialize;
use tokio::{io::AsyncWriteExt, net::TcpStream};

/// How long to wait before reconnecting after the stream broke.
const RECONNECT_AFTER: Duration = Duration::from_secs(1);

/// Where to connect and whom to follow.
#[derive(Debug)]
pub struct Tail {
    /// `http://host:port` or `https://host:port`.
    pub url: String,
    pub users: Vec<String>,
    /// The CA bundle that signed an HTTPS node's certificate.
    pub ca: Option<std::path::PathBuf>,
}

/// One event of the stream.
#[derive(Debug, Default, PartialEq)]
struct Event {
    name: String,
    id: Option<String>,
    data: String,
}

#[derive(Deserialize)]
struct Snapshot {
    data: std::collections::BTreeMap<String, Presence>,
}

#[derive(Deserialize)]
struct Changes {
    changes: Vec<ChangeLine>,
}

#[derive(Deserialize)]
struct ChangeLine {
    kind: String,
    presence: Presence,
}

#[derive(Deserialize)]
struct Presence {
    user_id: String,
    status: String,
    message: Option<String>,
    last_seen: Option<String>,
    updated_at: Option<String>,
}

/// The columns of a presence line: user, status, last seen, updated, then message and notes.
struct Columns {
    user: usize,
}

/// The widest status (`offline`) and an RFC 3339 time with milliseconds.
const STATUS_WIDTH: usize = 7;
const TIME_WIDTH: usize = 24;

impl Columns {
    fn header(&self) -> String {
        self.row("USER", "STATUS", "LAST SEEN", "UPDATED", "MESSAGE")
    }

    fn row(&self, user: &str, status: &str, last_seen: &str, updated: &str, rest: &str) -> String {
        let width = self.user;
        let row = format!(
            "{user:<width$}  {status:<STATUS_WIDTH$}  {last_seen:<TIME_WIDTH$}  {updated:<TIME_WIDTH$}  {rest}"
        );
        row.trim_end().to_string()
    }

    fn presence(&self, p: &Presence, note: &str) -> String {
        let message = p.message.as_deref().map(|m| format!("{m:?}")).unwrap_or_default();
        let rest = [message.as_str(), note].iter().filter(|s| !s.is_empty()).cloned().collect::<Vec<_>>();
        let (seen, updated) = (p.last_seen.as_deref().unwrap_or("-"), p.updated_at.as_deref().unwrap_or("-"));
        self.row(&p.user_id, &p.status, seen, updated, &rest.join("  "))
    }
}

impl Tail {
    /// Follows the users until the process is interrupted, writing lines to `out`.
    pub async fn run(&self, out: &mut (impl tokio::io::AsyncWrite + Unpin)) -> anyhow::Result<()> {
        let target = Target::parse(&self.url, self.ca.as_deref())?;
        let columns = Columns { user: self.users.iter().map(String::len).max().unwrap_or(0).max(4) };
        out.write_all(format!("{}\n", columns.header()).as_bytes()).await?;
        let mut last_id: Option<String> = None;
        let mut connected_once = false;
        loop {
            match self.follow(&target, &columns, &mut last_id, out).await {
                Ok(()) => line(out, "-- the node ended the stream; reconnecting").await?,
                Err(e) if !connected_once && last_id.is_none() => return Err(e),
                Err(e) => line(out, &format!("-- {e:#}; reconnecting")).await?,
            }
            connected_once = true;
            tokio::time::sleep(RECONNECT_AFTER).await;
        }
    }

    /// One connection: the request, then events until the stream ends.
    async fn follow(
        &self,
        target: &Target,
        columns: &Columns,
        last_id: &mut Option<String>,
        out: &mut (impl tokio::io::AsyncWrite + Unpin),
    ) -> anyhow::Result<()> {
        let path = format!("/api/v2/presence/stream?users={}", self.users.join(","));
        let mut request = Request::get(path)
            .header(header::HOST, target.authority.as_str())
            .header(header::ACCEPT, "text/event-stream");
        if let Some(id) = last_id.as_deref() {
            request = request.header("last-event-id", id);
        }
        let request = request.body(Empty::<Bytes>::new())?;
        let mut response = target.send(request).await?;
        let status = response.status();
        if !status.is_success() {
            let body = response.into_body().collect().await.map(|b| b.to_bytes()).unwrap_or_default();
            let error = serde_json::from_slice::<serde_json::Value>(&body)
                .ok()
                .and_then(|v| v["error"].as_str().map(str::to_string))
                .unwrap_or_else(|| String::from_utf8_lossy(&body).into_owned());
            bail!("the node answered {status}: {error}");
        }
        let mut buffer = BytesMut::new();
        while let Some(frame) = response.body_mut().frame().await {
            let frame = frame.context("the stream broke")?;
            let Ok(data) = frame.into_data() else { continue };
            buffer.extend_from_slice(&data);
            while let Some(event) = next_event(&mut buffer) {
                if let Some(id) = &event.id {
                    *last_id = Some(id.clone());
                }
                for text in render(columns, &event) {
                    line(out, &text).await?;
                }
            }
        }
        Ok(())
    }
}

/// The lines an event prints: a presence with its own times, or a notice.
fn render(columns: &Columns, event: &Event) -> Vec<String> {
    let show = |p: &Presence, note: &str| columns.presence(p, note);
    match event.name.as_str() {
        "snapshot" => match serde_json::from_str::<Snapshot>(&event.data) {
            Ok(s) => s.data.values().map(|p| show(p, "")).collect(),
            Err(_) => vec![format!("-- unreadable snapshot: {}", event.data)],
        },
        "change" => match serde_json::from_str::<Changes>(&event.data) {
            Ok(c) => c
                .changes
                .iter()
                .map(|c| match c.kind.as_str() {
                    "expire" => show(&c.presence, "(expired)"),
                    "erase" => columns.row(&c.presence.user_id, "erased", "-", "-", ""),
                    _ => show(&c.presence, ""),
                })
                .collect(),
            Err(_) => vec![format!("-- unreadable change: {}", event.data)],
        },
        "stale" => vec!["-- the node lost its link to NATS: changes may arrive late".into()],
        "fresh" => vec!["-- the node is caught up again".into()],
        "closed" => vec![format!("-- the node closed the stream: {}", event.data)],
        _ => Vec::new(),
    }
}

/// Writes a line; a notice (`-- ...`) says when it happened, a presence has its own times.
async fn line(out: &mut (impl tokio::io::AsyncWrite + Unpin), text: &str) -> anyhow::Result<()> {
    let text = match text.strip_prefix("-- ") {
        Some(notice) => format!("-- {}  {notice}", Utc::now().to_rfc3339_opts(SecondsFormat::Millis, true)),
        None => text.to_string(),
    };
    out.write_all(format!("{text}\n").as_bytes()).await?;
    out.flush().await?;
    Ok(())
}

/// Takes one complete event (up to a blank line) off the front of `buffer`.
fn next_event(buffer: &mut BytesMut) -> Option<Event> {
    loop {
        let text = std::str::from_utf8(buffer).ok()?;
        let normalized = text.contains('\r');
        let end = if normalized {
            text.find("\r\n\r\n").map(|i| (i, 4))
        } else {
            text.find("\n\n").map(|i| (i, 2))
        };
        let (at, len) = end?;
        let block = text[..at].to_string();
        buffer.advance(at + len);
        let mut event = Event { name: "message".into(), ..Event::default() };
        let mut data = Vec::new();
        for raw in block.lines() {
            let (field, value) = raw.split_once(':').unwrap_or((raw, ""));
            let value = value.strip_prefix(' ').unwrap_or(value);
            match field {
                "event" => event.name = value.to_string(),
                "id" => event.id = Some(value.to_string()),
                "data" => data.push(value),
                _ => {}
            }
        }
        if data.is_empty() {
            continue; // a comment (keep-alive)
        }
        event.data = data.join("\n");
        return Some(event);
    }
}

/// The node to connect to.
struct Target {
    host: String,
    port: u16,
    authority: String,
    tls: Option<(tokio_rustls::TlsConnector, rustls_pki_types::ServerName<'static>)>,
}

impl Target {
    fn parse(url: &str, ca: Option<&Path>) -> anyhow::Result<Self> {
        let (scheme, rest) = url.split_once("://").context("--url must start with http:// or https://")?;
        let authority = rest.trim_end_matches('/').to_string();
        anyhow::ensure!(
            !authority.is_empty() && !authority.contains('/'),
            "--url must be scheme://host[:port]"
        );
        let (host, port) = match authority.rsplit_once(':') {
            Some((h, p)) if !h.ends_with(']') || authority.starts_with('[') => {
                (h.trim_matches(['[', ']']).to_string(), p.parse().context("--url: bad port")?)
            }
            _ => (authority.clone(), if scheme == "https" { 443 } else { 80 }),
        };
        let tls = match scheme {
            "http" => None,
            "https" => {
                let ca =
                    ca.context("an https:// node needs --ca, the CA bundle that signed its certificate")?;
                let mut roots = rustls::RootCertStore::empty();
                let certs = CertificateDer::pem_file_iter(ca)
                    .with_context(|| format!("cannot read {}", ca.display()))?;
                for cert in certs {
                    roots.add(cert.context("--ca: not a PEM certificate bundle")?)?;
                }
                let config =
                    rustls::ClientConfig::builder().with_root_certificates(roots).with_no_client_auth();
                let name = rustls_pki_types::ServerName::try_from(host.clone()).context("--url: bad host")?;
                Some((tokio_rustls::TlsConnector::from(Arc::new(config)), name))
            }
            _ => bail!("--url must start with http:// or https://"),
        };
        Ok(Self { host, port, authority, tls })
    }

    async fn send(
        &self,
        request: Request<Empty<Bytes>>,
    ) -> anyhow::Result<hyper::Response<hyper::body::Incoming>> {
        let tcp = TcpStream::connect((self.host.as_str(), self.port))
            .await
            .with_context(|| format!("cannot connect to {}", self.authority))?;
        match &self.tls {
            None => exchange(TokioIo::new(tcp), request).await,
            Some((connector, name)) => {
                let stream = connector.connect(name.clone(), tcp).await.context("TLS handshake failed")?;
                exchange(TokioIo::new(stream), request).await
            }
        }
    }
}

async fn exchange<IO>(
    io: IO,
    request: Request<Empty<Bytes>>,
) -> anyhow::Result<hyper::Response<hyper::body::Incoming>>
where
    IO: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
{
    let (mut sender, connection) = hyper::client::conn::http1::handshake(io).await?;
    tokio::spawn(connection);
    Ok(sender.send_request(request).await?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_are_read_off_the_stream_whole_and_comments_skipped() {
        let mut buffer =
            BytesMut::from(": keep-alive\n\nevent: change\nid: ab-3\ndata: {\"changes\":[]}\n\nevent: sta");
        let event = next_event(&mut buffer).unwrap();
        assert_eq!(
            event,
            Event { name: "change".into(), id: Some("ab-3".into()), data: "{\"changes\":[]}".into() }
        );
        assert_eq!(next_event(&mut buffer), None, "an event still arriving waits");
        buffer.extend_from_slice(b"le\ndata: {}\n\n");
        assert_eq!(next_event(&mut buffer).unwrap().name, "stale");
    }

    #[test]
    fn changes_print_one_aligned_line_each_with_the_presences_own_times() {
        let t = "2026-12-05T08:00:00.000Z";
        let data = format!(
            r#"{{"changes":[{{"user_id":"a","kind":"update","presence":{{"user_id":"a","status":"busy","message":"Call","last_seen":"{t}","updated_at":"{t}"}},"revision":4}},{{"user_id":"bob","kind":"expire","presence":{{"user_id":"bob","status":"offline","updated_at":"{t}"}},"revision":5}},{{"user_id":"c","kind":"erase","presence":{{"user_id":"c","status":"offline"}},"revision":6}}]}}"#
        );
        let event = Event { name: "change".into(), id: None, data };
        let columns = Columns { user: 4 };
        let lines = render(&columns, &event);
        assert_eq!(
            lines,
            vec![
                format!("a     busy     {t}  {t}  \"Call\""),
                format!("bob   offline  -                         {t}  (expired)"),
                "c     erased   -                         -".to_string(),
            ]
        );
        let header = columns.header();
        assert_eq!(header.find("STATUS"), lines[0].find("busy"), "aligned under the header");
        assert_eq!(header.find("UPDATED"), lines[1].rfind(t), "{header}\n{}", lines[1]);
    }
}
