//! `tandem-bench`: starts the real services and measures them against the models' own speed.
//!
//! Rows (see BENCHMARKS.md): a. the floor, each model on ONNX Runtime in process; b. `/predict`
//! latency and throughput against concurrency; c. submit -> SSE `succeeded`; d. `/predict` with
//! the slow queue saturated; e. the pipeline's ceiling with the null model; f. 10,000 SSE
//! clients on one job; g. escalation: a mixed workload with `escalate=always` against `auto`
//! on thresholds `tandem calibrate` chose for it; s. a soak: the null model's jobs for 30 min or
//! 100,000 jobs, every process's RSS sampled. The services run as the release binaries, each its own process, on
//! random loopback ports, with nats-server on a temporary store. The load generator is this
//! process: one thread, keep-alive HTTP/1.1 connections.
//!
//! Layout: `stats` (percentiles, CPU and memory from /proc), `client` (HTTP and SSE clients),
//! `load` (closed-loop load), `procs` (the services), `inputs` (photos, model repositories with
//! changed settings), `floor`, `fast` (b, d), `slow` (c, e), `fanout` (f), `calibration` (g's
//! workload, the test photos' variants, and `tandem calibrate` on it), `escalation` (g),
//! `paired` (floor and service in alternation), `report` (targets), `tables` (markdown),
//! `output` (the files written), `breakdown` (where the time goes), `variants` (row b's other
//! settings), `soak` (s), `chart` (the PNGs).

mod breakdown;
mod calibration;
mod chart;
mod client;
mod escalation;
mod fanout;
mod fast;
mod floor;
mod inputs;
mod isolation;
mod load;
mod output;
mod paired;
mod procs;
mod report;
mod slow;
mod soak;
mod stats;
mod tables;
mod traffic;
mod variants;

use std::{
    path::{Path, PathBuf},
    time::Instant,
};

use anyhow::Context;
use clap::Parser;
use serde::{Deserialize, Serialize};

use crate::{
    fast::{FAST, SLOW},
    procs::ModelServer,
    report::Results,
};

