//! The process as an operator sees it: the real binary, `kill -9`, restarts, SIGTERM, the CLI.

use std::{process::Command, time::Duration};

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::helpers::{
    NatsServer, SECRET, ServiceProcess, TestApp, eventually, is_alive, json_of, kill9, mint, port_is_free,
};

async fn put(client: &reqwest::Client, url: String, token: &str, body: Value) -> reqwest::Response {
    client.put(url).bearer_auth(token).json(&body).send().await.unwrap()
}

#[tokio::test]
async fn an_acknowledged_write_survives_kill_9_of_service_and_nats_server() {
    let dir = tempfile::tempdir().unwrap();
    let client = reqwest::Client::new();
    let mut service = ServiceProcess::start(dir.path(), None, Some(SECRET));
    service.wait_healthy().await;
    let (status, written) = json_of(
        put(
            &client,
            service.url("/api/v2/presence/gina"),
            &mint("gina"),
            json!({"status": "busy", "message": "durable"}),
        )
        .await,
    )
    .await;
    assert_eq!(status, StatusCode::OK);

    let nats = service.nats_pid().expect("the embedded server wrote its pid");
    service.kill9();
    kill9(nats);
    eventually(Duration::from_secs(10), "nats-server is gone", || async { (!is_alive(nats)).then_some(()) })
        .await;

    let log = std::fs::read_to_string(dir.path().join("service.log")).unwrap();
    assert!(!log.contains(SECRET), "the JWT secret is never logged");

    let mut again = ServiceProcess::start(dir.path(), Some(service.ports()), Some(SECRET));
    again.wait_healthy().await;
    let (status, read) = json_of(client.get(again.url("/api/v2/presence/gina")).send().await.unwrap()).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(read, written);
}

#[tokio::test]
async fn kill_9_of_the_service_leaves_no_nats_server_behind() {
    let dir = tempfile::tempdir().unwrap();
    let mut service = ServiceProcess::start(dir.path(), None, Some(SECRET));
    service.wait_healthy().await;
    let nats = service.nats_pid().unwrap();
    let (nats_port, leaf_port) = (service.nats_port, service.leaf_port);
    service.kill9();
    eventually(Duration::from_secs(15), "the orphaned nats-server exits and frees its ports", || async {
        (!is_alive(nats) && port_is_free(nats_port) && port_is_free(leaf_port)).then_some(())
    })
    .await;
}

#[tokio::test]
async fn sigterm_drains_and_stops_the_embedded_server() {
    let dir = tempfile::tempdir().unwrap();
    let mut service = ServiceProcess::start(dir.path(), None, Some(SECRET));
    service.wait_healthy().await;
    let nats = service.nats_pid().unwrap();
    // SAFETY: plain kill(2) on our child.
    unsafe { libc::kill(service.child.id() as i32, libc::SIGTERM) };
    let status = eventually(Duration::from_secs(15), "the service exits", || {
        let status = service.child.try_wait().unwrap();
        async move { status }
    })
    .await;
    assert!(status.success(), "{status}");
    assert!(!is_alive(nats), "nats-server stopped with the service");
}

#[tokio::test]
async fn the_supervisor_restarts_a_killed_nats_server() {
    let app = TestApp::spawn().await;
    let pid_file = app.data_dir().join("nats-server.pid");
    let read_pid = || std::fs::read_to_string(&pid_file).ok().and_then(|s| s.trim().parse::<i32>().ok());
    let first = read_pid().unwrap();
    assert_eq!(app.put("hank", json!({"status": "online"})).await.status(), StatusCode::OK);
    kill9(first);
    eventually(Duration::from_secs(30), "a new nats-server serves writes again", || async {
        let restarted = read_pid().is_some_and(|pid| pid != first && is_alive(pid));
        (restarted && app.put("hank", json!({"status": "away"})).await.status() == StatusCode::OK)
            .then_some(())
    })
    .await;
    let (_, body) = json_of(app.get("/api/v2/presence/hank").await).await;
    assert_eq!(body["data"]["hank"]["status"], "away");
    app.stop().await;
}

