//! A 3-node NATS cluster on loopback: three nats-server processes with routes between them and
//! JetStream on each, started with the shipped `nats/nats-cluster.conf` (so the fault suite
//! also checks that file). Nodes can be killed (SIGKILL) and started again on the same ports and
//! store; everything is killed on drop. Each node's log is kept, and a node that does not come
//! up is reported with the tail of every node's log.

use std::{
    fs::OpenOptions,
    path::PathBuf,
    process::{Child, Command, ExitStatus},
    time::{Duration, Instant},
};

use super::{
    nats::{binary, free_port},
    workspace_root,
};

/// How long a cluster may take to elect its JetStream meta leader (and a restarted node to catch
/// up). nats-server's Raft waits 4 to 9 s before a campaign (`minElectionTimeoutDefault`..
/// `maxElectionTimeoutDefault` in server/raft.go) and a split vote starts another round: on a
/// loaded 2-core machine one cold start took 8 s in 300 and CI once saw 30 s pass. 90 s allows
/// ten rounds; a cluster that cannot elect at all still fails, with the nodes' logs.
pub const ELECTION_LIMIT: Duration = Duration::from_secs(90);

/// One node: its ports, name, store and log.
struct Node {
    name: String,
    port: u16,
    cluster_port: u16,
    monitor_port: u16,
    store: tempfile::TempDir,
    log: PathBuf,
    child: Option<Child>,
}

/// How many lines of each node's log a failure message shows.
const LOG_TAIL_LINES: usize = 15;

impl Node {
    /// The end of the node's log, for a failure message, less the warnings our own polling of
    /// `/healthz` writes (they would fill it).
    fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let all: Vec<&str> = text
            .lines()
            .filter(|line| !line.contains("Healthcheck failed"))
            .collect();
        all[all.len().saturating_sub(LOG_TAIL_LINES)..].join("\n")
    }

    /// How the node's process ended, if it was started and has exited.
    fn exit_status(&mut self) -> Option<ExitStatus> {
        self.child.as_mut()?.try_wait().ok().flatten()
    }
}

/// The cluster.
pub struct NatsCluster {
    nodes: Vec<Node>,
    routes: String,
    // The folder of the nodes' logs (removed on drop, after `drop` has killed the nodes).
    _logs: tempfile::TempDir,
}

impl NatsCluster {
    /// Starts `size` nodes and waits until every one reports healthy (JetStream has a leader).
    pub async fn start(size: usize) -> Self {
        let logs = tempfile::tempdir().expect("a folder for the logs");
        let nodes: Vec<Node> = (1..=size)
            .map(|i| Node {
                name: format!("nats-{i}"),
                port: free_port(),
                cluster_port: free_port(),
                monitor_port: free_port(),
                store: tempfile::tempdir().expect("temporary store"),
                log: logs.path().join(format!("nats-{i}.log")),
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
            _logs: logs,
        };
        for i in 0..size {
            cluster.start_node(i);
        }
        cluster.wait_healthy(ELECTION_LIMIT).await;
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
        // Appended to, so a restarted node's log follows its first run's.
        let log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&node.log)
            .expect("the node's log");
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
            .stdout(log.try_clone().expect("the node's log"))
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start nats-server ({}): {e}", binary().display()));
        node.child = Some(child);
        let started = Instant::now();
        while std::net::TcpStream::connect(("127.0.0.1", node.port)).is_err() {
            if let Some(status) = node.exit_status() {
                panic!(
                    "{} exited at start: {status}\n{}",
                    node.name,
                    node.log_tail()
                );
            }
            assert!(
                started.elapsed() < Duration::from_secs(10),
                "{} did not start on port {}\n{}",
                node.name,
                node.port,
                node.log_tail()
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
    /// node that was down, its streams have caught up. Fails at once if a node has exited.
    pub async fn wait_healthy(&mut self, timeout: Duration) {
        let http = reqwest::Client::new();
        let started = Instant::now();
        for index in 0..self.nodes.len() {
            if self.nodes[index].child.is_none() {
                continue;
            }
            let url = format!(
                "http://127.0.0.1:{}/healthz",
                self.nodes[index].monitor_port
            );
            loop {
                let last = match http.get(&url).timeout(Duration::from_secs(2)).send().await {
                    Ok(response) if response.status().is_success() => break,
                    Ok(response) => response.text().await.unwrap_or_default(),
                    Err(e) => e.to_string(),
                };
                let exited = self.exited();
                if !exited.is_empty() || started.elapsed() >= timeout {
                    panic!(
                        "{} not healthy after {:.1?}: {last}\nexited: {exited:?}\n{}",
                        self.nodes[index].name,
                        started.elapsed(),
                        self.logs()
                    );
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }

    /// The nodes that were started and have exited since, with their status.
    fn exited(&mut self) -> Vec<String> {
        self.nodes
            .iter_mut()
            .filter_map(|node| {
                let status = node.exit_status()?;
                Some(format!("{} {status}", node.name))
            })
            .collect()
    }

    /// The tail of every node's log, headed by its name.
    fn logs(&self) -> String {
        self.nodes
            .iter()
            .map(|node| format!("--- {} log:\n{}", node.name, node.log_tail()))
            .collect::<Vec<_>>()
            .join("\n")
    }
}

impl Drop for NatsCluster {
    fn drop(&mut self) {
        for i in 0..self.nodes.len() {
            self.kill_node(i);
        }
    }
}
