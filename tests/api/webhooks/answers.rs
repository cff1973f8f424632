//! How an endpoint's answers are taken: a `Retry-After` longer than the schedule's wait is
//! honoured; a redirect is not followed (the event is tried again at the same URL, after the
//! schedule); no answer within 15 s is a failure, tried again; HTTPS reaches an endpoint whose CA
//! is given in `ca_file`, and not one whose certificate the system's roots do not know.

use std::{convert::Infallible, sync::Arc, time::Duration};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::{Request, Response, body::Incoming, service::service_fn};
use hyper_util::rt::TokioIo;
use presence::config::WebhookConfig;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, pem::PemObject};
use tokio::net::TcpListener;

use super::{
    delivery::{SECOND, endpoint, events_when, header},
    *,
};
use crate::helpers::{Pki, TestApp, eventually};

/// How a receiver answers one request: its status, a header, and how long it holds the answer back.
pub(super) struct Reply {
    pub status: u16,
    pub header: Option<(&'static str, String)>,
    pub hold: Duration,
}

impl Reply {
    pub(super) fn status(status: u16) -> Self {
        Self { status, header: None, hold: Duration::ZERO }
    }
}

/// The receiver's answer to its `n`th request (from 0).
pub(super) type Script = Arc<dyn Fn(usize) -> Reply + Send + Sync>;

/// A receiver on a free loopback port (over TLS with `tls`) until the test ends: its URL (`scheme`)
/// and what it got.
pub(super) async fn answering(
    scheme: &str,
    tls: Option<tokio_rustls::TlsAcceptor>,
    script: Script,
) -> (String, Received) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("{scheme}://{}/hook", listener.local_addr().unwrap());
    let got: Received = Arc::default();
    let seen = got.clone();
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let (got, script, tls) = (seen.clone(), script.clone(), tls.clone());
            let service = service_fn(move |request: Request<Incoming>| {
                let (got, script) = (got.clone(), script.clone());
                async move {
                    let mut headers: Vec<(String, String)> = request
                        .headers()
                        .iter()
                        .map(|(k, v)| (k.to_string(), v.to_str().unwrap().to_string()))
                        .collect();
                    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap();
                    headers.push((RECEIVED_AT.into(), now.as_micros().to_string()));
                    let body = request.into_body().collect().await.map(|b| b.to_bytes()).unwrap_or_default();
                    let n = {
                        let mut got = got.lock().unwrap();
                        got.push((headers, String::from_utf8_lossy(&body).into_owned()));
                        got.len() - 1
                    };
                    let reply = script(n);
                    tokio::time::sleep(reply.hold).await;
                    let mut response = Response::builder().status(reply.status);
                    if let Some((name, value)) = reply.header {
                        response = response.header(name, value);
                    }
                    Ok::<_, Infallible>(response.body(Full::new(Bytes::new())).unwrap())
                }
            });
            tokio::spawn(async move {
                let http = hyper::server::conn::http1::Builder::new();
                match tls {
                    None => drop(http.serve_connection(TokioIo::new(tcp), service).await),
                    Some(tls) => {
                        if let Ok(stream) = tls.accept(tcp).await {
                            drop(http.serve_connection(TokioIo::new(stream), service).await);
                        }
                    }
                }
            });
        }
    });
    (url, got)
}

/// When the `i`th request arrived, in microseconds.
fn arrival(attempts: &[(Vec<(String, String)>, Value)], i: usize) -> u64 {
    header(&attempts[i].0, RECEIVED_AT).parse().unwrap()
}

#[tokio::test]
async fn a_retry_after_is_honoured_and_a_redirect_is_not_followed() {
    let (elsewhere, followed) = answering("http", None, Arc::new(|_| Reply::status(204))).await;
    let script: Script = Arc::new(move |n| match n {
        0 => Reply { header: Some(("retry-after", "3".into())), ..Reply::status(503) },
        1 => Reply { header: Some(("location", elsewhere.clone())), ..Reply::status(307) },
        _ => Reply::status(204),
    });
    let (url, got) = answering("http", None, script).await;
    // The endpoint's schedule waits 200 ms after each failure.
    let app = TestApp::spawn_with(|c| c.webhooks = vec![endpoint(&url, &secret(21))]).await;
    app.set("ria", json!({"status": "busy"})).await;
    let attempts = events_when(&got, 3).await;
    let ids: Vec<String> = attempts.iter().map(|(h, _)| header(h, "webhook-id")).collect();
    assert!(ids.iter().all(|id| *id == ids[0]), "one event, tried three times: {ids:?}");
    let waited = arrival(&attempts, 1) - arrival(&attempts, 0);
    assert!(waited >= 3_000_000, "Retry-After: 3 is longer than the schedule's 200 ms: {waited} µs");
    let waited = arrival(&attempts, 2) - arrival(&attempts, 1);
    assert!(waited < 3_000_000, "after the redirect, the schedule's wait: {waited} µs");
    // A redirect followed would have reached the other receiver before the attempt ended.
    assert!(followed.lock().unwrap().is_empty(), "the redirect was not followed");
    app.stop().await;
}

