//! The consistency run of a region: a center and three leaves (one behind the chaos proxy), and
//! faults while the workload runs: a leaf's link cut while 30,000 records are written around the
//! workload (a backlog every watcher replays, the worst case for one that would let an older
//! revision replace a newer one), the center's nats-server paused (SIGSTOP) for longer than the
//! request timeout, a leaf's nats-server killed (`kill -9`, its supervisor restarts it), every
//! node's watcher held back (its consumer deleted under it) while writes go on, a third leaf and
//! then the center (processes of their own) killed with `kill -9` and started again.

use std::time::Duration;

use super::{CENTER_KILLED, HISTORY_YAML, cycles, for_a_history, start_workload, verdict};
use crate::{
    consistency::{faults::Faults, workload::Node},
    helpers::{
        ChaosProxy, ISSUER, LEAF_PASSWORD, OPERATOR, OPERATOR_PASSWORD, SECRET, ServiceProcess, TestApp,
        eventually, free_port, kill9, leaf_app_with, port_is_free, stored_value,
    },
};

/// The embedded nats-server of `app`, from its pid file.
fn nats_pid(app: &TestApp) -> i32 {
    let pid = std::fs::read_to_string(app.data_dir().join("nats-server.pid")).unwrap();
    pid.trim().parse().unwrap()
}

fn signal(pid: i32, signal: i32) {
    // SAFETY: plain kill(2).
    unsafe { libc::kill(pid, signal) };
}

/// Deletes the consumers of the bucket's stream: every node's watcher stops getting changes
/// until it notices and resumes from the last revision it applied, while writes go on.
async fn hold_back_watchers(js: &async_nats::jetstream::Context) {
    let stream = js.get_stream("KV_presence").await.unwrap();
    let names: Vec<String> =
        futures::StreamExt::collect::<Vec<_>>(stream.consumer_names()).await.into_iter().flatten().collect();
    for name in names {
        let _ = stream.delete_consumer(&name).await;
    }
}

/// `kill -9` of the node, then the same node started again on its data directory and ports.
async fn restart_killed(mut node: ServiceProcess) -> ServiceProcess {
    node.kill9();
    let yaml = std::fs::read_to_string(node.config_path()).unwrap();
    let dir = node.dir.clone();
    let ports = node.ports();
    // Its embedded nats-server goes with it (parent-death signal; `drop` makes sure), and lets
    // go of its ports a moment later.
    drop(node);
    eventually(Duration::from_secs(10), "the killed node's ports are free", || async {
        (port_is_free(ports.1) && port_is_free(ports.2)).then_some(())
    })
    .await;
    let mut again = ServiceProcess::start_yaml(&dir, ports.0, &yaml);
    (again.nats_port, again.leaf_port) = (ports.1, ports.2);
    again.wait_healthy().await;
    again
}

/// A center node as a process, on free ports, with an operator for the checker.
fn center_process(dir: &std::path::Path, extra: &str) -> ServiceProcess {
    let (http, nats, leaf) = (free_port(), free_port(), free_port());
    let yaml = format!(
        "service:\n  host: 127.0.0.1\n  port: {http}\n  node_id: center\n\
         nats:\n  port: {nats}\n  leaf_port: {leaf}\n  data_dir: {data}\n  leaf_password: {LEAF_PASSWORD:?}\n  \
         operators: [{{user: {OPERATOR}, password: {OPERATOR_PASSWORD}}}]\n\
         auth:\n  jwt_secret: {SECRET}\n  jwt_issuer: {ISSUER}\n{extra}",
        data = dir.join("nats-data").display(),
    );
    ServiceProcess::start_yaml(dir, http, &yaml).on_free_ports(nats, leaf)
}

/// Records of users outside the workload, written straight into the bucket and pipelined while
/// leaf A is cut off: when its link comes back, its watcher has this backlog to replay (seconds),
/// while its own writes land at newer revisions. The worst case for a watcher that would let an
/// older revision replace a newer one (the planted `stale-watcher`).
async fn flood(js: &async_nats::jetstream::Context, cycle: u64) {
    // In rounds: the client holds back publishes while too many acknowledgements are awaited.
    for round in 0..BACKLOG / 500 {
        let mut acks = Vec::with_capacity(500);
        for i in 0..500 {
            let user = format!("cold-{cycle}-{round}-{i}");
            let value = stored_value(&user, "online", "backlog", 86_400);
            acks.push(js.publish(format!("$KV.presence.user.{user}"), value).await.unwrap().into_future());
        }
        for ack in futures::future::join_all(acks).await {
            ack.unwrap();
        }
    }
}