#[tokio::test]
async fn presence_token_uses_the_generated_secret_that_serve_uses() {
    let dir = tempfile::tempdir().unwrap();
    let mut service = ServiceProcess::start(dir.path(), None, None);
    service.wait_healthy().await;
    let out = Command::new(env!("CARGO_BIN_EXE_presence"))
        .args(["token", "--user", "ivy", "--ttl", "1h", "--config"])
        .arg(service.config_path())
        .output()
        .unwrap();
    let said = String::from_utf8_lossy(&out.stderr).to_string();
    assert!(out.status.success(), "{said}");
    let used = dir.path().join("nats-data/jwt-secret");
    assert!(
        said.contains(&format!("signed with the node's generated secret in {}", used.display())),
        "{said}"
    );
    let token = String::from_utf8(out.stdout).unwrap().trim().to_string();
    let client = reqwest::Client::new();
    let response =
        put(&client, service.url("/api/v2/presence/ivy"), &token, json!({"status": "online"})).await;
    assert_eq!(response.status(), StatusCode::OK);
    let response =
        put(&client, service.url("/api/v2/presence/ivy"), &mint("ivy"), json!({"status": "online"})).await;
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED, "there is no built-in secret");
    let log = std::fs::read_to_string(dir.path().join("service.log")).unwrap();
    assert!(log.contains("generated development JWT secret"), "the service warns about its generated secret");
    let secret = std::fs::read_to_string(dir.path().join("nats-data/jwt-secret")).unwrap();
    assert!(!log.contains(secret.trim()));
}

/// `presence token` run where no node keeps its secret makes none up (its tokens would be
/// refused): it fails, saying where it looked, and leaves nothing behind.
#[test]
fn presence_token_where_no_node_runs_makes_up_no_secret() {
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_presence"))
        .args(["token", "--user", "ivy"])
        .current_dir(dir.path())
        .env_clear()
        .output()
        .unwrap();
    let said = String::from_utf8_lossy(&out.stderr).to_string();
    assert!(!out.status.success(), "no token without a secret");
    assert!(out.stdout.is_empty());
    let looked = dir.path().canonicalize().unwrap().join("nats-data/jwt-secret");
    assert!(said.contains("no JWT secret") && said.contains(&*looked.to_string_lossy()), "{said}");
    assert!(!dir.path().join("nats-data").exists(), "nothing created");
}

/// nats-server failing for a reason of its own (here: its store directory is a file) is
/// explained with the server's own log lines.
#[tokio::test]
async fn a_nats_server_that_cannot_start_is_explained_with_its_own_words() {
    let dir = tempfile::tempdir().unwrap();
    let config = crate::helpers::test_config(dir.path());
    std::fs::create_dir_all(&config.nats.data_dir).unwrap();
    std::fs::write(config.nats.data_dir.join("jetstream"), "not a directory").unwrap();
    let error = match presence::app::Application::build(config).await {
        Ok(_) => panic!("started on a store it cannot use"),
        Err(e) => format!("{e:#}"),
    };
    assert!(error.contains("exited during start-up"), "{error}");
    assert!(
        error.contains("[FTL]") || error.contains("[ERR]"),
        "the server's own log lines are quoted: {error}"
    );
}