/// Measures Tandem against its models' own speed and writes the tables, a JSON of every
/// measurement and a chart. Run from the repository root, after `scripts/setup` and a
/// release build (`scripts/bench` does all three).
#[derive(Debug, Clone, Parser, Serialize, Deserialize)]
#[command(name = "tandem-bench", version, args_override_self = true)]
pub struct Settings {
    /// Rows to run, of a (floor), b (/predict), c (slow answer), d (isolation), e (pipeline),
    /// f (SSE fan-out), g (escalation), s (soak).
    #[arg(long, value_delimiter = ',', default_value = "a,b,c,d,e,f,g,s")]
    pub rows: Vec<String>,
    /// Seconds each measurement runs (row b with the 12-megapixel photo: --big-secs).
    #[arg(long, default_value_t = 5.0)]
    pub secs: f64,
    /// Seconds each 12-megapixel /predict point runs.
    #[arg(long, default_value_t = 8.0)]
    pub big_secs: f64,
    /// Seconds of warm-up before each measurement (not counted).
    #[arg(long, default_value_t = 1.0)]
    pub warmup_secs: f64,
    /// Seconds each floor measurement runs.
    #[arg(long, default_value_t = 2.0)]
    pub floor_secs: f64,
    /// Concurrencies of row b.
    #[arg(long, value_delimiter = ',', default_value = "1,4,16,64")]
    pub concurrency: Vec<usize>,
    /// Clients of the paired throughput comparison (row b).
    #[arg(long, default_value_t = 16)]
    #[serde(default)]
    pub throughput_concurrency: usize,
    /// Jobs submitted one at a time in row c (light load).
    #[arg(long, default_value_t = 40)]
    pub light_jobs: usize,
    /// Clients submitting and waiting in row c at saturation.
    #[arg(long, default_value_t = 8)]
    pub saturation_clients: usize,
    /// Worker concurrencies tried at saturation in row c.
    #[arg(long, value_delimiter = ',', default_value = "1,4")]
    pub saturation_worker_concurrency: Vec<usize>,
    /// TANDEM_WORKER_CONCURRENCY of the slow-worker in rows c (light) and d.
    #[arg(long, default_value_t = 1)]
    pub worker_concurrency: usize,
    /// /predict clients in row d (each measured idle and with the slow path saturated).
    #[arg(long, value_delimiter = ',', default_value = "1,4,16")]
    #[serde(deserialize_with = "one_or_many")]
    pub isolation_concurrency: Vec<usize>,
    /// Clients in row e.
    #[arg(long, default_value_t = 128)]
    pub pipeline_clients: usize,
    /// Worker processes in row e.
    #[arg(long, default_value_t = 1)]
    pub pipeline_workers: usize,
    /// TANDEM_WORKER_CONCURRENCY of each worker in row e.
    #[arg(long, default_value_t = 64)]
    pub pipeline_worker_concurrency: usize,
    /// SSE clients in row f.
    #[arg(long, default_value_t = 10_000)]
    pub sse_clients: usize,
    /// Clients submitting the mixed workload in row g.
    #[arg(long, default_value_t = 4)]
    #[serde(default)]
    pub escalation_clients: usize,
    /// Seconds each policy submits in each round of row g (then the slow path drains).
    #[arg(long, default_value_t = 6.0)]
    #[serde(default)]
    pub escalation_secs: f64,
    /// Rounds of row g: each runs both policies, in alternating order.
    #[arg(long, default_value_t = 2)]
    #[serde(default)]
    pub escalation_rounds: usize,
    /// TANDEM_ESCALATE_AUDIT_RATE of row g's gateway: the share of skipped jobs audited.
    #[arg(long, default_value_t = 0.2)]
    #[serde(default)]
    pub audit_rate: f64,
    /// Jobs of the soak (row s): it ends after these, or after --soak-secs.
    #[arg(long, default_value_t = 100_000)]
    #[serde(default)]
    pub soak_jobs: usize,
    /// Upper bound of the soak's duration, seconds.
    #[arg(long, default_value_t = 1800.0)]
    #[serde(default)]
    pub soak_secs: f64,
    /// Clients of the soak, each submitting a job and waiting for its end (the worker runs
    /// --pipeline-worker-concurrency jobs at once).
    #[arg(long, default_value_t = 32)]
    #[serde(default)]
    pub soak_clients: usize,
    /// Share of --soak-jobs done before the soak's RSS baseline is taken (the warm-up).
    #[arg(long, default_value_t = 0.25)]
    #[serde(default)]
    pub soak_warmup_share: f64,
    /// Seconds between the soak's samples of RSS and latency.
    #[arg(long, default_value_t = 1.0)]
    #[serde(default)]
    pub soak_interval_secs: f64,
    /// Where the service binaries are.
    #[arg(long, default_value = "target/release")]
    pub bin_dir: PathBuf,
    /// Where results.json, table.md and predict-latency.png go.
    #[arg(long, default_value = "bench/results")]
    pub out_dir: PathBuf,
    /// Also write this markdown file from bench/BENCHMARKS.template.md.
    #[arg(long)]
    pub benchmarks_md: Option<PathBuf>,
    /// RUST_LOG of every service.
    #[arg(long, default_value = "warn")]
    pub log_level: String,
    /// A smoke test: every row, tiny durations, 500 SSE clients, a 2,000-job soak (overrides
    /// the above).
    #[arg(long)]
    pub quick: bool,
    /// Measure nothing: write the tables, chart and --benchmarks-md again from this
    /// results.json of an earlier run (after editing the template, say).
    #[arg(long)]
    pub report_only: Option<PathBuf>,
}

/// A number (results.json of earlier runs) or a list of them.
fn one_or_many<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Vec<usize>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum OneOrMany {
        One(usize),
        Many(Vec<usize>),
    }
    Ok(match OneOrMany::deserialize(d)? {
        OneOrMany::One(n) => vec![n],
        OneOrMany::Many(v) => v,
    })
}

impl Settings {
    fn row(&self, row: &str) -> bool {
        self.rows.iter().any(|r| r == row)
    }

