//! Driving Docker: the client (`TANDEM_DOCKER`, else `docker`), one compose stack per test
//! (its own project name, the repository's compose file plus the tests' override), and the checks
//! every stack ends with (healthy services, clean logs, nothing left after `down -v`).
//!
//! Docker commands block; the tests run on a multi-threaded runtime and call them through
//! [`blocking`], so the load keeps running meanwhile.

use std::{
    process::{Command, Output},
    time::{Duration, Instant},
};

use crate::support::{gateway::Gateway, workspace_root};

/// Compose projects of these tests are called `tandem-compose-test*` (scripts/compose-env's
/// `clean` removes what is left of them).
pub const PROJECT: &str = "tandem-compose-test";
/// Where the tests' gateways (`TANDEM_GATEWAY_PORT`, `TANDEM_GATEWAY_2_PORT`, set in
/// [`Docker::command`]) and NATS nodes (tests/compose/*.yml) are published, on 127.0.0.1.
pub const GATEWAY_PORT: u16 = 18000;
pub const GATEWAY_2_PORT: u16 = 18002;
pub const NATS_PORTS: [u16; 3] = [14222, 14223, 14224];

/// The compose cases run one at a time (one set of ports, a small machine).
pub static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// Runs a blocking call without stalling the runtime's other tasks.
pub fn blocking<T>(f: impl FnOnce() -> T) -> T {
    tokio::task::block_in_place(f)
}

/// The Docker client, once the engine, Compose and the images are known to be there; `None`
/// (with the reason printed) when the compose tests are not asked for. Asked for
/// (`TANDEM_COMPOSE_TESTS=1`) and not there: a panic saying what is missing.
pub fn docker() -> Option<Docker> {
    let wanted = std::env::var("TANDEM_COMPOSE_TESTS").is_ok_and(|v| v == "1");
    if !wanted {
        eprintln!(
            "compose: skipped: TANDEM_COMPOSE_TESTS=1 is not set (scripts/compose-env test runs \
             these tests with Docker)"
        );
        return None;
    }
    let docker = Docker {
        bin: std::env::var("TANDEM_DOCKER").unwrap_or_else(|_| "docker".to_owned()),
    };
    if let Err(e) = docker.try_run(&["info", "--format", "{{.ServerVersion}}"]) {
        panic!(
            "TANDEM_COMPOSE_TESTS=1, but no Docker engine answers `{} info`: {e}\n(scripts/compose-env \
             start brings one)",
            docker.bin
        );
    }
    if let Err(e) = docker.try_run(&["compose", "version"]) {
        panic!(
            "TANDEM_COMPOSE_TESTS=1, but `{} compose` does not work: {e}",
            docker.bin
        );
    }
    for var in ["TANDEM_IMAGE", "TANDEM_NATS_IMAGE"] {
        let image = std::env::var(var).unwrap_or_else(|_| {
            panic!(
                "TANDEM_COMPOSE_TESTS=1, but {var} is not set (scripts/compose-env start sets it)"
            )
        });
        if let Err(e) = docker.try_run(&["image", "inspect", "--format", "{{.Id}}", &image]) {
            panic!("{var}={image}: no such image ({e}); scripts/compose-env start builds it");
        }
    }
    Some(docker)
}

#[derive(Clone)]
pub struct Docker {
    pub bin: String,
}

impl Docker {
    /// `docker args...` in the repository, with the variables the compose files read for the
    /// gateways' published ports: 127.0.0.1 only, away from `scripts/run`'s 8000. The images
    /// (`TANDEM_IMAGE`, `TANDEM_NATS_IMAGE`) come from this process's environment.
    pub fn command(&self, args: &[&str]) -> Command {
        let mut command = Command::new(&self.bin);
        command
            .args(args)
            .current_dir(workspace_root())
            .env("TANDEM_GATEWAY_PORT", format!("127.0.0.1:{GATEWAY_PORT}"))
            .env(
                "TANDEM_GATEWAY_2_PORT",
                format!("127.0.0.1:{GATEWAY_2_PORT}"),
            );
        command
    }

    /// Runs `docker args...`; its stdout, or what it said when it failed.
    pub fn try_run(&self, args: &[&str]) -> Result<String, String> {
        let output = blocking(|| self.command(args).output())
            .map_err(|e| format!("cannot run {}: {e}", self.bin))?;
        outcome(&output)
    }

