//! The real services as separate processes: nats-server with a temporary store, the model
//! server, the gateway and slow-workers, each on a random loopback port, killed on drop.

use std::{
    net::SocketAddr,
    path::{Path, PathBuf},
    process::Stdio,
    time::{Duration, Instant},
};

use anyhow::{Context, bail};
use tokio::process::{Child, Command};

use crate::client;

/// Where the binaries and support files are, shared by every process started.
#[derive(Debug, Clone)]
pub struct Env {
    /// The repository root (nats/nats-server.conf, models/).
    pub root: PathBuf,
    /// Where `tandem-model-server`, `tandem-gateway` and `tandem-slow-worker` are.
    pub bin_dir: PathBuf,
    pub nats_server: PathBuf,
    pub ort_dylib: Option<PathBuf>,
    /// Each process's log: `<log_dir>/<name>-<n>.log`.
    pub log_dir: PathBuf,
    /// `RUST_LOG` of every service.
    pub log_level: String,
    /// Where nats-server stores are created (tmpfs when there is one).
    pub store_parent: PathBuf,
}

/// A port that was free a moment ago.
pub fn free_port() -> anyhow::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

/// One started process; SIGKILLed when dropped.
#[derive(Debug)]
pub struct Proc {
    pub name: String,
    child: Child,
    log: PathBuf,
}

impl Proc {
    fn spawn(env: &Env, name: &str, mut command: Command) -> anyhow::Result<Self> {
        std::fs::create_dir_all(&env.log_dir)?;
        let log = (1..)
            .map(|n| env.log_dir.join(format!("{name}-{n}.log")))
            .find(|p| !p.exists())
            .context("no log file name left")?;
        let file = std::fs::File::create(&log)?;
        command
            .stdout(Stdio::from(file.try_clone()?))
            .stderr(Stdio::from(file))
            .stdin(Stdio::null())
            .kill_on_drop(true);
        let child = command
            .spawn()
            .with_context(|| format!("cannot start {name}"))?;
        Ok(Self {
            name: name.to_owned(),
            child,
            log,
        })
    }

    /// The process id (0 once reaped).
    pub fn pid(&self) -> u32 {
        self.child.id().unwrap_or(0)
    }

    /// An error with the end of the log if the process has exited.
    fn check_alive(&mut self) -> anyhow::Result<()> {
        if let Some(status) = self.child.try_wait()? {
            let log = std::fs::read_to_string(&self.log).unwrap_or_default();
            let tail: String = log.lines().rev().take(20).collect::<Vec<_>>().join("\n");
            bail!("{} exited ({status}); end of its log:\n{tail}", self.name);
        }
        Ok(())
    }