    fn apply_quick(&mut self) {
        if self.quick {
            self.secs = 1.0;
            self.big_secs = 2.0;
            self.warmup_secs = 0.3;
            self.floor_secs = 0.3;
            self.light_jobs = 5;
            self.sse_clients = self.sse_clients.min(500);
            self.pipeline_clients = self.pipeline_clients.min(32);
            self.escalation_secs = 1.5;
            self.escalation_rounds = 1;
            self.soak_jobs = self.soak_jobs.min(2000);
            self.soak_secs = self.soak_secs.min(60.0);
            self.soak_interval_secs = self.soak_interval_secs.min(0.25);
        }
    }
}

fn main() -> anyhow::Result<()> {
    let mut settings = Settings::parse();
    settings.apply_quick();
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?
        .block_on(run(settings))
}

async fn run(settings: Settings) -> anyhow::Result<()> {
    let started = Instant::now();
    let root = std::env::current_dir()?;
    anyhow::ensure!(
        root.join("models").is_dir() && root.join("nats/nats-server.conf").is_file(),
        "run tandem-bench from the repository root (scripts/bench does)"
    );
    if let Some(path) = &settings.report_only {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read {}", path.display()))?;
        let mut results: Results = serde_json::from_str(&text)?;
        results.compute_targets();
        return output::write_outputs(&settings, &root, &results);
    }
    let nofile = rlimit::increase_nofile_limit(u64::MAX)?;
    if (nofile as usize) < settings.sse_clients + 512 {
        println!(
            "warning: open files limited to {nofile}; row f needs about {}",
            settings.sse_clients + 512
        );
    }
    let env = environment(&settings, &root)?;
    let machine = stats::Machine::read();
    println!(
        "tandem-bench: {} cores, {}; load average {:?}; logs in {}",
        machine.cores,
        machine.cpu_model,
        machine.load_before,
        env.log_dir.display()
    );
    let models = root.join("models");
    let chelsea = inputs::chelsea(&root)?;
    let big = inputs::twelve_megapixel(&root)?;
    let tiny = inputs::tiny()?;
    println!(
        "12-megapixel photo: {} x {}, {:.1} MB",
        big.width,
        big.height,
        big.bytes.len() as f64 / 1e6
    );

    let mut results = Results {
        machine,
        command: std::env::args().collect::<Vec<_>>().join(" "),
        git_commit: output::git_commit(&root),
        started_at: time::OffsetDateTime::now_utc()
            .format(&time::format_description::well_known::Rfc3339)?,
        total_secs: 0.0,
        settings: settings.clone(),
        floor: None,
        http_floor: None,
        paired: Vec::new(),
        predict: Vec::new(),
        slow_answer: Vec::new(),
        isolation: Vec::new(),
        pipeline: None,
        submit_only: None,
        fanout: None,
        escalation: None,
        soak: None,
        targets: Vec::new(),
    };
    let mut failures = Vec::new();
    let mut failed = |row: &str, e: anyhow::Error| {
        println!("row {row} failed: {e:#}");
        failures.push(format!("{row}: {e:#}"));
    };

    if settings.row("a") {
        println!("a. floor");
        match floor::measure(
            &models,
            env.ort_dylib.as_deref(),
            &[FAST, SLOW],
            &[&chelsea, &big],
            settings.floor_secs,
        )
        .await
        {
            Ok(f) => results.floor = Some(f),
            Err(e) => failed("a", e),
        }
    }
    let shipped = ModelServer::start(&env, &models, None)
        .await
        .context("starting the model server on models/")?;
    if settings.row("b") {
        println!("b. /predict");
        let curve = fast::predict_curve(
            &settings,
            &env,
            &shipped,
            &[(&chelsea, settings.secs), (&big, settings.big_secs)],
            &settings.concurrency,
            "shipped",
        )
        .await;
        match curve {
            Ok(points) => results.predict.extend(points),
            Err(e) => failed("b", e),
        }
        match paired::fast(&settings, &env, &shipped, &chelsea).await {
            Ok(p) => results.paired.extend(p),
            Err(e) => failed("b (paired)", e),
        }
        match fast::http_floor(&settings, &env, &shipped).await {
            Ok(h) => results.http_floor = Some(h),
            Err(e) => failed("b (http floor)", e),
        }
        match variants::row_b(&settings, &env, &models, &chelsea).await {
            Ok(points) => results.predict.extend(points),
            Err(e) => failed("b (other settings)", e),
        }
    }
    if settings.row("c") {
        println!("c. submit -> SSE succeeded");
        match slow::slow_answer(&settings, &env, &shipped, &chelsea).await {
            Ok(runs) => results.slow_answer = runs,
            Err(e) => failed("c", e),
        }
        match paired::slow(&settings, &env, &shipped, &chelsea).await {
            Ok(p) => results.paired.push(p),
            Err(e) => failed("c (paired)", e),
        }
    }
    if settings.row("d") {
        println!("d. /predict with the slow queue saturated");
        for sharing in isolation::SHARINGS {
            match isolation::isolation(&settings, &env, &models, &shipped, &chelsea, sharing).await
            {
                Ok(i) => results.isolation.extend(i),
                Err(e) => failed("d", e),
            }
        }
    }
    if settings.row("e") {
        println!("e. pipeline ceiling (null model)");
        match slow::pipeline(&settings, &env, &shipped, &tiny).await {
            Ok((run, submit)) => {
                results.pipeline = Some(run);
                results.submit_only = Some(submit);
            }
            Err(e) => failed("e", e),
        }
    }
    if settings.row("f") {
        println!("f. SSE fan-out");
        match fanout::fanout(&settings, &env, &shipped, &tiny).await {
            Ok(f) => results.fanout = Some(f),
            Err(e) => failed("f", e),
        }
    }
    if settings.row("g") {
        println!("g. escalation: always against auto");
        let out = root.join(&settings.out_dir);
        match escalation::row_g(&settings, &env, &shipped, &out).await {
            Ok(g) => results.escalation = Some(g),
            Err(e) => failed("g", e),
        }
    }
    if settings.row("s") {
        println!("s. soak (null model)");
        match soak::soak(&settings, &env, &shipped, &tiny).await {
            Ok(s) => results.soak = Some(s),
            Err(e) => failed("s", e),
        }
    }
    shipped.proc.stop().await;

    results.machine.load_after = stats::load_average();
    results.machine.others_cpu_share = output::others_share(&results);
    results.total_secs = stats::round3(started.elapsed().as_secs_f64());
    results.compute_targets();
    output::write_outputs(&settings, &root, &results)?;
    anyhow::ensure!(failures.is_empty(), "rows failed:\n{}", failures.join("\n"));
    Ok(())
}

