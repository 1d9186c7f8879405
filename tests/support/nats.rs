//! A real nats-server with JetStream on a random loopback port and a temporary store.
//!
//! The binary comes from `TANDEM_NATS_SERVER`, else `.tandem/bin/nats-server` (what
//! `scripts/setup` installs), else `nats-server` on PATH.

use std::{
    net::TcpListener,
    path::PathBuf,
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use super::workspace_root;

/// A nats-server process; killed on drop, its store removed with the temporary folder.
pub struct NatsServer {
    port: u16,
    store: tempfile::TempDir,
    child: Option<Child>,
    /// More command-line options (authentication, TLS, a config file).
    args: Vec<String>,
}

/// The nats-server executable the tests start.
pub fn binary() -> PathBuf {
    if let Some(path) = std::env::var_os("TANDEM_NATS_SERVER") {
        return PathBuf::from(path);
    }
    let installed = workspace_root().join(".tandem/bin/nats-server");
    if installed.exists() {
        return installed;
    }
    PathBuf::from("nats-server")
}

/// A port that was free a moment ago.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

impl NatsServer {
    /// Starts a fresh server and waits until it accepts connections.
    pub fn start() -> Self {
        Self::start_with_args(&[])
    }

    /// Starts a fresh server with more options (e.g. `--user U --pass P`, `--auth TOKEN`,
    /// `--tls --tlscert F --tlskey F`, `-c FILE`), and waits until it accepts connections.
    pub fn start_with_args(args: &[&str]) -> Self {
        let mut server = Self {
            port: free_port(),
            store: tempfile::tempdir().expect("temporary store"),
            child: None,
            args: args.iter().map(|a| (*a).to_owned()).collect(),
        };
        server.launch();
        server
    }

    /// The client port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// `nats://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    fn launch(&mut self) {
        let child = Command::new(binary())
            .args(["-js", "-a", "127.0.0.1", "-p", &self.port.to_string(), "-sd"])
            .arg(self.store.path())
            .args(&self.args)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| {
                panic!(
                    "cannot start nats-server ({}): {e}; run scripts/setup or set TANDEM_NATS_SERVER",
                    binary().display()
                )
            });
        self.child = Some(child);
        let started = Instant::now();
        while std::net::TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            assert!(
                started.elapsed() < Duration::from_secs(10),
                "nats-server did not start on port {}",
                self.port
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Stops the server (SIGKILL: the harshest case for clients), keeping its store.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts it again on the same port and store.
    pub fn restart(&mut self) {
        self.stop();
        self.launch();
    }
}

impl Drop for NatsServer {
    fn drop(&mut self) {
        self.stop();
    }
}