    /// Polls `url` until it answers 200, failing early if the process exits.
    async fn wait_ready(&mut self, url: &str, timeout: Duration) -> anyhow::Result<()> {
        let started = Instant::now();
        loop {
            self.check_alive()?;
            if let Ok((status, _)) = client::get_url(url).await
                && status.is_success()
            {
                return Ok(());
            }
            if started.elapsed() > timeout {
                bail!(
                    "{} not ready at {url} after {timeout:?} (log: {})",
                    self.name,
                    self.log.display()
                );
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// SIGKILL and reap.
    pub async fn stop(mut self) {
        let _ = self.child.kill().await;
    }
}

/// A service command with every Tandem setting at its default (none inherited from the
/// caller's environment: API keys, timeouts, limits), except what the caller sets next.
fn service(env: &Env, binary: &str, nice: Option<i32>) -> Command {
    let path = env.bin_dir.join(binary);
    let mut command = match nice {
        Some(n) => {
            let mut c = Command::new("nice");
            c.arg("-n").arg(n.to_string()).arg(path);
            c
        }
        None => Command::new(path),
    };
    for (key, _) in std::env::vars_os() {
        if key.to_string_lossy().starts_with("TANDEM_") {
            command.env_remove(key);
        }
    }
    command
        .current_dir(&env.root)
        .env("RUST_LOG", &env.log_level)
        .env_remove("OTEL_EXPORTER_OTLP_ENDPOINT")
        .env_remove("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
        .env_remove("TANDEM_LOG_FORMAT");
    if let Some(dylib) = &env.ort_dylib {
        command.env("ORT_DYLIB_PATH", dylib);
    }
    command
}

/// nats-server with JetStream, the project's configuration, a fresh temporary store.
#[derive(Debug)]
pub struct Nats {
    pub proc: Proc,
    pub url: String,
    /// `http://127.0.0.1:PORT`: `/connz`, `/jsz` (row e's traffic per job).
    pub monitor_url: String,
    _store: tempfile::TempDir,
}

impl Nats {
    pub async fn start(env: &Env) -> anyhow::Result<Self> {
        let store = tempfile::Builder::new()
            .prefix("tandem-bench-nats-")
            .tempdir_in(&env.store_parent)?;
        let port = free_port()?;
        let monitor = free_port()?;
        let mut command = Command::new(&env.nats_server);
        command
            .arg("-c")
            .arg(env.root.join("nats/nats-server.conf"))
            .env("TANDEM_NATS_STORE", store.path())
            .env("TANDEM_NATS_LISTEN", format!("127.0.0.1:{port}"))
            .env("TANDEM_NATS_MONITOR_LISTEN", format!("127.0.0.1:{monitor}"));
        let mut proc = Proc::spawn(env, "nats-server", command)?;
        proc.wait_ready(
            &format!("http://127.0.0.1:{monitor}/healthz?js-enabled-only=true"),
            Duration::from_secs(20),
        )
        .await?;
        Ok(Self {
            proc,
            url: format!("nats://127.0.0.1:{port}"),
            monitor_url: format!("http://127.0.0.1:{monitor}"),
            _store: store,
        })
    }
}

/// The model server on a model repository.
#[derive(Debug)]
pub struct ModelServer {
    pub proc: Proc,
    pub url: String,
    pub metrics_url: String,
}

impl ModelServer {
    /// Starts it on `repository` (under `nice -n N` when given) and waits until every model
    /// is loaded.
    pub async fn start(env: &Env, repository: &Path, nice: Option<i32>) -> anyhow::Result<Self> {
        Self::start_with(env, repository, nice, &[]).await
    }

    /// [`Self::start`] with more environment variables.
    pub async fn start_with(
        env: &Env,
        repository: &Path,
        nice: Option<i32>,
        vars: &[(&str, &str)],
    ) -> anyhow::Result<Self> {
        let port = free_port()?;
        let ops = free_port()?;
        let mut command = service(env, "tandem-model-server", nice);
        command.envs(vars.iter().copied());
        command
            .env("TANDEM_MODEL_REPOSITORY", repository)
            .env("TANDEM_MODEL_SERVER_ADDR", format!("127.0.0.1:{port}"))
            .env(
                "TANDEM_MODEL_SERVER_METRICS_ADDR",
                format!("127.0.0.1:{ops}"),
            );
        let mut proc = Proc::spawn(env, "model-server", command)?;
        let metrics_url = format!("http://127.0.0.1:{ops}");
        proc.wait_ready(&format!("{metrics_url}/readyz"), Duration::from_secs(120))
            .await?;
        Ok(Self {
            proc,
            url: format!("http://127.0.0.1:{port}"),
            metrics_url,
        })
    }
}

/// The gateway.
#[derive(Debug)]
pub struct Gateway {
    pub proc: Proc,
    pub addr: SocketAddr,
}

impl Gateway {
    /// Starts it with `fast_model` and waits for `/readyz`.
    pub async fn start(
        env: &Env,
        nats: &Nats,
        model_server_url: &str,
        fast_model: &str,
    ) -> anyhow::Result<Self> {
        Self::start_with(env, nats, model_server_url, fast_model, &[]).await
    }

    /// [`Gateway::start`] with more settings (`TANDEM_*` variables and their values).
    pub async fn start_with(
        env: &Env,
        nats: &Nats,
        model_server_url: &str,
        fast_model: &str,
        settings: &[(&str, String)],
    ) -> anyhow::Result<Self> {
        let addr = SocketAddr::from(([127, 0, 0, 1], free_port()?));
        let mut command = service(env, "tandem-gateway", None);
        command
            .env("TANDEM_GATEWAY_ADDR", addr.to_string())
            .env("TANDEM_NATS_URL", &nats.url)
            .env("TANDEM_MODEL_SERVER_URL", model_server_url)
            .env("TANDEM_FAST_MODEL", fast_model)
            // Queued jobs are never the limit of a measurement.
            .env("TANDEM_QUEUE_MAX_JOBS", "1000000")
            .envs(settings.iter().map(|(k, v)| (k, v)));
        let mut proc = Proc::spawn(env, "gateway", command)?;
        proc.wait_ready(&format!("http://{addr}/readyz"), Duration::from_secs(60))
            .await?;
        Ok(Self { proc, addr })
    }

    /// `http://ADDR`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }
}

/// A slow-worker.
#[derive(Debug)]
pub struct Worker {
    pub proc: Proc,
    pub ops_url: String,
}

impl Worker {
    /// Starts it with `slow_model` running `concurrency` jobs at once; waits for `/readyz`.
    pub async fn start(
        env: &Env,
        nats: &Nats,
        model_server_url: &str,
        slow_model: &str,
        concurrency: usize,
    ) -> anyhow::Result<Self> {
        Self::start_with(env, nats, model_server_url, slow_model, concurrency, &[]).await
    }

    /// [`Worker::start`] with more settings (`TANDEM_*` variables and their values).
    pub async fn start_with(
        env: &Env,
        nats: &Nats,
        model_server_url: &str,
        slow_model: &str,
        concurrency: usize,
        settings: &[(&str, String)],
    ) -> anyhow::Result<Self> {
        let ops = free_port()?;
        let mut command = service(env, "tandem-slow-worker", None);
        command
            .env("TANDEM_WORKER_HTTP_ADDR", format!("127.0.0.1:{ops}"))
            .env("TANDEM_NATS_URL", &nats.url)
            .env("TANDEM_MODEL_SERVER_URL", model_server_url)
            .env("TANDEM_SLOW_MODEL", slow_model)
            .env("TANDEM_WORKER_CONCURRENCY", concurrency.to_string())
            .envs(settings.iter().map(|(k, v)| (k, v)));
        let mut proc = Proc::spawn(env, "slow-worker", command)?;
        let ops_url = format!("http://127.0.0.1:{ops}");
        proc.wait_ready(&format!("{ops_url}/readyz"), Duration::from_secs(60))
            .await?;
        Ok(Self { proc, ops_url })
    }
}

/// Sum of a Prometheus series' `_sum` and `_count` (or a counter's value) over every label set
/// whose labels contain `labels`, from a `/metrics` page.
pub async fn scrape(url: &str, metric: &str, labels: &str) -> anyhow::Result<f64> {
    let (_, body) = client::get_url(&format!("{url}/metrics")).await?;
    Ok(sum_series(&String::from_utf8_lossy(&body), metric, labels))
}

fn sum_series(text: &str, metric: &str, labels: &str) -> f64 {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| {
            let (series, value) = l.rsplit_once(' ')?;
            let name = series.split('{').next()?;
            (name == metric && series.contains(labels)).then(|| value.parse::<f64>().ok())?
        })
        .sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn series_are_summed_over_matching_labels() {
        let text = "# HELP x\n\
            tandem_model_inference_duration_seconds_sum{model=\"a\"} 0.5\n\
            tandem_model_inference_duration_seconds_sum{model=\"b\"} 2\n\
            tandem_model_inference_duration_seconds_count{model=\"a\"} 10\n\
            tandem_worker_jobs_total{outcome=\"succeeded\"} 7\n";
        let sum = |m, l| sum_series(text, m, l);
        assert_eq!(
            sum("tandem_model_inference_duration_seconds_sum", "model=\"a\""),
            0.5
        );
        assert_eq!(sum("tandem_model_inference_duration_seconds_sum", ""), 2.5);
        assert_eq!(
            sum("tandem_model_inference_duration_seconds_count", "\"a\""),
            10.0
        );
        assert_eq!(sum("tandem_worker_jobs_total", "succeeded"), 7.0);
        assert_eq!(sum("missing", ""), 0.0);
    }
}
