//! Row d: `/predict` at 1, 4 and 16 clients with the slow path idle (no worker), then with a
//! slow-worker busy on a backlog, for the shipped models and with settings changed, to show
//! what the model server's scheduler (strict priority, threads within the cores) buys.

use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::{
    Settings,
    fast::{FAST, PredictPoint, SLOW, measure_point},
    inputs::{self, Photo},
    procs::{Env, Gateway, ModelServer, Nats, Worker, scrape},
    stats::round3,
};

/// Row d, one configuration at one concurrency: `/predict` idle, then with the slow path busy.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Isolation {
    pub variant: String,
    pub concurrency: usize,
    pub idle: PredictPoint,
    pub busy: PredictPoint,
    /// Slow jobs finished per second while `busy` was measured: the slow path must not starve.
    pub slow_jobs_per_sec: f64,
}

impl Isolation {
    /// Saturated throughput over idle throughput.
    pub fn throughput_ratio(&self) -> f64 {
        self.busy.requests_per_sec / self.idle.requests_per_sec.max(f64::MIN_POSITIVE)
    }

    /// Saturated p99 over idle p99.
    pub fn p99_ratio(&self) -> f64 {
        self.busy.latency.p99_ms / self.idle.latency.p99_ms.max(f64::MIN_POSITIVE)
    }

    /// Both isolation targets: throughput >= 0.9 x idle, p99 <= 2 x idle.
    pub fn met(&self) -> bool {
        self.throughput_ratio() >= 0.9 && self.p99_ratio() <= 2.0
    }
}

/// How the fast and slow models share the machine in one run of row d: one model server
/// on `models/` with some `config.toml` keys changed and some environment variables set.
#[derive(Debug, Clone, Copy)]
pub struct Sharing {
    pub label: &'static str,
    /// (model, key, value) changes to `config.toml`.
    pub overrides: &'static [(&'static str, &'static str, &'static str)],
    /// The model server's environment variables.
    pub vars: &'static [(&'static str, &'static str)],
}

/// The ways of sharing row d measures, the shipped one first.
pub const SHARINGS: [Sharing; 4] = [
    Sharing {
        label: "shipped: models/ as committed",
        overrides: &[],
        vars: &[],
    },
    Sharing {
        label: "fast model 1 instance x 2 threads",
        overrides: &[(FAST, "instances", "1"), (FAST, "intra_op_threads", "2")],
        vars: &[],
    },
    Sharing {
        label: "no priority (slow model priority = 1)",
        overrides: &[(SLOW, "priority", "1")],
        vars: &[],
    },
    Sharing {
        label: "no scheduler: fast 1 x 2 threads, no priority, TANDEM_INFERENCE_THREADS=64 (before)",
        overrides: &[
            (FAST, "instances", "1"),
            (FAST, "intra_op_threads", "2"),
            (SLOW, "priority", "1"),
        ],
        vars: &[("TANDEM_INFERENCE_THREADS", "64")],
    },
];

/// Row d for one way of sharing the cores, at each of the settings' concurrencies.
pub async fn isolation(
    settings: &Settings,
    env: &Env,
    models: &Path,
    shipped: &ModelServer,
    chelsea: &Photo,
    sharing: Sharing,
) -> anyhow::Result<Vec<Isolation>> {
    let own = if sharing.overrides.is_empty() && sharing.vars.is_empty() {
        None
    } else {
        let repo = inputs::variant_repository(models, &[FAST, SLOW], sharing.overrides)?;
        let server = ModelServer::start_with(env, repo.path(), None, sharing.vars).await?;
        Some((repo, server))
    };
    let server = own.as_ref().map_or(shipped, |(_, server)| server);
    let nats = Nats::start(env).await?;
    let gateway = Gateway::start(env, &nats, &server.url, FAST).await?;
    let mut results = Vec::new();
    for &concurrency in &settings.isolation_concurrency {
        let result = one_concurrency(
            settings,
            env,
            &nats,
            &gateway,
            server,
            chelsea,
            sharing,
            concurrency,
        )
        .await;
        results.push(result?);
    }
    gateway.proc.stop().await;
    nats.proc.stop().await;
    if let Some((_repo, server)) = own {
        server.proc.stop().await;
    }
    Ok(results)
}

/// Idle (no worker: these requests queue the backlog), then with a worker on that backlog.
#[allow(clippy::too_many_arguments)]
async fn one_concurrency(
    settings: &Settings,
    env: &Env,
    nats: &Nats,
    gateway: &Gateway,
    server: &ModelServer,
    chelsea: &Photo,
    sharing: Sharing,
    concurrency: usize,
) -> anyhow::Result<Isolation> {
    let variant = sharing.label;
    let point = async |others: &[(&str, u32)]| {
        let secs = settings.secs;
        measure_point(
            settings,
            gateway,
            server,
            others,
            chelsea,
            variant,
            concurrency,
            secs,
        )
        .await
    };
    let mut others = vec![("nats-server", nats.proc.pid())];
    let idle = point(&others).await?;
    let worker = Worker::start(env, nats, &server.url, SLOW, settings.worker_concurrency).await?;
    others.push(("slow-worker", worker.proc.pid()));
    let done = || scrape(&worker.ops_url, "tandem_worker_jobs_total", "succeeded");
    let before = done().await?;
    let started = std::time::Instant::now();
    let busy = point(&others).await?;
    let slow_jobs = done().await? - before;
    let result = Isolation {
        variant: variant.to_owned(),
        concurrency,
        slow_jobs_per_sec: round3(slow_jobs / started.elapsed().as_secs_f64()),
        idle,
        busy,
    };
    println!(
        "  d. [{variant}] {concurrency} clients: idle {:.1}/s p99 {:.2} ms, busy {:.1}/s p99 {:.2} ms; slow jobs {:.1}/s",
        result.idle.requests_per_sec,
        result.idle.latency.p99_ms,
        result.busy.requests_per_sec,
        result.busy.latency.p99_ms,
        result.slow_jobs_per_sec
    );
    worker.proc.stop().await;
    Ok(result)
}