/// Every port a node opens, when taken, is named in one line with its setting and flag, before
/// anything is started.
#[tokio::test]
async fn a_taken_port_is_named_in_one_line_with_its_setting_and_flag() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port();
    type Take = fn(&mut presence::config::Config, u16);
    let cases: [(&str, &str, Take); 3] = [
        ("service.port", "--port", |c, p| c.service.port = p),
        ("nats.port", "--nats-port", |c, p| c.nats.port = p),
        ("nats.leaf_port", "--leaf-port", |c, p| c.nats.leaf_port = p),
    ];
    for (setting, flag, take) in cases {
        let dir = tempfile::tempdir().unwrap();
        let mut config = crate::helpers::test_config(dir.path());
        take(&mut config, port);
        let error = match presence::app::Application::build(config).await {
            Ok(_) => panic!("started with {setting} taken"),
            Err(e) => format!("{e:#}"),
        };
        assert!(!error.contains('\n'), "one line: {error}");
        assert!(error.contains(&format!("{setting} ({flag})")) && error.contains("taken"), "{error}");
        assert!(!dir.path().join("nats-data/nats-server.conf").exists(), "nothing started: {setting}");
    }
}

/// A second node on a data directory in use refuses to start, naming the directory and the
/// process that has it; once the first stops, it starts.
#[tokio::test]
async fn two_nodes_cannot_share_a_data_directory() {
    let first = TestApp::spawn().await;
    let data_dir = first.data_dir().to_path_buf();
    let dir = tempfile::tempdir().unwrap();
    let mut config = crate::helpers::test_config(dir.path());
    config.nats.data_dir = data_dir.clone();
    let error = match presence::app::Application::build(config.clone()).await {
        Ok(_) => panic!("a second node started on a data directory in use"),
        Err(e) => format!("{e:#}"),
    };
    assert!(error.contains("is in use by another Presence node"), "{error}");
    assert!(error.contains(&format!("pid {}", std::process::id())), "names the holder: {error}");
    assert!(error.contains(&*data_dir.to_string_lossy()), "names the directory: {error}");
    let kept = first.stop_keeping().await;
    let second = presence::app::Application::build(config).await.expect("the directory is free again");
    second.run_until(async {}).await.unwrap();
    drop(kept);
}

/// A stock nats-server already listening on the embedded server's port is not adopted: the start
/// fails, naming it, and nothing is created in that server's JetStream.
#[tokio::test]
async fn a_foreign_nats_server_on_the_port_is_refused_at_start() {
    let foreign = NatsServer::start().await;
    let dir = tempfile::tempdir().unwrap();
    let mut config = crate::helpers::test_config(dir.path());
    config.nats.port = foreign.port;
    let error = match presence::app::Application::build(config).await {
        Ok(_) => panic!("adopted a foreign nats-server"),
        Err(e) => format!("{e:#}"),
    };
    assert!(error.contains("nats.port (--nats-port)") && error.contains("taken"), "{error}");
    let js = async_nats::jetstream::new(async_nats::connect(foreign.url()).await.unwrap());
    assert!(js.get_key_value("presence").await.is_err(), "no bucket made in the foreign server");
}

/// The node's own server dies and another process takes its port before the supervisor can
/// restart it: the node does not serve from that server. It reports NATS unreachable and the
/// embedded server down in `/health`, and refuses writes.
#[tokio::test]
async fn a_foreign_server_that_takes_the_port_later_is_not_used() {
    let app = TestApp::spawn().await;
    app.set("fay", json!({"status": "online"})).await;
    let pid_file = app.data_dir().join("nats-server.pid");
    let mut squatter = None;
    for _ in 0..5 {
        // The supervisor waits at least 200 ms before a restart; the squatter usually wins. If
        // the restarted child won instead, kill it again (the supervisor's wait only grows).
        let pid: i32 = std::fs::read_to_string(&pid_file).unwrap().trim().parse().unwrap();
        kill9(pid);
        squatter = NatsServer::try_start_on(app.config.nats.port).await;
        if squatter.is_some() {
            break;
        }
    }
    assert!(squatter.is_some(), "another nats-server took the port");
    let health = eventually(Duration::from_secs(10), "the node notices", || async {
        let health = app.health().await;
        (health["status"] == "degraded" && health["nats_connected"] == false).then_some(health)
    })
    .await;
    assert_eq!(health["embedded_nats"]["running"], false, "{health}");
    assert_eq!(app.put("fay", json!({"status": "busy"})).await.status(), StatusCode::SERVICE_UNAVAILABLE);
    app.stop().await;
}

