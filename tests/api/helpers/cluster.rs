//! A three-server NATS cluster as the center.

use std::{
    process::{Child, Command, Stdio},
    time::Duration,
};

use tempfile::TempDir;

use super::{eventually, free_port};

/// Three nats-servers clustered as the center (JetStream domain `center`), each with a leafnode
/// listener, for tests of a replicated bucket.
pub(crate) struct NatsCluster {
    children: Vec<Option<Child>>,
    confs: Vec<std::path::PathBuf>,
    pub client_ports: Vec<u16>,
    pub leaf_ports: Vec<u16>,
    _dir: TempDir,
}

impl NatsCluster {
    pub(crate) async fn start() -> Self {
        // A free port can be taken between its choice and a server's bind (by another test's
        // outgoing connection): a server that exited at once is started over on new ports.
        for _ in 0..3 {
            let mut cluster = Self::launch();
            if cluster.started().await {
                return cluster;
            }
        }
        panic!("the NATS cluster did not start in three attempts");
    }

    fn launch() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let client_ports: Vec<u16> = (0..3).map(|_| free_port()).collect();
        let route_ports: Vec<u16> = (0..3).map(|_| free_port()).collect();
        let leaf_ports: Vec<u16> = (0..3).map(|_| free_port()).collect();
        let routes = route_ports
            .iter()
            .map(|p| format!("\"nats-route://127.0.0.1:{p}\""))
            .collect::<Vec<_>>()
            .join(", ");
        let confs: Vec<_> = (0..3).map(|i| dir.path().join(format!("c{i}.conf"))).collect();
        let children = (0..3)
            .map(|i| {
                let conf = &confs[i];
                std::fs::write(
                    conf,
                    format!(
                        "server_name: c{i}\nlisten: \"127.0.0.1:{}\"\njetstream {{ domain: center, store_dir: {:?} }}\n\
                         cluster {{ name: presence-center, listen: \"127.0.0.1:{}\", routes: [{routes}] }}\n\
                         leafnodes {{ listen: \"127.0.0.1:{}\", no_advertise: true }}\n",
                        client_ports[i],
                        dir.path().join(format!("js{i}")).display().to_string(),
                        route_ports[i],
                        leaf_ports[i],
                    ),
                )
                .unwrap();
                Some(server(conf))
            })
            .collect();
        Self { children, confs, client_ports, leaf_ports, _dir: dir }
    }

    /// Whether all three servers run and JetStream answers (a meta leader was elected).
    async fn started(&mut self) -> bool {
        let url = format!("nats://127.0.0.1:{}", self.client_ports[0]);
        let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
        while tokio::time::Instant::now() < deadline {
            let exited = self.children.iter_mut().flatten().any(|c| c.try_wait().ok().flatten().is_some());
            if exited {
                return false;
            }
            if let Ok(client) = async_nats::connect(url.as_str()).await
                && async_nats::jetstream::new(client).query_account().await.is_ok()
            {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("timed out after 60s waiting for: the cluster elects a JetStream meta leader");
    }

    /// All three client URLs, comma-separated (as `nats.url` takes them).
    pub(crate) fn url(&self) -> String {
        self.client_ports.iter().map(|p| format!("nats://127.0.0.1:{p}")).collect::<Vec<_>>().join(",")
    }

    /// Server `i` started again on its configuration and store, after [`NatsCluster::kill`].
    pub(crate) fn restart(&mut self, i: usize) {
        assert!(self.children[i].is_none(), "c{i} is running");
        self.children[i] = Some(server(&self.confs[i]));
    }

    /// The server that leads `stream` now (`c0`, `c1` or `c2`), asked through `js`.
    pub(crate) async fn leader_of(js: &async_nats::jetstream::Context, stream: &str) -> usize {
        let what = format!("{stream} has a leader");
        let leader = eventually(Duration::from_secs(30), &what, || async {
            let mut stream = js.get_stream(stream).await.ok()?;
            stream.info().await.ok()?.cluster.clone()?.leader
        })
        .await;
        leader.trim_start_matches('c').parse().unwrap()
    }

    /// `kill -9` of server `i`.
    pub(crate) fn kill(&mut self, i: usize) {
        if let Some(mut child) = self.children[i].take() {
            child.kill().unwrap();
            child.wait().unwrap();
        }
    }
}

fn server(conf: &std::path::Path) -> Child {
    let bin = presence::nats::server::find_binary(None).unwrap();
    Command::new(bin).arg("-c").arg(conf).stdout(Stdio::null()).stderr(Stdio::null()).spawn().unwrap()
}

impl Drop for NatsCluster {
    fn drop(&mut self) {
        for i in 0..3 {
            self.kill(i);
        }
    }
}
