//! What the client and its connection task share: the nodes, the token provider, the device,
//! the view, the manual status, and the REST calls that need a token.

use std::{
    future::Future,
    pin::Pin,
    sync::{Arc, Mutex},
    time::Duration,
};

use hyper::Method;
use serde_json::Value;
use tokio::sync::{broadcast, watch};

use crate::{
    ConnectionState, Error, Event, Presence, Status, StatusOptions,
    rest::Rest,
    transport::{Node, Tls},
    view::View,
};

/// Gives a fresh token at each (re)connect and for each write.
pub type TokenProvider =
    Arc<dyn Fn() -> Pin<Box<dyn Future<Output = Result<String, String>> + Send>> + Send + Sync>;

/// What the client and its task share.
pub(crate) struct Shared {
    pub nodes: Vec<Node>,
    pub tls: Tls,
    pub tokens: Option<TokenProvider>,
    pub device: String,
    pub kind: String,
    pub dead_after: Duration,
    pub view: Mutex<View>,
    /// The status set with `set_status`, asserted again after each reconnect.
    pub manual: Mutex<Option<(Status, StatusOptions)>>,
    pub events: broadcast::Sender<Event>,
    pub state: watch::Sender<ConnectionState>,
    pub rest: Rest,
}

impl Shared {
    pub(crate) async fn token(&self) -> Result<String, Error> {
        let provider = self.tokens.as_ref().ok_or(Error::NoToken)?;
        provider().await.map_err(Error::Token)
    }

    /// The token's user's status, written.
    pub(crate) async fn put_status(
        &self,
        status: Status,
        options: &StatusOptions,
    ) -> Result<Presence, Error> {
        let token = self.token().await?;
        let user = subject(&token)?;
        let mut body = serde_json::to_value(options).map_err(|e| Error::Protocol(e.to_string()))?;
        body["status"] = serde_json::to_value(status).map_err(|e| Error::Protocol(e.to_string()))?;
        let path = format!("/api/v2/presence/{user}");
        entry(self.rest.call(Method::PUT, &path, (Some(&token), Some(&body))).await?, &user)
    }

    pub(crate) fn set_state(&self, state: ConnectionState) {
        if self.state.send_replace(state) != state {
            let _ = self.events.send(Event::State(state));
        }
    }
}

/// `user`'s presence in a `{"success", "data": {user: presence}}` answer.
pub(crate) fn entry(mut answer: Value, user: &str) -> Result<Presence, Error> {
    let presence = answer["data"].get_mut(user).map(Value::take);
    let presence = presence.ok_or_else(|| Error::Protocol(format!("no entry for {user}")))?;
    serde_json::from_value(presence).map_err(|e| Error::Protocol(e.to_string()))
}

/// The `sub` of a JWT (not checked here: the node does).
fn subject(token: &str) -> Result<String, Error> {
    use base64_url::decode;
    let payload = token.split('.').nth(1).ok_or_else(|| Error::Token("not a JWT".into()))?;
    let claims: Value =
        serde_json::from_slice(&decode(payload)?).map_err(|_| Error::Token("not a JWT".into()))?;
    claims["sub"].as_str().map(String::from).ok_or_else(|| Error::Token("no `sub` in the token".into()))
}

/// base64url without padding, as JWTs write it.
mod base64_url {
    pub(super) fn decode(text: &str) -> Result<Vec<u8>, crate::Error> {
        let value = |c: u8| match c {
            b'A'..=b'Z' => Some(c - b'A'),
            b'a'..=b'z' => Some(c - b'a' + 26),
            b'0'..=b'9' => Some(c - b'0' + 52),
            b'-' => Some(62),
            b'_' => Some(63),
            _ => None,
        };
        let mut out = Vec::with_capacity(text.len() * 3 / 4);
        let (mut bits, mut count) = (0u32, 0);
        for c in text.trim_end_matches('=').bytes() {
            bits = (bits << 6) | u32::from(value(c).ok_or_else(|| crate::Error::Token("not a JWT".into()))?);
            count += 6;
            if count >= 8 {
                count -= 8;
                out.push((bits >> count) as u8);
            }
        }
        Ok(out)
    }
}