    /// Runs `docker args...`; panics when it fails.
    pub fn run(&self, args: &[&str]) -> String {
        self.try_run(args)
            .unwrap_or_else(|e| panic!("{} {}: {e}", self.bin, args.join(" ")))
    }
}

fn outcome(output: &Output) -> Result<String, String> {
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    if output.status.success() {
        Ok(stdout)
    } else {
        Err(format!(
            "{}: {}{}",
            output.status,
            stdout,
            String::from_utf8_lossy(&output.stderr)
        ))
    }
}

/// Which deployment a stack runs.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// `docker-compose.yml` (+ tests/compose/local.yml).
    Single,
    /// The same with JetStream's store on a small tmpfs volume (+ small-store.yml).
    SmallStore,
    /// `docker-compose.cluster.yml` (+ tests/compose/local.cluster.yml).
    Cluster,
}

/// One compose stack under test: brought up from nothing, taken down with `down -v` on drop.
pub struct Stack {
    pub docker: Docker,
    pub project: String,
    files: Vec<&'static str>,
    /// Error lines the test's faults explain (substrings), allowed in the logs.
    explained: Vec<String>,
    /// Set once `finish` ran its checks (then drop only cleans up).
    finished: bool,
}

impl Stack {
    /// A stack of `kind` under the project `tandem-compose-test-<name>`, after removing whatever
    /// a previous run of it left.
    pub fn new(docker: &Docker, kind: Kind, name: &str) -> Self {
        let files = match kind {
            Kind::Single => vec!["docker-compose.yml", "tests/compose/local.yml"],
            Kind::SmallStore => vec![
                "docker-compose.yml",
                "tests/compose/local.yml",
                "tests/compose/small-store.yml",
            ],
            Kind::Cluster => vec![
                "docker-compose.cluster.yml",
                "tests/compose/local.cluster.yml",
            ],
        };
        let stack = Self {
            docker: docker.clone(),
            project: format!("{PROJECT}-{name}"),
            files,
            explained: Vec::new(),
            finished: false,
        };
        let _ = stack.try_compose(&["down", "-v", "--remove-orphans", "--timeout", "5"]);
        stack
    }

