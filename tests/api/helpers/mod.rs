//! Test fixtures, one file per thing they start: a node in this process ([`TestApp`], with a
//! typed client for every endpoint), the real binary ([`ServiceProcess`]), a standalone
//! nats-server ([`NatsServer`]), a three-server cluster ([`NatsCluster`]), a TCP proxy that cuts
//! links ([`ChaosProxy`]), certificates ([`Pki`]), and tokens. Everything runs on free loopback ports in temporary
//! directories and is killed on `Drop`.

mod app;
pub(crate) mod browser;
mod chaos;
mod cluster;
pub(crate) mod https;
pub(crate) mod live;
mod nats;
pub(crate) mod operator;
mod pki;
mod process;
mod tokens;

use std::{
    future::Future,
    net::TcpListener,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use reqwest::{Response, StatusCode};
use serde_json::{Value, json};

pub(crate) use app::{
    LEAF_PASSWORD, OPERATOR, OPERATOR_PASSWORD, TestApp, external_app, leaf_app, leaf_app_with, test_config,
};
pub(crate) use chaos::ChaosProxy;
pub(crate) use cluster::NatsCluster;
pub(crate) use nats::{NatsServer, bucket, nats_connect, stored_value};
pub(crate) use pki::Pki;
pub(crate) use process::{ServiceProcess, is_alive, kill9, port_is_free};
pub(crate) use tokens::{ISSUER, SECRET, mint, mint_rooms};

/// A free TCP port on loopback, chosen by the OS. It is let go at once: until a server binds it,
/// another test's outgoing connection may take it (see [`lost_its_port`]).
pub(crate) fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// Whether a server that failed to start (`said`: its error or log) did so because a port was
/// taken: the helpers that chose its ports with [`free_port`] then choose again.
pub(crate) fn lost_its_port(said: &str) -> bool {
    said.to_lowercase().contains("address already in use")
}

/// Starts a server on `N` ports from [`free_port`]: `start` spawns it on them and names the files
/// its output goes to, `ready` says whether it serves. One that exited saying a port was taken
/// (see [`lost_its_port`]) is started again on fresh ports, three attempts in all.
pub(crate) async fn start_on_free_ports<const N: usize, Fut: Future<Output = bool>>(
    what: &str,
    mut start: impl FnMut([u16; N]) -> (Child, Vec<PathBuf>),
    mut ready: impl FnMut([u16; N]) -> Fut,
) -> (Child, [u16; N]) {
    for attempt in 1..=3 {
        let ports = std::array::from_fn(|_| free_port());
        let (mut child, logs) = start(ports);
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if ready(ports).await {
                return (child, ports);
            }
            if let Some(status) = child.try_wait().unwrap() {
                let said: String = logs.iter().filter_map(|l| std::fs::read_to_string(l).ok()).collect();
                assert!(attempt < 3 && lost_its_port(&said), "{what} exited ({status}): {said}");
                break;
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                panic!("{what} did not serve within 30 s");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    unreachable!("the third attempt returns or panics")
}

/// An installed program serving HTTP on a port from [`free_port`] ([`start_on_free_ports`]):
/// `command` makes it for a port (its standard error goes to `log`), and it serves once a GET of
/// `ready` answers 2xx.
pub(crate) async fn program_on_a_free_port(
    what: &str,
    log: &Path,
    command: impl Fn(u16) -> Command,
    ready: &str,
) -> (Child, u16) {
    let http = reqwest::Client::new();
    let start = |[port]: [u16; 1]| {
        let child = command(port)
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(log).unwrap())
            .spawn()
            .unwrap_or_else(|e| panic!("{what} is installed by scripts/test: {e}"));
        (child, vec![log.to_path_buf()])
    };
    let serves = |[port]: [u16; 1]| {
        let answered = http.get(format!("http://127.0.0.1:{port}{ready}")).send();
        async move { answered.await.is_ok_and(|r| r.status().is_success()) }
    };
    let (child, [port]) = start_on_free_ports(what, start, serves).await;
    (child, port)
}

/// Polls `check` until it returns `Some`, or panics with `what` after `limit`.
pub(crate) async fn eventually<T, F, Fut>(limit: Duration, what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = Instant::now() + limit;
    loop {
        if let Some(v) = check().await {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out after {limit:?} waiting for: {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The JSON body of a response, with its status.
pub(crate) async fn json_of(response: Response) -> (StatusCode, Value) {
    let status = response.status();
    let content_type = response.headers().get("content-type").map(|v| v.to_str().unwrap().to_string());
    let text = response.text().await.unwrap();
    let body: Value =
        serde_json::from_str(&text).unwrap_or_else(|_| panic!("{status}: body is not JSON: {text:?}"));
    assert_eq!(content_type.as_deref(), Some("application/json"), "{status}: {text}");
    (status, body)
}

/// Asserts the error envelope with `status`.
pub(crate) async fn assert_error(response: Response, status: StatusCode) -> String {
    let (got, body) = json_of(response).await;
    assert_eq!(got, status, "{body}");
    assert_eq!(body["success"], json!(false), "{body}");
    let error = body["error"].as_str().unwrap_or_else(|| panic!("no error message: {body}"));
    assert!(!error.is_empty());
    assert_eq!(body.as_object().unwrap().len(), 2, "only success and error: {body}");
    error.to_string()
}

/// Reads until `within` has passed, `enough` holds of what arrived, or the connection closes:
/// what arrived, and whether it closed.
pub(crate) async fn read_until(
    stream: &mut tokio::net::TcpStream,
    within: Duration,
    enough: impl Fn(&str) -> bool,
) -> (String, bool) {
    let deadline = tokio::time::Instant::now() + within;
    let mut got = Vec::new();
    let mut buffer = [0u8; 4096];
    loop {
        let text = String::from_utf8_lossy(&got).to_string();
        if enough(&text) {
            return (text, false);
        }
        match tokio::time::timeout_at(deadline, tokio::io::AsyncReadExt::read(stream, &mut buffer)).await {
            Ok(Ok(0) | Err(_)) => return (text, true),
            Ok(Ok(n)) => got.extend_from_slice(&buffer[..n]),
            Err(_) => return (text, false),
        }
    }
}
