//! HTTPS in process: TLS 1.2+ with ALPN h2 and http/1.1, HSTS on every HTTPS answer, plain HTTP
//! refused (never redirected), certificates reloaded without a restart; and the proxy mode, where
//! only the configured proxies are believed about the client's scheme.

use std::time::Duration;

use presence::config::{ServiceTls, TlsMode};
use reqwest::StatusCode;
use serde_json::Value;

use crate::helpers::{Pki, SECRET, TestApp, eventually, https, start_on_free_ports};

const HSTS: &str = "max-age=31536000; includeSubDomains";

async fn https_app(pki: &Pki, host: &str) -> TestApp {
    let tls = ServiceTls {
        cert_file: Some(pki.cert(host)),
        key_file: Some(pki.key(host)),
        ..ServiceTls::default()
    };
    TestApp::spawn_with(move |c| c.service.tls = Some(tls)).await
}

#[tokio::test]
async fn https_speaks_h2_and_http1_with_hsts_and_refuses_plain_http() {
    let pki = Pki::new(&["node.test"]);
    let app = https_app(&pki, "node.test").await;
    let h2 = https::get(app.addr, "node.test", &pki.ca(), &[b"h2", b"http/1.1"], "/health").await.unwrap();
    assert_eq!(h2.alpn.as_deref(), Some(&b"h2"[..]));
    assert_eq!(h2.status, 200, "{}", h2.body);
    assert_eq!(serde_json::from_str::<Value>(&h2.body).unwrap()["status"], "ok");
    assert_eq!(h2.headers["strict-transport-security"], HSTS);

    let h1 = https::get(app.addr, "localhost", &pki.ca(), &[b"http/1.1"], "/no/such/route").await.unwrap();
    assert_eq!(h1.alpn.as_deref(), Some(&b"http/1.1"[..]));
    assert_eq!(h1.status, 404, "errors are HTTPS answers too");
    assert_eq!(h1.headers["strict-transport-security"], HSTS);

    // Plain HTTP on the HTTPS port gets no answer at all: no redirect, nothing served.
    let plain = reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build().unwrap();
    let refused = plain.get(format!("http://{}/api/v2/presence/hana", app.addr)).send().await;
    assert!(refused.is_err(), "plain HTTP got an answer: {:?}", refused.map(|r| r.status()));
    // A client that does not trust the CA is refused by its own TLS check.
    let stranger = Pki::new(&["node.test"]);
    assert!(https::get(app.addr, "node.test", &stranger.ca(), &[b"http/1.1"], "/health").await.is_err());
    app.stop().await;
}

#[tokio::test]
async fn a_new_certificate_is_served_after_a_reload_without_a_restart() {
    let pki = Pki::new(&["node.test"]);
    let app = https_app(&pki, "node.test").await;
    let reloader = app.reloader.clone();
    let next = Pki::new(&["node.test"]);
    pki.replace_with(&next, "node.test");
    assert!(
        https::get(app.addr, "node.test", &pki.ca(), &[b"h2"], "/health").await.is_ok(),
        "not yet reloaded"
    );
    reloader.reload().unwrap();
    let answer = https::get(app.addr, "node.test", &next.ca(), &[b"h2"], "/health").await.unwrap();
    assert_eq!(answer.status, 200);
    assert!(
        https::get(app.addr, "node.test", &pki.ca(), &[b"h2"], "/health").await.is_err(),
        "old certificate"
    );

    // A broken file keeps the certificate in use.
    std::fs::write(pki.key("node.test"), "not a key").unwrap();
    assert!(reloader.reload().is_err());
    assert!(https::get(app.addr, "node.test", &next.ca(), &[b"h2"], "/health").await.is_ok());
    app.stop().await;
}

#[tokio::test]
async fn behind_a_proxy_only_requests_that_arrived_over_https_are_served() {
    let app = TestApp::spawn_with(|c| {
        c.service.tls = Some(ServiceTls {
            mode: TlsMode::Proxy,
            trusted_proxies: vec!["127.0.0.1/32".parse().unwrap()],
            ..ServiceTls::default()
        })
    })
    .await;
    let url = app.url("/api/v2/presence/x");
    let client = reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build().unwrap();
    let get = |headers: &'static [(&'static str, &'static str)]| {
        let mut request = client.get(&url).timeout(Duration::from_secs(5));
        for (k, v) in headers {
            request = request.header(*k, *v);
        }
        request.send()
    };
    let over_https = get(&[("x-forwarded-proto", "https")]).await.unwrap();
    assert_eq!(over_https.status(), StatusCode::NOT_FOUND, "served (no such user)");
    assert_eq!(over_https.headers()["strict-transport-security"], HSTS);
    let forwarded = get(&[("forwarded", "for=198.51.100.7;proto=https")]).await.unwrap();
    assert_eq!(forwarded.status(), StatusCode::NOT_FOUND);
    for headers in [&[("x-forwarded-proto", "http")][..], &[][..], &[("forwarded", "proto=http")][..]] {
        let response = get(headers).await.unwrap();
        assert_eq!(response.status(), StatusCode::FORBIDDEN, "{headers:?}");
        assert!(response.headers().get("strict-transport-security").is_none(), "no HSTS on plain HTTP");
        assert!(response.headers().get("location").is_none(), "refused, not redirected");
        let body: Value = response.json().await.unwrap();
        assert_eq!(body["success"], false);
        assert!(body["error"].as_str().unwrap().contains("HTTPS"), "{body}");
    }
    app.stop().await;
}

