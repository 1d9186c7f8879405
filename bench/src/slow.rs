//! Rows c and e: submit -> SSE `succeeded` latency with the real slow model, and the jobs per
//! second the plumbing carries with the null model.

use std::{
    net::SocketAddr,
    time::{Duration, Instant},
};

use anyhow::{Context, ensure};
use hyper::Method;
use serde::{Deserialize, Serialize};

use crate::{
    Settings,
    breakdown::JobSpans,
    client::{self, Conn, SseStream},
    fast::{FAST, SLOW},
    inputs::Photo,
    load::{self, Call},
    procs::{Env, Gateway, ModelServer, Nats, Worker},
    stats::{CpuMeter, CpuSplit, Summary, round3},
    traffic::{NatsTraffic, TrafficMeter},
};

/// Jobs submitted by `clients` clients, each waiting for its job's final event before the next.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct JobsRun {
    /// `light` (one job at a time), `saturated`, or `null model`.
    pub load: String,
    pub fast_model: String,
    pub slow_model: String,
    pub clients: usize,
    pub workers: usize,
    pub worker_concurrency: usize,
    /// From sending `POST /predict` to the `succeeded` event on the job's stream.
    pub latency: Summary,
    /// From the `/predict` reply to the `succeeded` event.
    pub after_reply: Summary,
    /// Jobs whose `succeeded` event arrived within the window, per second.
    pub jobs_per_sec: f64,
    /// Jobs that ended otherwise, or whose submission or stream failed.
    pub errors: u64,
    pub cpu: CpuSplit,
    /// Where the time went, means (from each job's final record).
    #[serde(default)]
    pub spans: Option<JobSpans>,
    /// What the services exchanged with nats-server meanwhile (row e's cost per job).
    #[serde(default)]
    pub traffic: Option<NatsTraffic>,
    /// Jobs ended (succeeded or not) while `cpu` and `traffic` were measured.
    #[serde(default)]
    pub jobs: u64,
    pub samples: Vec<f64>,
}

/// One job: submit, open its events, wait for the end. (total ms, ms after the reply, spans).
pub async fn one_job(
    addr: SocketAddr,
    conn: &mut Conn,
    photo: &Photo,
) -> anyhow::Result<(f64, f64, Option<JobSpans>)> {
    let sent = Instant::now();
    let (status, body) = conn
        .send(
            Method::POST,
            "/predict",
            Some(photo.content_type),
            photo.unique_bytes(),
        )
        .await?;
    ensure!(status.is_success(), "/predict answered {status}");
    let id = client::job_id(&body)?;
    let replied = Instant::now();
    let mut events = SseStream::open(addr, &id).await?;
    let (event, at) = events.until_final().await?;
    let wall = time::OffsetDateTime::now_utc();
    ensure!(event.name == "succeeded", "job {id} ended {}", event.name);
    let ms = |from: Instant| at.duration_since(from).as_secs_f64() * 1000.0;
    Ok((ms(sent), ms(replied), JobSpans::of(&event.data, wall)))
}

/// `clients` closed-loop clients for `secs` (or, with `jobs`, one client for that many jobs).
async fn jobs_loop(
    addr: SocketAddr,
    photo: &Photo,
    clients: usize,
    secs: f64,
    jobs: Option<usize>,
) -> anyhow::Result<Loop> {
    let started = Instant::now();
    let end = started + Duration::from_secs_f64(secs);
    let tasks = (0..clients).map(|_| {
        let photo = photo.clone();
        tokio::spawn(async move {
            let mut conn = Conn::connect(addr).await?;
            let (mut total, mut after, mut errors, mut in_window) = (Vec::new(), Vec::new(), 0, 0);
            let mut spans = Vec::new();
            while match jobs {
                Some(n) => total.len() + (errors as usize) < n,
                None => Instant::now() < end,
            } {
                match one_job(addr, &mut conn, &photo).await {
                    Ok((t, a, s)) => {
                        total.push(t);
                        after.push(a);
                        spans.extend(s);
                        in_window += usize::from(Instant::now() <= end);
                    }
                    Err(e) => {
                        errors += 1;
                        if errors <= 3 {
                            eprintln!("  job failed: {e:#}");
                        }
                        conn = Conn::connect(addr).await?;
                    }
                }
            }
            anyhow::Ok((total, after, errors, in_window, spans))
        })
    });
    let (mut total, mut after, mut errors, mut in_window) = (Vec::new(), Vec::new(), 0, 0);
    let mut spans = Vec::new();
    for result in futures::future::join_all(tasks).await {
        let (t, a, e, w, s) = result??;
        total.extend(t);
        after.extend(a);
        spans.extend(s);
        errors += e;
        in_window += w;
    }
    let per_sec = match jobs {
        Some(_) => total.len() as f64 / started.elapsed().as_secs_f64(),
        None => in_window as f64 / secs,
    };
    Ok(Loop {
        total,
        after,
        errors,
        per_sec,
        spans,
    })
}

