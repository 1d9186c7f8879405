//! A 3-node NATS cluster on loopback: three nats-server processes with routes between them and
//! JetStream on each, started with the shipped `nats/nats-cluster.conf` (so the fault suite
//! also checks that file). Nodes can be killed (SIGKILL) and started again on the same ports and
//! store; everything is killed on drop.

use std::{
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use super::{
    nats::{binary, free_port},
    workspace_root,
};

/// One node: its ports, name and store.
struct Node {
    name: String,
    port: u16,
    cluster_port: u16,
    monitor_port: u16,
    store: tempfile::TempDir,
    child: Option<Child>,
}

/// The cluster.
pub struct NatsCluster {
    nodes: Vec<Node>,
    routes: String,
}

impl NatsCluster {
    /// Starts `size` nodes and waits until every one reports healthy (JetStream has a leader).
    pub async fn start(size: usize) -> Self {
        let nodes: Vec<Node> = (1..=size)
            .map(|i| Node {
                name: format!("nats-{i}"),
                port: free_port(),
                cluster_port: free_port(),
                monitor_port: free_port(),
                store: tempfile::tempdir().expect("temporary store"),
                child: None,
            })
            .collect();
        let routes = nodes
            .iter()
            .map(|n| format!("nats://127.0.0.1:{}", n.cluster_port))
            .collect::<Vec<_>>()
            .join(", ");
        let mut cluster = Self {
            nodes,
            routes: format!("[{routes}]"),
        };
        for i in 0..size {
            cluster.start_node(i);
        }
        cluster.wait_healthy(Duration::from_secs(30)).await;
        cluster
    }

    /// Every node's client URL, comma-separated (`TANDEM_NATS_URL`).
    pub fn url(&self) -> String {
        self.nodes
            .iter()
            .map(|n| format!("nats://127.0.0.1:{}", n.port))
            .collect::<Vec<_>>()
            .join(",")
    }

    /// The node's server name (`nats-1`, ...), as JetStream's cluster info names it.
    pub fn name(&self, node: usize) -> &str {
        &self.nodes[node].name
    }

    /// The index of the node called `name`.
    pub fn index_of(&self, name: &str) -> Option<usize> {
        self.nodes.iter().position(|n| n.name == name)
    }

    /// Starts (or starts again) a node on its ports and store.
    pub fn start_node(&mut self, index: usize) {
        let routes = self.routes.clone();
        let node = &mut self.nodes[index];
        assert!(node.child.is_none(), "{} is running", node.name);
        let child = Command::new(binary())
            .arg("-c")
            .arg(workspace_root().join("nats/nats-cluster.conf"))
            .env("TANDEM_NATS_NAME", &node.name)
            .env("TANDEM_NATS_LISTEN", format!("127.0.0.1:{}", node.port))
            .env(
                "TANDEM_NATS_MONITOR_LISTEN",
                format!("127.0.0.1:{}", node.monitor_port),
            )
            .env(
                "TANDEM_NATS_CLUSTER_LISTEN",
                format!("127.0.0.1:{}", node.cluster_port),
            )
            .env("TANDEM_NATS_ROUTES", &routes)
            .env("TANDEM_NATS_STORE", node.store.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start nats-server ({}): {e}", binary().display()));
        node.child = Some(child);
        let started = Instant::now();
        while std::net::TcpStream::connect(("127.0.0.1", node.port)).is_err() {
            if let Some(status) = node
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten())
            {
                panic!("{} exited at start: {status}", node.name);
            }
            assert!(
                started.elapsed() < Duration::from_secs(10),
                "{} did not start on port {}",
                node.name,
                node.port
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// SIGKILLs a node, keeping its store.
    pub fn kill_node(&mut self, index: usize) {
        if let Some(mut child) = self.nodes[index].child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Waits until every running node's `/healthz` answers 200: JetStream is up and, for a
    /// node that was down, its streams have caught up.
    pub async fn wait_healthy(&self, timeout: Duration) {
        let http = reqwest::Client::new();
        let started = Instant::now();
        for node in self.nodes.iter().filter(|n| n.child.is_some()) {
            let url = format!("http://127.0.0.1:{}/healthz", node.monitor_port);
            loop {
                let last = match http.get(&url).timeout(Duration::from_secs(2)).send().await {
                    Ok(response) if response.status().is_success() => break,
                    Ok(response) => response.text().await.unwrap_or_default(),
                    Err(e) => e.to_string(),
                };
                assert!(
                    started.elapsed() < timeout,
                    "{} not healthy after {timeout:?}: {last}",
                    node.name
                );
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

impl Drop for NatsCluster {
    fn drop(&mut self) {
        for i in 0..self.nodes.len() {
            self.kill_node(i);
        }
    }
}
