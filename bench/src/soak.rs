//! Row s: a soak. A steady closed-loop load of null-model jobs (submit, then wait for the job's
//! `succeeded` event) for `--soak-jobs` jobs or `--soak-secs` seconds, whichever ends first,
//! with every service's RSS sampled each `--soak-interval-secs`. Leaks and stuck jobs show only
//! over many jobs, which the other rows' seconds-long windows never reach.

use std::{
    collections::BTreeMap,
    fmt::Write as _,
    net::SocketAddr,
    sync::{
        Arc, Mutex,
        atomic::{AtomicU64, AtomicUsize, Ordering},
    },
    time::{Duration, Instant},
};

use serde::{Deserialize, Serialize};

use crate::{
    Settings,
    client::{self, Conn},
    inputs::Photo,
    procs::{Env, Gateway, ModelServer, Nats, Worker},
    slow,
    stats::{CpuMeter, CpuSplit, Summary, percentile, round3, rss_mib},
};

/// RSS may grow by less than this share between the end of the warm-up and the end.
pub const MAX_GROWTH: f64 = 0.10;
/// A job whose `succeeded` has not come by then counts as failed (and missing).
const JOB_TIMEOUT: Duration = Duration::from_secs(30);
/// How long the queue may take to drain once the load stops.
const DRAIN_LIMIT: Duration = Duration::from_secs(60);

/// What the soak measured.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Soak {
    /// Jobs planned (`--soak-jobs`) and the time bound (`--soak-secs`).
    pub planned_jobs: usize,
    pub max_secs: f64,
    pub clients: usize,
    pub worker_concurrency: usize,
    /// Jobs whose `succeeded` event arrived.
    pub completed: usize,
    /// Requests that failed, jobs that ended otherwise or never ended (within 30 s).
    pub failures: u64,
    /// Seconds of load, and jobs completed per second over them.
    pub secs: f64,
    pub jobs_per_sec: f64,
    /// Submit -> `succeeded` over every job.
    pub latency: Summary,
    /// Jobs done (or seconds passed, a share of `max_secs`) before the RSS baseline is taken,
    /// and when that was (`None`: never).
    pub warmup_share: f64,
    pub warmup_jobs: usize,
    pub warmup_end_secs: Option<f64>,
    pub interval_secs: f64,
    /// Whether the work queue had no message, pending or unacknowledged job after the load,
    /// and how long it took to get there.
    pub drained: bool,
    pub drain_secs: f64,
    pub cpu: CpuSplit,
    /// Per process: RSS after the warm-up, at the end, its peak, its growth.
    pub processes: Vec<ProcessRss>,
    pub samples: Vec<Sample>,
}

/// One sample, taken every interval (and once more after the drain).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Sample {
    /// Seconds since the load started.
    pub t_secs: f64,
    /// Jobs completed and failures so far.
    pub completed: usize,
    pub failures: u64,
    /// Latency of the jobs that completed in this interval (none when none did).
    pub p50_ms: Option<f64>,
    pub p99_ms: Option<f64>,
    /// `VmRSS` of each process, MiB (absent once it is gone).
    pub rss_mib: BTreeMap<String, f64>,
}

/// One process's memory over the soak.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct ProcessRss {
    pub name: String,
    /// At the first sample after the warm-up (`None`: the warm-up never ended).
    pub after_warmup_mib: Option<f64>,
    /// At the last sample (`None`: the process was gone).
    pub end_mib: Option<f64>,
    /// The largest sample.
    pub peak_mib: f64,
    /// `end / after_warmup - 1`.
    pub growth: Option<f64>,
}

impl Soak {
    /// The largest RSS growth and whose it is (`None` when one is unknown).
    pub fn worst_growth(&self) -> Option<(f64, &str)> {
        let mut worst: Option<(f64, &str)> = None;
        for p in &self.processes {
            let g = p.growth?;
            if worst.is_none_or(|(w, _)| g > w) {
                worst = Some((g, &p.name));
            }
        }
        worst
    }

    /// The soak's pass criteria: every process's RSS grew by less than [`MAX_GROWTH`] after
    /// the warm-up, no request or job failed, and the queue drained.
    pub fn passed(&self) -> bool {
        self.completed > 0
            && self.failures == 0
            && self.drained
            && self.worst_growth().is_some_and(|(g, _)| g < MAX_GROWTH)
    }
}

