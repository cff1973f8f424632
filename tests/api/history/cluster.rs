//! The consistency run of a replicated center: two center nodes on a three-server NATS cluster
//! (the bucket and the audit log with three replicas each, as `examples/cluster` runs them) and a
//! leaf, while the server that leads the bucket's stream is killed (`kill -9`) and started again,
//! then the one that leads the audit log: the servers whose loss costs the most.

use std::time::Duration;

use super::{BUCKET_LEADER_KILLED, LOG_LEADER_KILLED, cycles, for_a_history, start_workload, verdict};
use crate::{
    consistency::{faults::Faults, workload::Node},
    helpers::{NatsCluster, TestApp},
};

#[tokio::test]
async fn a_history_on_a_three_server_center_keeps_every_promise() {
    let mut cluster = NatsCluster::start().await;
    let mut centers = Vec::new();
    for id in ["center-1", "center-2"] {
        let url = cluster.url();
        centers.push(
            TestApp::spawn_with(move |c| {
                for_a_history(c);
                c.service.node_id = id.into();
                c.nats.embedded = false;
                c.nats.url = url;
                c.nats.kv.replicas = 3;
            })
            .await,
        );
    }
    let leaf_urls: Vec<String> =
        cluster.leaf_ports.iter().map(|p| format!("nats-leaf://127.0.0.1:{p}")).collect();
    let leaf = TestApp::spawn_with(move |c| {
        for_a_history(c);
        c.service.node_type = presence::config::NodeType::Leaf;
        c.service.node_id = "leaf".into();
        c.service.region = Some("eu-west".into());
        c.nats.center_url = Some(leaf_urls.join(","));
    })
    .await;
    let nodes: Vec<Node> = centers
        .iter()
        .chain([&leaf])
        .map(|app| Node { name: app.config.service.node_id.clone(), url: app.url("") })
        .collect();
    let (shape, recorder, stop, clients) = start_workload(&nodes);

    // In cycles of 30 s: the bucket's leader killed at 5 s and back at 12 s, the audit log's
    // leader killed at 17 s and back at 24 s (each finds its leader anew: it moves).
    let urls = cluster.url();
    let urls: Vec<&str> = urls.split(',').collect();
    let js = async_nats::jetstream::new(async_nats::connect(urls.as_slice()).await.unwrap());
    let start = tokio::time::Instant::now();
    let faults = Faults::default();
    let now = || recorder.now();
    for cycle in 0..cycles() {
        let at = |s: u64| tokio::time::sleep_until(start + Duration::from_secs(cycle * 30 + s));
        if cycle % 2 == 1 {
            // Odd cycles (in a long run) mix them: the audit log's leader killed too while the
            // bucket's is down (two of three servers, if they differ: no quorum for either).
            at(5).await;
            let bucket = NatsCluster::leader_of(&js, "KV_presence").await;
            cluster.kill(bucket);
            let first = faults.begin(BUCKET_LEADER_KILLED, now());
            at(8).await;
            let log = NatsCluster::leader_of(&js, "PRESENCE_EVENTS").await;
            let second = (log != bucket).then(|| {
                cluster.kill(log);
                faults.begin(LOG_LEADER_KILLED, now())
            });
            at(12).await;
            cluster.restart(bucket);
            if let Some(second) = second {
                cluster.restart(log);
                faults.end(second, now());
            }
            faults.end(first, now());
        }
        let each = [("KV_presence", BUCKET_LEADER_KILLED, 5), ("PRESENCE_EVENTS", LOG_LEADER_KILLED, 17)];
        for (stream, kind, down) in each {
            if cycle % 2 == 1 && stream == "KV_presence" {
                continue;
            }
            at(down).await;
            let leader = NatsCluster::leader_of(&js, stream).await;
            cluster.kill(leader);
            let killed = faults.begin(kind, now());
            at(down + 7).await;
            cluster.restart(leader);
            faults.end(killed, now());
        }
        at(30).await;
    }
    stop.cancel();
    clients.await.unwrap();

    let report = verdict(&js, (&nodes, &shape), &recorder, &faults).await;
    assert!(report.violations.is_empty(), "{report}");
    for app in centers.into_iter().chain([leaf]) {
        app.stop().await;
    }
}