/// What a jobs loop measured.
struct Loop {
    total: Vec<f64>,
    after: Vec<f64>,
    errors: u64,
    per_sec: f64,
    spans: Vec<JobSpans>,
}

/// What one jobs run uses.
pub struct Stack<'a> {
    pub env: &'a Env,
    pub model_server: &'a ModelServer,
    pub fast_model: &'a str,
    pub slow_model: &'a str,
    pub workers: usize,
    pub worker_concurrency: usize,
}

/// Starts nats-server, a gateway and the workers, runs the clients, stops everything.
pub async fn jobs_run(
    settings: &Settings,
    stack: &Stack<'_>,
    load: &str,
    photo: &Photo,
    clients: usize,
    jobs: Option<usize>,
) -> anyhow::Result<JobsRun> {
    let env = stack.env;
    let nats = Nats::start(env).await?;
    let gateway = Gateway::start(env, &nats, &stack.model_server.url, stack.fast_model).await?;
    let mut workers = Vec::new();
    for _ in 0..stack.workers {
        workers.push(
            Worker::start(
                env,
                &nats,
                &stack.model_server.url,
                stack.slow_model,
                stack.worker_concurrency,
            )
            .await?,
        );
    }
    let mut pids = vec![
        ("gateway", gateway.proc.pid()),
        ("nats-server", nats.proc.pid()),
        ("model-server", stack.model_server.proc.pid()),
    ];
    pids.extend(workers.iter().map(|w| ("slow-worker", w.proc.pid())));
    // Warm up every connection and the model threads.
    jobs_loop(gateway.addr, photo, clients, settings.warmup_secs, None).await?;
    let mut services = vec![("gateway", gateway.url())];
    services.extend(workers.iter().map(|w| ("slow-worker", w.ops_url.clone())));
    let traffic = TrafficMeter::start(&nats.monitor_url, services).await;
    let meter = CpuMeter::start(&pids);
    let Loop {
        total,
        after,
        errors,
        per_sec,
        spans,
    } = jobs_loop(gateway.addr, photo, clients, settings.secs, jobs).await?;
    let cpu = meter.stop();
    let traffic = traffic.stop().await;
    for worker in workers {
        worker.proc.stop().await;
    }
    gateway.proc.stop().await;
    nats.proc.stop().await;
    let run = JobsRun {
        load: load.to_owned(),
        fast_model: stack.fast_model.to_owned(),
        slow_model: stack.slow_model.to_owned(),
        clients,
        workers: stack.workers,
        worker_concurrency: stack.worker_concurrency,
        latency: Summary::of(&total),
        after_reply: Summary::of(&after),
        jobs_per_sec: round3(per_sec),
        errors,
        cpu,
        spans: JobSpans::mean(&spans),
        traffic: Some(traffic),
        jobs: total.len() as u64 + errors,
        samples: total.iter().map(|v| round3(*v)).collect(),
    };
    println!(
        "  {load} ({clients} clients, {}x{} workers): p50 {:.2} p99 {:.2} ms, {:.1} jobs/s, {} errors",
        run.workers,
        run.worker_concurrency,
        run.latency.p50_ms,
        run.latency.p99_ms,
        run.jobs_per_sec,
        run.errors
    );
    Ok(run)
}