/// The first sample after the warm-up: `jobs` done or `secs` passed, whichever comes first (a
/// soak cut short by its time bound still gets a baseline), and no earlier than `settle_secs`
/// if the soak lasts that long: before it, what nats-server keeps by design is still growing.
pub fn warmup_end(samples: &[Sample], jobs: usize, secs: f64, settle_secs: f64) -> Option<usize> {
    let warm = |s: &Sample| s.completed >= jobs || s.t_secs >= secs;
    samples
        .iter()
        .position(|s| warm(s) && s.t_secs >= settle_secs)
        .or_else(|| samples.iter().position(warm))
}

/// When the soak's records and message IDs reach their steady state: each is kept
/// [`SOAK_JOB_TTL_SECS`], and nats-server expires them in passes; twice that, to be sure.
pub const SOAK_SETTLE_SECS: f64 = 2.0 * SOAK_JOB_TTL_SECS as f64;

/// RSS at the sample `baseline`, at the end and at its peak, of each process in `samples`.
pub fn rss_table(samples: &[Sample], baseline: Option<usize>) -> Vec<ProcessRss> {
    let mut names: Vec<&String> = samples.iter().flat_map(|s| s.rss_mib.keys()).collect();
    names.sort();
    names.dedup();
    let baseline = baseline.and_then(|i| samples.get(i));
    let last = samples.last();
    names
        .into_iter()
        .map(|name| {
            let after_warmup_mib = baseline.and_then(|s| s.rss_mib.get(name).copied());
            let end_mib = last.and_then(|s| s.rss_mib.get(name).copied());
            let peak_mib = samples
                .iter()
                .filter_map(|s| s.rss_mib.get(name).copied())
                .fold(0.0, f64::max);
            let growth = match (after_warmup_mib, end_mib) {
                (Some(a), Some(e)) if a > 0.0 => Some(round3(e / a - 1.0)),
                _ => None,
            };
            ProcessRss {
                name: name.clone(),
                after_warmup_mib,
                end_mib,
                peak_mib,
                growth,
            }
        })
        .collect()
}

/// Counters shared by the clients and the sampler.
#[derive(Debug, Default)]
struct Tally {
    claimed: AtomicUsize,
    completed: AtomicUsize,
    failures: AtomicU64,
    /// Latencies of the current interval, and of the whole run.
    window: Mutex<Vec<f64>>,
    all: Mutex<Vec<f64>>,
}

impl Tally {
    fn done(&self, ms: f64) {
        self.window.lock().expect("tally lock").push(ms);
        self.all.lock().expect("tally lock").push(ms);
        self.completed.fetch_add(1, Ordering::Relaxed);
    }

    fn failed(&self, e: &anyhow::Error) {
        if self.failures.fetch_add(1, Ordering::Relaxed) < 3 {
            eprintln!("  s. job failed: {e:#}");
        }
    }
}

/// One client: claims jobs until `jobs` are claimed or `deadline` passes.
async fn client(addr: SocketAddr, photo: Photo, jobs: usize, deadline: Instant, tally: Arc<Tally>) {
    let mut conn = match Conn::connect(addr).await {
        Ok(c) => c,
        Err(e) => return tally.failed(&e),
    };
    while Instant::now() < deadline && tally.claimed.fetch_add(1, Ordering::Relaxed) < jobs {
        let job = tokio::time::timeout(JOB_TIMEOUT, slow::one_job(addr, &mut conn, &photo)).await;
        let failure = match job {
            Ok(Ok((ms, _, _))) => {
                tally.done(ms);
                continue;
            }
            Ok(Err(e)) => e,
            Err(_) => anyhow::anyhow!("no final event within {JOB_TIMEOUT:?}"),
        };
        tally.failed(&failure);
        // The connection may be mid-request: start again on a new one.
        match Conn::connect(addr).await {
            Ok(c) => conn = c,
            Err(e) => return tally.failed(&e),
        }
    }
}

/// A sample of the tally and every process's RSS, `t` seconds into the load.
fn sample(tally: &Tally, pids: &[(&str, u32)], t: f64) -> Sample {
    let mut window = std::mem::take(&mut *tally.window.lock().expect("tally lock"));
    window.sort_by(f64::total_cmp);
    let at = |q| (!window.is_empty()).then(|| round3(percentile(&window, q)));
    Sample {
        t_secs: round3(t),
        completed: tally.completed.load(Ordering::Relaxed),
        failures: tally.failures.load(Ordering::Relaxed),
        p50_ms: at(0.50),
        p99_ms: at(0.99),
        rss_mib: pids
            .iter()
            .filter_map(|(name, pid)| Some(((*name).to_owned(), rss_mib(*pid)?.0)))
            .collect(),
    }
}