/// A child that keeps dying is reported, not hidden behind `ok`.
#[tokio::test]
async fn a_nats_server_that_keeps_dying_is_reported_in_health() {
    let app = TestApp::spawn().await;
    let pid_file = app.data_dir().join("nats-server.pid");
    let pid = || std::fs::read_to_string(&pid_file).ok().and_then(|p| p.trim().parse::<i32>().ok());
    for round in 1..=3 {
        let before = pid().unwrap();
        kill9(before);
        eventually(Duration::from_secs(15), "the supervisor restarts it", || async {
            let health = app.health().await;
            let restarted =
                health["embedded_nats"]["restarts"] == round && health["embedded_nats"]["running"] == true;
            (restarted && pid().is_some_and(|p| p != before && is_alive(p))).then_some(())
        })
        .await;
    }
    let health = app.health().await;
    assert_eq!(health["embedded_nats"]["keeps_dying"], true, "{health}");
    assert_eq!(health["status"], "degraded", "{health}");
    app.stop().await;
}

/// With the design document's (docs/design.md) logging (`info`, `json`) and the default `logging.requests:
/// errors`, a successful request writes no line and a refused token exactly one, with its reason;
/// `requests: all` adds one line per request.
#[tokio::test]
async fn access_logs_are_a_choice_and_a_refused_token_costs_one_line() {
    let count = |log: &str, needle: &str| log.lines().filter(|l| l.contains(needle)).count();
    let read_log =
        |dir: &std::path::Path| std::fs::read_to_string(dir.join("service.log")).unwrap_or_default();
    for (requests, lines_per_ok) in [("errors", 0), ("all", 1)] {
        let dir = tempfile::tempdir().unwrap();
        let logging = format!("level: info\n  format: json\n  requests: {requests}");
        let mut service = ServiceProcess::start_logging(dir.path(), None, Some(SECRET), &logging);
        service.wait_healthy().await;
        let client = reqwest::Client::new();
        for _ in 0..5 {
            client.get(service.url("/api/v2/presence/quiet")).send().await.unwrap();
        }
        let refused =
            put(&client, service.url("/api/v2/presence/quiet"), "forged", json!({"status": "online"})).await;
        assert_eq!(refused.status(), StatusCode::UNAUTHORIZED);
        let log = eventually(Duration::from_secs(5), "the refused token is logged", || async {
            let log = read_log(dir.path());
            (count(&log, "token refused") >= 1).then_some(log)
        })
        .await;
        assert_eq!(count(&log, "token refused"), 1, "{requests}: one line for the refused token\n{log}");
        assert_eq!(count(&log, "InvalidToken"), 1, "{requests}: the line says why\n{log}");
        // Counted by their status, not by every line with a route: the health checks of the
        // start-up are logged too, by a background writer, whenever it gets to them.
        let reads = count(&log, "\"status\":404");
        assert_eq!(reads, 5 * lines_per_ok, "{requests}: lines for five 404 reads\n{log}");
    }
}

/// Text lines written to a file (as under systemd, or a pipe) carry no ANSI colour codes.
#[tokio::test]
async fn text_logs_in_a_file_have_no_colour_codes() {
    let dir = tempfile::tempdir().unwrap();
    let mut service =
        ServiceProcess::start_logging(dir.path(), None, Some(SECRET), "level: info\n  format: text");
    service.wait_healthy().await;
    let log = eventually(Duration::from_secs(5), "the node logs that it serves", || async {
        let log = std::fs::read_to_string(dir.path().join("service.log")).unwrap_or_default();
        log.contains("serving").then_some(log)
    })
    .await;
    assert!(log.contains("INFO"), "{log}");
    assert!(!log.contains('\u{1b}'), "no colour codes in a file:\n{log}");
}