/// Row c: one job at a time, then saturated with each worker concurrency.
pub async fn slow_answer(
    settings: &Settings,
    env: &Env,
    model_server: &ModelServer,
    chelsea: &Photo,
) -> anyhow::Result<Vec<JobsRun>> {
    let mut runs = Vec::new();
    let stack = |worker_concurrency| Stack {
        env,
        model_server,
        fast_model: FAST,
        slow_model: SLOW,
        workers: 1,
        worker_concurrency,
    };
    runs.push(
        jobs_run(
            settings,
            &stack(settings.worker_concurrency),
            "light",
            chelsea,
            1,
            Some(settings.light_jobs),
        )
        .await?,
    );
    // The same with the null model on the fast path: the slow path's own cost, without the
    // fast model's inference sharing the cores with the slow one's.
    let alone = Stack {
        fast_model: "null",
        ..stack(settings.worker_concurrency)
    };
    runs.push(
        jobs_run(
            settings,
            &alone,
            "light, null fast model",
            chelsea,
            1,
            Some(settings.light_jobs),
        )
        .await?,
    );
    for &concurrency in &settings.saturation_worker_concurrency {
        runs.push(
            jobs_run(
                settings,
                &stack(concurrency),
                "saturated",
                chelsea,
                settings.saturation_clients,
                None,
            )
            .await?,
        );
    }
    Ok(runs)
}

/// Row e: the null model on both paths, many clients, workers with many slots; and the
/// submissions alone (no worker) for comparison.
pub async fn pipeline(
    settings: &Settings,
    env: &Env,
    model_server: &ModelServer,
    tiny: &Photo,
) -> anyhow::Result<(JobsRun, SubmitOnly)> {
    let stack = Stack {
        env,
        model_server,
        fast_model: "null",
        slow_model: "null",
        workers: settings.pipeline_workers,
        worker_concurrency: settings.pipeline_worker_concurrency,
    };
    let run = jobs_run(
        settings,
        &stack,
        "null model",
        tiny,
        settings.pipeline_clients,
        None,
    )
    .await?;

    let nats = Nats::start(env).await?;
    let gateway = Gateway::start(env, &nats, &model_server.url, "null").await?;
    let call = Call::predict(tiny);
    load::run(
        gateway.addr,
        &call,
        settings.pipeline_clients,
        settings.warmup_secs,
    )
    .await?;
    let traffic = TrafficMeter::start(&nats.monitor_url, vec![("gateway", gateway.url())]).await;
    let meter = CpuMeter::start(&[
        ("gateway", gateway.proc.pid()),
        ("nats-server", nats.proc.pid()),
        ("model-server", model_server.proc.pid()),
    ]);
    let outcome = load::run(
        gateway.addr,
        &call,
        settings.pipeline_clients,
        settings.secs,
    )
    .await
    .context("submissions alone")?;
    let cpu = meter.stop();
    let submit = SubmitOnly {
        clients: settings.pipeline_clients,
        latency: Summary::of(&outcome.latencies),
        per_sec: round3(outcome.per_sec),
        errors: outcome.errors,
        cpu,
        traffic: Some(traffic.stop().await),
        requests: outcome.latencies.len() as u64 + outcome.errors,
    };
    println!(
        "  e. submissions alone: {:.1}/s, p50 {:.2} ms",
        submit.per_sec, submit.latency.p50_ms
    );
    gateway.proc.stop().await;
    nats.proc.stop().await;
    Ok((run, submit))
}

/// `POST /predict` with the null fast model and no worker: the gateway's half of a job.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SubmitOnly {
    pub clients: usize,
    pub latency: Summary,
    pub per_sec: f64,
    pub errors: u64,
    pub cpu: CpuSplit,
    /// What the gateway exchanged with nats-server meanwhile.
    #[serde(default)]
    pub traffic: Option<NatsTraffic>,
    /// Requests answered (or failed) while `cpu` and `traffic` were measured.
    #[serde(default)]
    pub requests: u64,
}