    fn compose_args<'a>(&'a self, args: &[&'a str]) -> Vec<&'a str> {
        let mut all = vec!["compose", "--project-name", &self.project];
        for file in &self.files {
            all.extend(["-f", file]);
        }
        all.extend(args);
        all
    }

    pub fn try_compose(&self, args: &[&str]) -> Result<String, String> {
        self.docker.try_run(&self.compose_args(args))
    }

    /// `docker compose ... args`; panics (with the services' logs' tail) when it fails.
    pub fn compose(&self, args: &[&str]) -> String {
        match self.try_compose(args) {
            Ok(out) => out,
            Err(e) => {
                let logs = self
                    .try_compose(&["logs", "--no-color", "--tail", "30"])
                    .unwrap_or_default();
                panic!("docker compose {}: {e}\nlogs:\n{logs}", args.join(" "))
            }
        }
    }

    /// `up -d --wait`: every service started, every healthcheck passing; how long it took.
    pub fn up(&self) -> Duration {
        let started = Instant::now();
        self.compose(&["up", "-d", "--wait", "--wait-timeout", "240", "--no-build"]);
        started.elapsed()
    }

    /// The containers of `service` (ids), in replica order.
    pub fn containers(&self, service: &str) -> Vec<String> {
        let mut named: Vec<(String, String)> = self
            .compose(&["ps", "--all", "--format", "{{.Name}} {{.ID}}", service])
            .lines()
            .filter_map(|l| l.split_once(' '))
            .map(|(n, i)| (n.to_owned(), i.to_owned()))
            .collect();
        named.sort();
        named.into_iter().map(|(_, id)| id).collect()
    }

    /// Every container's name and `State.Health.Status` (`none` without a healthcheck).
    pub fn health(&self) -> Vec<(String, String)> {
        let ids: Vec<String> = self
            .compose(&["ps", "--all", "-q"])
            .lines()
            .map(str::to_owned)
            .collect();
        ids.iter()
            .map(|id| {
                let out = self.docker.run(&[
                    "inspect",
                    "--format",
                    "{{.Name}} {{.State.Status}} {{if .State.Health}}{{.State.Health.Status}}{{else}}none{{end}}",
                    id,
                ]);
                let mut words = out.split_whitespace();
                let name = words.next().unwrap_or_default().trim_start_matches('/').to_owned();
                let state = words.collect::<Vec<_>>().join(" ");
                (name, state)
            })
            .collect()
    }

    /// Asserts every container runs, and every one with a healthcheck is `healthy`; every
    /// Tandem service has one.
    pub fn assert_all_healthy(&self) {
        let health = self.health();
        assert!(!health.is_empty(), "{}: no containers", self.project);
        for (name, state) in &health {
            let tandem = !name.contains("nats");
            let ok = state == "running healthy" || (!tandem && state == "running none");
            assert!(ok, "{}: {name} is `{state}`; all: {health:?}", self.project);
        }
    }

    /// Waits (at most `timeout`) until every container runs and is healthy where it can be.
    pub async fn wait_all_healthy(&self, timeout: Duration) {
        let started = Instant::now();
        loop {
            let health = self.health();
            let ok = health
                .iter()
                .all(|(_, s)| s == "running healthy" || s == "running none");
            if ok {
                return;
            }
            assert!(
                started.elapsed() < timeout,
                "{}: not all healthy after {timeout:?}: {health:?}",
                self.project
            );
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }

    /// A client of the gateway published on `port`.
    pub fn gateway(port: u16) -> Gateway {
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(5))
            .build()
            .unwrap();
        Gateway::new(&format!("http://127.0.0.1:{port}"), http)
    }

    /// Allows log lines containing `what` (an error a fault explains).
    pub fn explain(&mut self, what: &str) {
        self.explained.push(what.to_owned());
    }

    /// Error and panic lines of `docker compose logs` that no fault explains.
    pub fn unexplained_log_lines(&self) -> Vec<String> {
        let logs = self.compose(&["logs", "--no-color"]);
        logs.lines()
            .filter(|line| {
                let bad = line.contains("panicked")
                    || line.contains(" ERROR ")
                    || line.contains("[ERR]")
                    || line.contains("[FTL]");
                bad && !self.explained.iter().any(|e| line.contains(e.as_str()))
            })
            .map(str::to_owned)
            .collect()
    }

    /// The end of every stack: clean logs, then `down -v`, then nothing of the project left
    /// (containers, volumes, networks).
    pub fn finish(mut self) {
        let unexplained = self.unexplained_log_lines();
        assert!(
            unexplained.is_empty(),
            "{}: error lines in the logs that no fault explains:\n  {}",
            self.project,
            unexplained.join("\n  ")
        );
        self.compose(&["down", "-v", "--remove-orphans"]);
        let label = format!("label=com.docker.compose.project={}", self.project);
        for what in [
            vec!["ps", "-aq", "--filter", &label],
            vec!["volume", "ls", "-q", "--filter", &label],
            vec!["network", "ls", "-q", "--filter", &label],
        ] {
            let left = self.docker.run(&what);
            assert!(
                left.trim().is_empty(),
                "{}: `down -v` left {}: {left}",
                self.project,
                what[0]
            );
        }
        self.finished = true;
    }

    /// The compose files' folder name for volumes and networks: `<project>_<name>`.
    pub fn volume(&self, name: &str) -> String {
        format!("{}_{name}", self.project)
    }

    pub fn network(&self) -> String {
        format!("{}_default", self.project)
    }
}

impl Drop for Stack {
    fn drop(&mut self) {
        if !self.finished {
            if std::thread::panicking() {
                let logs = self
                    .try_compose(&["logs", "--no-color", "--tail", "40"])
                    .unwrap_or_default();
                eprintln!("compose: {} failed; its logs' end:\n{logs}", self.project);
                if std::env::var("TANDEM_COMPOSE_KEEP").is_ok_and(|v| v == "1") {
                    eprintln!(
                        "compose: TANDEM_COMPOSE_KEEP=1: {} left running",
                        self.project
                    );
                    return;
                }
            }
            let _ = self.try_compose(&["down", "-v", "--remove-orphans", "--timeout", "5"]);
        }
    }
}
