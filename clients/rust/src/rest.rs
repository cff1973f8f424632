//! The REST calls: reads, and writes of the token's own status. One kept-alive HTTP/1.1
//! connection per node is reused while it lasts; a node that cannot be reached gives way to the
//! next of the client's URLs.

use std::{collections::HashMap, sync::Mutex};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::{Method, Request, client::conn::http1::SendRequest, header};
use hyper_util::rt::TokioIo;
use serde::de::DeserializeOwned;
use serde_json::Value;

use crate::{
    Error,
    transport::{Node, Tls},
};

pub(crate) struct Rest {
    nodes: Vec<Node>,
    tls: Tls,
    /// An idle connection per node, by index.
    idle: Mutex<HashMap<usize, SendRequest<Full<Bytes>>>>,
}

impl Rest {
    pub(crate) fn new(nodes: Vec<Node>, tls: Tls) -> Self {
        Self { nodes, tls, idle: Mutex::default() }
    }

    /// `method path` with `body`, as `token`'s holder: the JSON answered, from the first node that
    /// answers (a refused or unreachable one gives way to the next).
    pub(crate) async fn call<T: DeserializeOwned>(
        &self,
        method: Method,
        path: &str,
        (token, body): (Option<&str>, Option<&Value>),
    ) -> Result<T, Error> {
        let mut last = Error::Closed;
        for i in 0..self.nodes.len() {
            match self.once(i, &method, path, (token, body)).await {
                Err(e @ Error::Unreachable { .. }) => last = e,
                done => return done,
            }
        }
        Err(last)
    }

    async fn once<T: DeserializeOwned>(
        &self,
        i: usize,
        method: &Method,
        path: &str,
        (token, body): (Option<&str>, Option<&Value>),
    ) -> Result<T, Error> {
        let node = &self.nodes[i];
        let mut sender = self.sender(i).await?;
        let mut request = Request::builder()
            .method(method.clone())
            .uri(path)
            .header(header::HOST, node.authority())
            .header(header::ACCEPT, "application/json");
        if let Some(token) = token {
            request = request.header(header::AUTHORIZATION, format!("Bearer {token}"));
        }
        let body = match body {
            Some(body) => {
                request = request.header(header::CONTENT_TYPE, "application/json");
                Bytes::from(body.to_string())
            }
            None => Bytes::new(),
        };
        let request = request.body(Full::new(body)).map_err(|e| Error::Url(e.to_string()))?;
        let unreachable =
            |e: hyper::Error| Error::Unreachable { url: node.base.clone(), reason: e.to_string() };
        let response = sender.send_request(request).await.map_err(unreachable)?;
        let status = response.status().as_u16();
        let bytes = response.into_body().collect().await.map_err(unreachable)?.to_bytes();
        self.idle.lock().expect("idle lock").insert(i, sender);
        if (200..300).contains(&status) {
            return serde_json::from_slice(&bytes).map_err(|e| Error::Protocol(e.to_string()));
        }
        let message = serde_json::from_slice::<Value>(&bytes)
            .ok()
            .and_then(|v| v["error"].as_str().map(String::from))
            .unwrap_or_else(|| String::from_utf8_lossy(&bytes).into_owned());
        Err(match status {
            401 => Error::Unauthorized(message),
            403 => Error::Forbidden(message),
            _ => Error::Api { status, message },
        })
    }

    /// The node's idle connection, if it still serves, or a new one.
    async fn sender(&self, i: usize) -> Result<SendRequest<Full<Bytes>>, Error> {
        let idle = self.idle.lock().expect("idle lock").remove(&i);
        if let Some(mut sender) = idle
            && sender.ready().await.is_ok()
        {
            return Ok(sender);
        }
        let node = &self.nodes[i];
        let stream = node.connect(&self.tls).await?;
        let (sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(|e| Error::Unreachable { url: node.base.clone(), reason: e.to_string() })?;
        tokio::spawn(async move {
            let _ = connection.await;
        });
        Ok(sender)
    }
}