/// The unlabelled gauge `name` of a Prometheus text page.
fn gauge(text: &str, name: &str) -> Option<f64> {
    text.lines()
        .filter_map(|l| l.split_once(' '))
        .find(|(series, _)| *series == name)
        .and_then(|(_, value)| value.trim().parse().ok())
}

/// Whether the gateway's view of the work queue (read from JetStream at each scrape) holds
/// no job: no message in the stream, none pending or unacknowledged on the workers' consumer.
async fn queue_empty(gateway: &Gateway) -> bool {
    let Ok((_, body)) = client::get_url(&format!("{}/metrics", gateway.url())).await else {
        return false;
    };
    let text = String::from_utf8_lossy(&body);
    [
        "tandem_queue_messages",
        "tandem_queue_consumer_pending",
        "tandem_queue_consumer_ack_pending",
    ]
    .iter()
    .all(|name| gauge(&text, name) == Some(0.0))
}

/// Polls the queue until it is empty: (drained, seconds it took).
async fn drain(gateway: &Gateway) -> (bool, f64) {
    let started = Instant::now();
    loop {
        if queue_empty(gateway).await {
            return (true, round3(started.elapsed().as_secs_f64()));
        }
        if started.elapsed() > DRAIN_LIMIT {
            return (false, round3(started.elapsed().as_secs_f64()));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Runs the clients, sampling every interval until they are all done; then the drain.
async fn load(settings: &Settings, gateway: &Gateway, photo: &Photo, pids: &[(&str, u32)]) -> Soak {
    let tally = Arc::new(Tally::default());
    let started = Instant::now();
    let deadline = started + Duration::from_secs_f64(settings.soak_secs);
    let clients: Vec<_> = (0..settings.soak_clients)
        .map(|_| {
            let (photo, tally) = (photo.clone(), tally.clone());
            let jobs = settings.soak_jobs;
            tokio::spawn(client(gateway.addr, photo, jobs, deadline, tally))
        })
        .collect();
    let meter = CpuMeter::start(pids);
    let interval = Duration::from_secs_f64(settings.soak_interval_secs.max(0.05));
    let mut samples = vec![sample(&tally, pids, 0.0)];
    let mut next = started + interval;
    while !clients.iter().all(|c| c.is_finished()) {
        tokio::time::sleep_until(next.into()).await;
        next += interval;
        samples.push(sample(&tally, pids, started.elapsed().as_secs_f64()));
    }
    let secs = started.elapsed().as_secs_f64();
    let cpu = meter.stop();
    let (drained, drain_secs) = drain(gateway).await;
    samples.push(sample(&tally, pids, started.elapsed().as_secs_f64()));
    let share = settings.soak_warmup_share;
    let warmup_jobs = (settings.soak_jobs as f64 * share).round() as usize;
    let baseline = warmup_end(
        &samples,
        warmup_jobs,
        settings.soak_secs * share,
        SOAK_SETTLE_SECS,
    );
    let completed = tally.completed.load(Ordering::Relaxed);
    let latency = Summary::of(&tally.all.lock().expect("tally lock"));
    Soak {
        planned_jobs: settings.soak_jobs,
        max_secs: settings.soak_secs,
        clients: settings.soak_clients,
        worker_concurrency: settings.pipeline_worker_concurrency,
        completed,
        failures: tally.failures.load(Ordering::Relaxed),
        secs: round3(secs),
        jobs_per_sec: round3(completed as f64 / secs),
        latency,
        warmup_share: share,
        warmup_jobs,
        warmup_end_secs: baseline.map(|i| samples[i].t_secs),
        interval_secs: interval.as_secs_f64(),
        drained,
        drain_secs,
        cpu,
        processes: rss_table(&samples, baseline),
        samples,
    }
}

/// How long the soak's job records (and images) are kept, and how long nats-server remembers
/// each job's message ID to drop a re-published duplicate, seconds.
pub const SOAK_JOB_TTL_SECS: u64 = 15;

/// Row s: nats-server, a gateway and a worker with the null model on both paths, the shared
/// model server, `--soak-clients` clients; stops everything but the model server.
pub async fn soak(
    settings: &Settings,
    env: &Env,
    model_server: &ModelServer,
    tiny: &Photo,
) -> anyhow::Result<Soak> {
    let nats = Nats::start(env).await?;
    // Records kept for SOAK_JOB_TTL, not a day, and so message IDs too (no stream's duplicate
    // window outlasts the job TTL): what nats-server holds by design (about 0.7 KB per record,
    // an ID and its time per job) then reaches a steady state within the warm-up, and growth
    // after it is what the processes leak.
    let ttl = [("TANDEM_JOB_TTL_SECS", SOAK_JOB_TTL_SECS.to_string())];
    let gateway = Gateway::start_with(env, &nats, &model_server.url, "null", &ttl).await?;
    let worker = Worker::start_with(
        env,
        &nats,
        &model_server.url,
        "null",
        settings.pipeline_worker_concurrency,
        &ttl,
    )
    .await?;
    let pids = [
        ("gateway", gateway.proc.pid()),
        ("nats-server", nats.proc.pid()),
        ("model-server", model_server.proc.pid()),
        ("slow-worker", worker.proc.pid()),
    ];
    let soak = load(settings, &gateway, tiny, &pids).await;
    worker.proc.stop().await;
    gateway.proc.stop().await;
    nats.proc.stop().await;
    let growth = soak.worst_growth().map_or_else(
        || "unknown".into(),
        |(g, n)| format!("{:.1} % ({n})", g * 100.0),
    );
    println!(
        "  s. {} jobs in {:.0} s ({:.0}/s), p50 {:.2} p99 {:.2} ms, {} failures, drained {} \
         ({:.1} s), largest RSS growth {growth}: {}",
        soak.completed,
        soak.secs,
        soak.jobs_per_sec,
        soak.latency.p50_ms,
        soak.latency.p99_ms,
        soak.failures,
        soak.drained,
        soak.drain_secs,
        if soak.passed() { "passed" } else { "failed" }
    );
    Ok(soak)
}

/// Row s's tables: the load, then each process's memory.
pub fn table(w: &mut String, s: &Soak) {
    let _ = writeln!(
        w,
        "\n### s. Soak: the null model on both paths, {} clients, {} jobs planned (at most {:.0} s)\n\n\
         RSS sampled every {:.1} s; the baseline is the first sample after the warm-up, {:.0} % of \
         the jobs ({}) or of the time bound, whichever comes first, and not before {SOAK_SETTLE_SECS:.0} s \
         (twice the {SOAK_JOB_TTL_SECS} s the records and message IDs are kept): at {:.1} s. \
         Chart: `soak.png`.\n\n\
         | jobs completed | failures | seconds | jobs/s | p50 ms | p99 ms | max ms | queue drained | drain s |\n\
         |---|---|---|---|---|---|---|---|---|\n\
         | {} | {} | {:.1} | {:.0} | {:.2} | {:.2} | {:.1} | {} | {:.1} |\n\n\
         | process | RSS after warm-up MiB | at the end MiB | peak MiB | growth | < {:.0} % |\n\
         |---|---|---|---|---|---|",
        s.clients,
        s.planned_jobs,
        s.max_secs,
        s.interval_secs,
        s.warmup_share * 100.0,
        s.warmup_jobs,
        s.warmup_end_secs.unwrap_or(0.0),
        s.completed,
        s.failures,
        s.secs,
        s.jobs_per_sec,
        s.latency.p50_ms,
        s.latency.p99_ms,
        s.latency.max_ms,
        if s.drained { "yes" } else { "**no**" },
        s.drain_secs,
        MAX_GROWTH * 100.0
    );
    let mib = |v: Option<f64>| v.map_or_else(|| "-".into(), |v| format!("{v:.1}"));
    for p in &s.processes {
        let _ = writeln!(
            w,
            "| {} | {} | {} | {:.1} | {} | {} |",
            p.name,
            mib(p.after_warmup_mib),
            mib(p.end_mib),
            p.peak_mib,
            p.growth
                .map_or_else(|| "-".into(), |g| format!("{:+.1} %", g * 100.0)),
            if p.growth.is_some_and(|g| g < MAX_GROWTH) {
                "yes"
            } else {
                "**no**"
            }
        );
    }
}

#[cfg(test)]
#[path = "soak_tests.rs"]
mod tests;