/// Where the binaries, nats-server, ONNX Runtime and the logs are.
fn environment(settings: &Settings, root: &Path) -> anyhow::Result<procs::Env> {
    let nats_server = std::env::var_os("TANDEM_NATS_SERVER")
        .map(PathBuf::from)
        .unwrap_or_else(|| root.join(".tandem/bin/nats-server"));
    anyhow::ensure!(
        nats_server.is_file(),
        "no nats-server at {}: run scripts/setup and `. .tandem/env`",
        nats_server.display()
    );
    let bin_dir = root.join(&settings.bin_dir);
    for binary in [
        "tandem-model-server",
        "tandem-gateway",
        "tandem-slow-worker",
    ] {
        anyhow::ensure!(
            bin_dir.join(binary).is_file(),
            "no {binary} in {}: build it (cargo build --release --workspace --bins)",
            bin_dir.display()
        );
    }
    let stamp = time::OffsetDateTime::now_utc().unix_timestamp();
    let shm = Path::new("/dev/shm");
    Ok(procs::Env {
        root: root.to_path_buf(),
        bin_dir,
        nats_server,
        ort_dylib: std::env::var_os("ORT_DYLIB_PATH").map(PathBuf::from),
        log_dir: root.join(format!("target/bench/logs/{stamp}")),
        log_level: settings.log_level.clone(),
        store_parent: if shm.is_dir() {
            shm.to_path_buf()
        } else {
            std::env::temp_dir()
        },
    })
}