#[tokio::test]
async fn plain_http_on_loopback_without_tls_carries_no_hsts() {
    let app = TestApp::spawn().await;
    let response = app.read("nobody").await;
    assert_eq!(response.status(), StatusCode::NOT_FOUND);
    assert!(response.headers().get("strict-transport-security").is_none());
    app.stop().await;
}

#[tokio::test]
async fn sighup_to_the_binary_rotates_the_https_and_nats_certificates() {
    let pki = Pki::new(&["node.test"]);
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("service.log");
    let ca = pki.ca();
    let start = |[http, nats, leaf]: [u16; 3]| {
        // A data directory per attempt: a first one's embedded nats-server may still hold its own.
        let yaml = format!(
            "service:\n  port: {http}\n  node_id: hup-node\n  tls:\n    cert_file: {cert:?}\n    key_file: {key:?}\n\
             nats:\n  port: {nats}\n  leaf_port: {leaf}\n  data_dir: {data:?}\n  leaf_tls:\n    cert_file: {cert:?}\n    \
             key_file: {key:?}\n    ca_file: {ca:?}\n    leaves: [leaf-a.test]\n\
             auth:\n  jwt_secret: {SECRET}\nlogging:\n  level: debug\n  format: json\n",
            cert = pki.cert("node.test"),
            key = pki.key("node.test"),
            data = dir.path().join(format!("nats-data-{nats}")),
        );
        std::fs::write(dir.path().join("presence.yaml"), yaml).unwrap();
        let stderr = dir.path().join("stderr.log");
        let child = std::process::Command::new(env!("CARGO_BIN_EXE_presence"))
            .arg("--config")
            .arg(dir.path().join("presence.yaml"))
            .stdout(std::fs::File::create(&log).unwrap())
            .stderr(std::fs::File::create(&stderr).unwrap())
            .spawn()
            .unwrap();
        (child, vec![log.clone(), stderr])
    };
    let serves = |[http, ..]: [u16; 3]| {
        let ca = ca.clone();
        async move {
            let addr = std::net::SocketAddr::from(([127, 0, 0, 1], http));
            https::get(addr, "node.test", &ca, &[b"h2"], "/health").await.is_ok_and(|a| a.status == 200)
        }
    };
    let (mut child, [http, ..]) = start_on_free_ports("the binary serving HTTPS", start, serves).await;
    let addr = std::net::SocketAddr::from(([127, 0, 0, 1], http));

    let next = Pki::new(&["node.test"]);
    pki.replace_with(&next, "node.test");
    // SAFETY: kill(2) on our own child.
    unsafe { libc::kill(child.id() as i32, libc::SIGHUP) };
    let next_ca = next.ca();
    eventually(Duration::from_secs(10), "the new certificate is served", || async {
        https::get(addr, "node.test", &next_ca, &[b"h2"], "/health").await.ok().filter(|a| a.status == 200)
    })
    .await;
    eventually(Duration::from_secs(10), "the embedded nats-server reloaded", || async {
        std::fs::read_to_string(&log).unwrap().contains("Reloaded server configuration").then_some(())
    })
    .await;
    assert!(child.try_wait().unwrap().is_none(), "SIGHUP does not stop the service");
    // SAFETY: as above.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    // Waited for off the runtime, which keeps serving the test's HTTP/2 clients meanwhile (they
    // answer the server's closing handshake).
    let started = std::time::Instant::now();
    let status = tokio::task::spawn_blocking(move || child.wait()).await.unwrap().unwrap();
    assert!(status.success(), "a clean stop after the reload: {status}");
    assert!(started.elapsed() < Duration::from_secs(5), "the stop waited for open HTTP/2 connections");
}

/// Whether `openssl s_client` completes a handshake with `addr` using only `version`. Security
/// level 0 lets the client offer TLS 1.0 and 1.1 at all, so that a refusal is the server's.
fn openssl_handshake(addr: std::net::SocketAddr, version: &str) -> bool {
    let output = std::process::Command::new("openssl")
        .args([
            "s_client",
            "-connect",
            &addr.to_string(),
            version,
            "-cipher",
            "DEFAULT:@SECLEVEL=0",
            "-brief",
        ])
        .stdin(std::process::Stdio::null())
        .output()
        .expect("openssl is installed by scripts/test");
    let text = String::from_utf8_lossy(&output.stderr);
    text.contains("CONNECTION ESTABLISHED")
}

#[tokio::test]
async fn tls_1_2_and_1_3_are_served_and_older_versions_refused() {
    let pki = Pki::new(&["node.test"]);
    let app = https_app(&pki, "node.test").await;
    let addr = app.addr;
    let outcomes = tokio::task::spawn_blocking(move || {
        ["-tls1", "-tls1_1", "-tls1_2", "-tls1_3"].map(|v| (v, openssl_handshake(addr, v)))
    })
    .await
    .unwrap();
    assert_eq!(outcomes, [("-tls1", false), ("-tls1_1", false), ("-tls1_2", true), ("-tls1_3", true)]);
    app.stop().await;
}
