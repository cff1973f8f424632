//! Webhook endpoints (docs/webhooks.md): `presence webhooks test NAME` and the delivery of
//! events, against a real HTTP receiver started here; the signatures checked by an independent
//! implementation (the `standardwebhooks` package from PyPI, in the project's Python
//! environment); the refusals of secure defaults.

mod answers;
pub(crate) mod delivery;
mod notices;
mod outages;

use std::{
    path::{Path, PathBuf},
    process::{Command, Output},
    sync::{Arc, Mutex},
};

use axum::{Router, extract::State, http::HeaderMap, routing::post};
use base64::{Engine, engine::general_purpose::STANDARD};
use serde_json::{Value, json};

/// Not sent: the receiver adds it, the microseconds since 1970 when the request arrived.
const RECEIVED_AT: &str = "x-received-at-us";

/// What the receiver was sent: each request's headers (lower-case names) and body.
type Received = Arc<Mutex<Vec<(Vec<(String, String)>, String)>>>;

/// A receiver on a free loopback port answering every POST with `status`; its address and what it got.
async fn receiver(status: u16) -> (String, Received) {
    scripted(vec![], status).await
}

/// What a receiver answers: the statuses of a script in turn, then one status to every later request.
type Answers = (Received, Arc<Mutex<std::collections::VecDeque<u16>>>, u16);

/// A receiver answering the statuses of `script` in turn, then `then`.
async fn scripted(script: Vec<u16>, then: u16) -> (String, Received) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (got, _) = serve(listener, script, then);
    (format!("http://{addr}/hook"), got)
}

/// Serves `listener` as a receiver until the handle is aborted: what it got.
fn serve(
    listener: tokio::net::TcpListener,
    script: Vec<u16>,
    then: u16,
) -> (Received, tokio::task::JoinHandle<()>) {
    let got: Received = Arc::default();
    let app = Router::new().route(
        "/hook",
        post(|State((got, script, then)): State<Answers>, headers: HeaderMap, body: String| async move {
            let mut headers: Vec<(String, String)> =
                headers.iter().map(|(k, v)| (k.to_string(), v.to_str().unwrap().to_string())).collect();
            let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap();
            headers.push((RECEIVED_AT.into(), now.as_micros().to_string()));
            got.lock().unwrap().push((headers, body));
            let status = script.lock().unwrap().pop_front().unwrap_or(then);
            axum::http::StatusCode::from_u16(status).unwrap()
        }),
    );
    let state: Answers = (got.clone(), Arc::new(Mutex::new(script.into())), then);
    let task = tokio::spawn(async move {
        let _ = axum::serve(listener, app.with_state(state)).await;
    });
    (got, task)
}

pub(crate) fn secret(byte: u8) -> String {
    format!("whsec_{}", STANDARD.encode([byte; 32]))
}

/// `presence webhooks test NAME` with a configuration of these `webhooks:` (YAML).
fn test_command(dir: &Path, webhooks: &str, name: &str) -> Output {
    let config = dir.join("presence.yaml");
    std::fs::write(&config, format!("webhooks:\n{webhooks}")).unwrap();
    Command::new(env!("CARGO_BIN_EXE_presence"))
        .args(["webhooks", "test", name, "--config"])
        .arg(&config)
        .output()
        .unwrap()
}

/// The project's Python environment, where `scripts/test` installs `standardwebhooks`.
fn python() -> PathBuf {
    let python = Path::new(env!("CARGO_MANIFEST_DIR")).join(".tools/venv/bin/python");
    assert!(python.exists(), "run the tests with scripts/test: it installs the Python verifier");
    python
}

