//! `presence watch --url URL alice bob`, a tail of presence changes: follows users from a
//! terminal through the Rust client (`clients/rust`: its reconnects, failover and revision
//! rules), one line per change (`presence.rs`); `presence watch --room ROOM` follows a room over
//! the node's Server-Sent Events stream (`room.rs`), reconnecting by itself with
//! `Last-Event-ID` (so that nothing is missed), without holding a session. Both run until
//! interrupted.

mod presence;
mod room;
mod target;

use std::time::Duration;

use anyhow::{Context, bail};
use bytes::{Buf, BytesMut};
use chrono::{SecondsFormat, Utc};
use http_body_util::{BodyExt, Empty};
use hyper::{Request, body::Bytes, header};
use tokio::io::AsyncWriteExt;

use presence::Columns;
use target::Target;

/// How long to wait before reconnecting after the stream broke.
const RECONNECT_AFTER: Duration = Duration::from_secs(1);

/// Where to connect and what to follow.
#[derive(Debug)]
pub struct Tail {
    /// `http://host:port` or `https://host:port`.
    pub url: String,
    pub follow: Follow,
    /// The CA bundle that signed an HTTPS node's certificate.
    pub ca: Option<std::path::PathBuf>,
}

/// Users' presence, or a room.
#[derive(Debug)]
pub enum Follow {
    Users(Vec<String>),
    /// A room, read with `token` (sent as `Authorization: Bearer`) unless it is public.
    Room {
        room: String,
        token: Option<String>,
    },
}

/// One event of the stream.
#[derive(Debug, Default, PartialEq)]
struct Event {
    name: String,
    id: Option<String>,
    data: String,
}

impl Tail {
    /// Follows the users until the process is interrupted, writing lines to `out`.
    pub async fn run(&self, out: &mut (impl tokio::io::AsyncWrite + Unpin)) -> anyhow::Result<()> {
        let target = Target::parse(&self.url, self.ca.as_deref())?;
        let (room, token) = match &self.follow {
            Follow::Users(users) => {
                let columns = Columns { user: users.iter().map(String::len).max().unwrap_or(0).max(4) };
                out.write_all(format!("{}\n", columns.header()).as_bytes()).await?;
                let mut client = presence_client::Client::builder().url(&self.url);
                if let Some(ca) = &self.ca {
                    client = client.ca_file(ca);
                }
                return presence::follow(client.build()?, users, &columns, out).await;
            }
            Follow::Room { room, token } => (room, token.as_deref()),
        };
        out.write_all(format!("{}\n", room::header()).as_bytes()).await?;
        let mut last_id: Option<String> = None;
        let mut connected_once = false;
        loop {
            match follow_room(&target, (room, token), &mut last_id, out).await {
                Ok(()) => line(out, "-- the node ended the stream; reconnecting").await?,
                Err(e) if !connected_once && last_id.is_none() => return Err(e),
                Err(e) => line(out, &format!("-- {e:#}; reconnecting")).await?,
            }
            connected_once = true;
            tokio::time::sleep(RECONNECT_AFTER).await;
        }
    }
}

/// One connection to a room's stream: the request, then events until the stream ends.
async fn follow_room(
    target: &Target,
    (room, token): (&str, Option<&str>),
    last_id: &mut Option<String>,
    out: &mut (impl tokio::io::AsyncWrite + Unpin),
) -> anyhow::Result<()> {
    let mut request = Request::get(format!("/api/v2/rooms/{room}/stream"))
        .header(header::HOST, target.authority.as_str())
        .header(header::ACCEPT, "text/event-stream");
    if let Some(token) = token {
        request = request.header(header::AUTHORIZATION, format!("Bearer {token}"));
    }
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
            let lines = room::render(&event);
            for text in lines.into_iter().chain(notice(&event)) {
                line(out, &text).await?;
            }
        }
    }
    Ok(())
}

/// What the stream says of itself: the node's link, its end.
fn notice(event: &Event) -> Option<String> {
    match event.name.as_str() {
        "stale" => Some("-- the node lost its link to NATS: changes may arrive late".into()),
        "fresh" => Some("-- the node is caught up again".into()),
        "closed" => Some(format!("-- the node closed the stream: {}", event.data)),
        _ => None,
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
}