#[tokio::test]
async fn an_endpoint_that_does_not_answer_within_15_seconds_gets_the_event_again() {
    let script: Script = Arc::new(|n| Reply {
        hold: if n == 0 { 120 * SECOND } else { Duration::ZERO },
        ..Reply::status(204)
    });
    let (url, got) = answering("http", None, script).await;
    let app = TestApp::spawn_with(|c| c.webhooks = vec![endpoint(&url, &secret(22))]).await;
    app.set("tia", json!({"status": "busy"})).await;
    let attempts = eventually(40 * SECOND, "a second attempt", || async {
        let got = got.lock().unwrap();
        (got.len() >= 2).then(|| {
            got.iter()
                .map(|(h, b)| (h.clone(), serde_json::from_str::<Value>(b).unwrap()))
                .collect::<Vec<_>>()
        })
    })
    .await;
    assert_eq!(header(&attempts[0].0, "webhook-id"), header(&attempts[1].0, "webhook-id"));
    let waited = Duration::from_micros(arrival(&attempts, 1) - arrival(&attempts, 0));
    assert!(
        (15 * SECOND..20 * SECOND).contains(&waited),
        "given up on after 15 s, then the schedule's 200 ms: {waited:?}"
    );
    eventually(10 * SECOND, "delivered, nothing pending", || async {
        let health = app.health().await;
        (health["webhooks"]["backend"]["pending"] == 0).then_some(())
    })
    .await;
    assert!(app.metric("presence_webhook_failed_total{endpoint=\"backend\"}").await >= 1.0);
    app.stop().await;
}

#[tokio::test]
async fn https_reaches_an_endpoint_whose_ca_is_given_and_not_one_the_system_roots_do_not_know() {
    presence::tls::install_provider();
    let pki = Pki::new(&["hooks"]);
    let certs = CertificateDer::pem_file_iter(pki.cert("hooks")).unwrap().map(Result::unwrap).collect();
    let key = PrivateKeyDer::from_pem_file(pki.key("hooks")).unwrap();
    let config = rustls::ServerConfig::builder().with_no_client_auth().with_single_cert(certs, key).unwrap();
    let tls = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let (url, got) = answering("https", Some(tls), Arc::new(|_| Reply::status(204))).await;
    let key = secret(23);
    let https =
        |name: &str| WebhookConfig { name: name.into(), allow_insecure: false, ..endpoint(&url, &key) };
    let pinned = WebhookConfig { ca_file: Some(pki.ca()), ..https("pinned") };
    let system = WebhookConfig { retry_schedule: Some(vec![60 * SECOND]), ..https("system") };
    let app = TestApp::spawn_with(|c| c.webhooks = vec![pinned, system]).await;
    app.set("tess", json!({"status": "busy"})).await;
    let (headers, event) = events_when(&got, 1).await.remove(0);
    assert_eq!(event["data"]["user_id"], "tess");
    let sent = got.lock().unwrap()[0].1.clone();
    assert!(verifies(&key, &headers, &sent), "signed over TLS: {sent}");
    // The other endpoint's TLS handshake fails (a CA the system does not know): it retries.
    eventually(10 * SECOND, "the system-roots endpoint retrying", || async {
        let health = app.health().await;
        let failed = app.metric("presence_webhook_failed_total{endpoint=\"system\"}").await;
        (health["webhooks"]["system"]["state"] == "retrying" && failed >= 1.0).then_some(())
    })
    .await;
    assert_eq!(got.lock().unwrap().len(), 1, "no request without a verified server");
    app.stop().await;
}