/// How many records [`flood`] writes.
const BACKLOG: usize = 30_000;

#[tokio::test]
async fn a_history_under_faults_keeps_every_promise() {
    // The center and one leaf are processes of their own, to be killed (`kill -9`) and started
    // again; the other leaves run in this process, one behind the chaos proxy.
    let center_dir = tempfile::tempdir().unwrap();
    let mut center = center_process(center_dir.path(), HISTORY_YAML);
    center.wait_healthy().await;
    let center_leaf_port = center.leaf_port;
    let center_nats = format!("nats://{OPERATOR}:{OPERATOR_PASSWORD}@127.0.0.1:{}", center.nats_port);
    let proxy = ChaosProxy::start(center_leaf_port).await;
    let leaf_a = leaf_app_with(proxy.port, "leaf-a", "eu-west", for_a_history).await;
    let leaf_b = leaf_app_with(center_leaf_port, "leaf-b", "us-east", for_a_history).await;
    let leaf_c_dir = tempfile::tempdir().unwrap();
    let mut leaf_c =
        ServiceProcess::start_leaf(leaf_c_dir.path(), center_leaf_port, "leaf-c", "", HISTORY_YAML);
    leaf_c.wait_healthy().await;
    let mut nodes = vec![Node { name: "center".into(), url: center.url("") }];
    for app in [&leaf_a, &leaf_b] {
        nodes.push(Node { name: app.config.service.node_id.clone(), url: app.url("") });
    }
    nodes.push(Node { name: "leaf-c".into(), url: leaf_c.url("") });
    let (shape, recorder, stop, clients) = start_workload(&nodes);

    // The faults, one after another, on a schedule (their timing is the test's, not a wait for
    // anything), in cycles of 40 s: a calm start, the leaf's link cut for 5 s (the backlog
    // written meanwhile), the center's
    // server paused 3 s (the request timeout is 2 s), a leaf's server killed, the watchers held
    // back twice, a leaf and the center killed and started again. One cycle here;
    // `HISTORY_CYCLES=16` for the long run.
    let operator = crate::helpers::nats_connect(&center_nats).await;
    let js = async_nats::jetstream::new(operator);
    let start = tokio::time::Instant::now();
    let faults = Faults::default();
    let now = || recorder.now();
    for cycle in 0..cycles() {
        let at = |s: u64| tokio::time::sleep_until(start + Duration::from_secs(cycle * 40 + s));
        // Odd cycles (in a long run) mix them: the link cut, the center paused and a leaf's
        // server killed all at once.
        let mixed = cycle % 2 == 1;
        at(5).await;
        proxy.cut();
        let cut = faults.begin("link cut, backlog", now());
        flood(&js, cycle).await;
        if !mixed {
            at(10).await;
            proxy.heal();
            faults.end(cut, now());
        }
        let paused = center.nats_pid().expect("the center's nats-server");
        at(if mixed { 7 } else { 15 }).await;
        signal(paused, libc::SIGSTOP);
        let pause = faults.begin("center's server paused", now());
        if mixed {
            at(9).await;
            kill9(nats_pid(&leaf_b));
            faults.at("leaf's server killed", now(), Duration::from_secs(5));
        }
        at(if mixed { 10 } else { 18 }).await;
        signal(paused, libc::SIGCONT);
        faults.end(pause, now());
        if mixed {
            at(12).await;
            proxy.heal();
            faults.end(cut, now());
        } else {
            at(23).await;
            kill9(nats_pid(&leaf_b));
            faults.at("leaf's server killed", now(), Duration::from_secs(5));
        }
        for second in [28, 31] {
            at(second).await;
            hold_back_watchers(&js).await;
            faults.at("watchers held back", now(), Duration::from_secs(2));
        }
        at(32).await;
        let killed = faults.begin("leaf killed", now());
        leaf_c = restart_killed(leaf_c).await;
        faults.end(killed, now());
        at(34).await;
        let killed = faults.begin(CENTER_KILLED, now());
        center = restart_killed(center).await;
        faults.end(killed, now());
        at(40).await;
    }
    stop.cancel();
    clients.await.unwrap();

    let report = verdict(&js, (&nodes, &shape), &recorder, &faults).await;
    // (The backlog's records were written with no events: the repair stores theirs too.)
    let log = center.log();
    let repaired =
        log.lines().filter(|l| l.contains("missing from the audit log") && l.contains("hot-")).count();
    println!("events of the hot users the restarted center's repair stored: {repaired}");
    assert!(report.violations.is_empty(), "{report}");
    for app in [leaf_a, leaf_b] {
        app.stop().await;
    }
    drop((leaf_c, center));
}