/// Whether `standardwebhooks` (Python) accepts the request under `secret`.
fn verifies(secret: &str, headers: &[(String, String)], body: &str) -> bool {
    let input = json!({"secret": secret, "headers": headers.iter().cloned().collect::<std::collections::HashMap<_, _>>(), "body": body});
    let script = "import json, sys\nfrom standardwebhooks.webhooks import Webhook\nd = json.load(sys.stdin)\n\
                  Webhook(d['secret']).verify(d['body'], d['headers'])\nprint('verified')";
    let mut child = Command::new(python())
        .args(["-c", script])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write;
    child.stdin.take().unwrap().write_all(input.to_string().as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    String::from_utf8_lossy(&out.stdout).trim() == "verified"
}

#[tokio::test]
async fn a_test_event_is_signed_as_standard_webhooks_says_and_verified_independently() {
    let dir = tempfile::tempdir().unwrap();
    let (url, got) = receiver(204).await;
    let (current, previous) = (secret(1), secret(2));
    let hook = format!(
        "  - {{ name: local, url: \"{url}\", secret: \"{current}\", previous_secret: \"{previous}\", allow_insecure: true, allow_private: true }}\n"
    );
    let dir_path = dir.path().to_path_buf();
    let out = tokio::task::spawn_blocking(move || test_command(&dir_path, &hook, "local")).await.unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stdout).contains("webhook local: 204"));
    let (headers, body) = got.lock().unwrap()[0].clone();
    let header = |name: &str| headers.iter().find(|(k, _)| k == name).map(|(_, v)| v.clone()).unwrap();
    let event: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(event["type"], "webhook.test");
    assert_eq!(event["data"]["endpoint"], "local");
    assert!(header("webhook-id").starts_with("msg_test_"));
    assert!(
        (chrono::Utc::now().timestamp() - header("webhook-timestamp").parse::<i64>().unwrap()).abs() < 60
    );
    assert_eq!(header("content-type"), "application/json");
    assert_eq!(header("webhook-signature").split(' ').count(), 2, "two secrets during a rotation");
    // Either secret verifies it, in another implementation; a third does not; nor a changed body.
    assert!(verifies(&current, &headers, &body), "the current secret");
    assert!(verifies(&previous, &headers, &body), "the previous secret, during the rotation");
    assert!(!verifies(&secret(3), &headers, &body), "another secret");
    assert!(!verifies(&current, &headers, &body.replace("local", "lokal")), "a changed body");
}

#[tokio::test]
async fn secure_defaults_refuse_plain_http_private_addresses_and_weak_secrets() {
    let dir = tempfile::tempdir().unwrap();
    let (url, got) = receiver(200).await;
    let run = |hook: String, name: &'static str| {
        let dir = dir.path().to_path_buf();
        tokio::task::spawn_blocking(move || test_command(&dir, &hook, name))
    };
    let said = |out: &Output| String::from_utf8_lossy(&out.stderr).to_string();
    // A loopback receiver without allow_private: refused at the connection, nothing sent.
    let hook =
        format!("  - {{ name: a, url: \"{url}\", secret: \"{}\", allow_insecure: true }}\n", secret(1));
    let out = run(hook, "a").await.unwrap();
    assert!(!out.status.success() && said(&out).contains("no public address"), "{}", said(&out));
    // Plain http:// without allow_insecure: the configuration names the key.
    let hook = format!("  - {{ name: b, url: \"{url}\", secret: \"{}\", allow_private: true }}\n", secret(1));
    let out = run(hook, "b").await.unwrap();
    assert!(
        said(&out).contains("webhooks[0].url") && said(&out).contains("allow_insecure"),
        "{}",
        said(&out)
    );
    // A secret that is no `whsec_` of 24 bytes: refused, and never echoed.
    let weak = "whsec_c2hvcnQtc2VjcmV0";
    let hook = format!(
        "  - {{ name: c, url: \"{url}\", secret: \"{weak}\", allow_insecure: true, allow_private: true }}\n"
    );
    let out = run(hook, "c").await.unwrap();
    assert!(said(&out).contains("webhooks[0].secret") && !said(&out).contains(weak), "{}", said(&out));
    assert!(got.lock().unwrap().is_empty(), "nothing reached the receiver");
    // An answer that is no 2xx is no delivery.
    let (url, _) = receiver(410).await;
    let hook = format!(
        "  - {{ name: d, url: \"{url}\", secret: \"{}\", allow_insecure: true, allow_private: true }}\n",
        secret(1)
    );
    let out = run(hook, "d").await.unwrap();
    assert!(!out.status.success() && said(&out).contains("answered 410"), "{}", said(&out));
}
