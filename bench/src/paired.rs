//! The floor and the service measured in alternation: short bursts of the in-process model,
//! then of the service, several rounds. On a machine shared with other work the load drifts
//! over seconds; alternating puts both sides under the same drift, so the ratios the targets
//! use compare like with like (a floor measured minutes earlier would not).

use std::time::{Duration, Instant};

use hyper::Method;
use serde::{Deserialize, Serialize};
use tandem_model_server::runner::ModelRunner;

use crate::{
    Settings,
    client::Conn,
    fast::{FAST, SLOW},
    floor,
    inputs::Photo,
    load::{self, Call},
    procs::{Env, Gateway, ModelServer, Nats, Worker},
    slow,
    stats::{Summary, ms_since, round3},
};

/// Rounds of (floor burst, service burst).
const ROUNDS: usize = 5;
/// Rounds of the throughput comparison (longer bursts).
const THROUGHPUT_ROUNDS: usize = 3;

/// One comparison.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Paired {
    /// `fast latency`, `fast throughput` or `slow answer`.
    pub what: String,
    /// What the floor side ran, and what the service side did.
    pub floor_side: String,
    pub service_side: String,
    pub floor: Summary,
    pub floor_per_sec: f64,
    pub service: Summary,
    pub service_per_sec: f64,
}

/// One side's samples (ms) and units of work (images, requests, jobs) over `secs`.
#[derive(Debug, Default)]
struct Side {
    samples: Vec<f64>,
    units: f64,
    secs: f64,
}

impl Side {
    fn add(&mut self, other: Side) {
        self.samples.extend(other.samples);
        self.units += other.units;
        self.secs += other.secs;
    }

    fn per_sec(&self) -> f64 {
        if self.secs > 0.0 {
            round3(self.units / self.secs)
        } else {
            0.0
        }
    }
}

async fn alternate(
    rounds: usize,
    mut floor: impl AsyncFnMut() -> anyhow::Result<Side>,
    mut service: impl AsyncFnMut() -> anyhow::Result<Side>,
) -> anyhow::Result<(Side, Side)> {
    let (mut f, mut s) = (Side::default(), Side::default());
    for _ in 0..rounds {
        f.add(floor().await?);
        s.add(service().await?);
    }
    Ok((f, s))
}

/// Runs the in-process model on `input` (`batch` images) for `secs`, from `callers` loops at
/// once (one per instance of the model).
async fn floor_burst(
    runner: &ModelRunner,
    input: &[f32],
    batch: usize,
    callers: usize,
    secs: f64,
) -> anyhow::Result<Side> {
    let (samples, secs) =
        floor::from_callers(secs, callers, 0, || runner.infer(input.to_vec(), batch)).await?;
    Ok(Side {
        units: (samples.len() * batch) as f64,
        samples,
        secs,
    })
}

fn paired(what: &str, floor_side: String, service_side: String, f: &Side, s: &Side) -> Paired {
    let result = Paired {
        what: what.to_owned(),
        floor_side,
        service_side,
        floor: Summary::of(&f.samples),
        floor_per_sec: f.per_sec(),
        service: Summary::of(&s.samples),
        service_per_sec: s.per_sec(),
    };
    println!(
        "  paired {what}: floor p50 {:.2} ms {:.1}/s, service p50 {:.2} ms {:.1}/s",
        result.floor.p50_ms, result.floor_per_sec, result.service.p50_ms, result.service_per_sec
    );
    result
}

/// The fast model against `/predict`: latency at concurrency 1 (batch 1), and throughput at
/// `throughput_concurrency` clients (against the model's best batch, 1 or 8).
pub async fn fast(
    settings: &Settings,
    env: &Env,
    model_server: &ModelServer,
    chelsea: &Photo,
) -> anyhow::Result<Vec<Paired>> {
    let models = env.root.join("models");
    let (runner, image, instances) =
        floor::runner(&models, env.ort_dylib.as_deref(), FAST, chelsea).await?;
    let nats = Nats::start(env).await?;
    let gateway = Gateway::start(env, &nats, &model_server.url, FAST).await?;
    let call = Call::predict(chelsea);
    let burst = settings.secs / ROUNDS as f64;
    load::run(gateway.addr, &call, 1, settings.warmup_secs).await?;
    let mut conn = Conn::connect(gateway.addr).await?;
    let (f, s) = alternate(
        ROUNDS,
        async || floor_burst(&runner, &image, 1, 1, burst).await,
        async || {
            let started = Instant::now();
            let mut side = Side::default();
            while started.elapsed() < Duration::from_secs_f64(burst) {
                let t = Instant::now();
                let (status, _) = conn
                    .send(
                        Method::POST,
                        "/predict",
                        Some(chelsea.content_type),
                        chelsea.unique_bytes(),
                    )
                    .await?;
                anyhow::ensure!(status.is_success(), "/predict answered {status}");
                side.samples.push(ms_since(t));
                side.units += 1.0;
            }
            side.secs = started.elapsed().as_secs_f64();
            Ok(side)
        },
    )
    .await?;
    let latency = paired(
        "fast latency",
        format!("{FAST}, batch 1"),
        "POST /predict, 1 client".into(),
        &f,
        &s,
    );

    let clients = settings.throughput_concurrency;
    let batch8: Vec<f32> = image.repeat(8);
    // Longer bursts: a closed loop of many clients needs a few round trips to show its rate.
    let burst = (settings.secs / 2.0).max(1.0);
    let (f, s) = alternate(
        THROUGHPUT_ROUNDS,
        async || {
            let one = floor_burst(&runner, &image, 1, instances, burst / 2.0).await?;
            let eight = floor_burst(&runner, &batch8, 8, instances, burst / 2.0).await?;
            // The better of batch 1 and batch 8: the model's best throughput.
            Ok(if one.per_sec() >= eight.per_sec() {
                one
            } else {
                eight
            })
        },
        async || {
            let outcome = load::run(gateway.addr, &call, clients, burst).await?;
            Ok(Side {
                units: outcome.per_sec * burst,
                samples: outcome.latencies,
                secs: burst,
            })
        },
    )
    .await?;
    let throughput = paired(
        "fast throughput",
        format!("{FAST}, {instances} caller(s), the better of batch 1 and 8"),
        format!("POST /predict, {clients} clients"),
        &f,
        &s,
    );
    gateway.proc.stop().await;
    nats.proc.stop().await;
    Ok(vec![latency, throughput])
}

/// The slow model against submit -> SSE `succeeded`, one job at a time.
pub async fn slow(
    settings: &Settings,
    env: &Env,
    model_server: &ModelServer,
    chelsea: &Photo,
) -> anyhow::Result<Paired> {
    let models = env.root.join("models");
    let (runner, image, _) =
        floor::runner(&models, env.ort_dylib.as_deref(), SLOW, chelsea).await?;
    let nats = Nats::start(env).await?;
    let gateway = Gateway::start(env, &nats, &model_server.url, FAST).await?;
    let worker = Worker::start(
        env,
        &nats,
        &model_server.url,
        SLOW,
        settings.worker_concurrency,
    )
    .await?;
    let mut conn = Conn::connect(gateway.addr).await?;
    for _ in 0..3 {
        slow::one_job(gateway.addr, &mut conn, chelsea).await?;
    }
    let jobs = settings.light_jobs.div_ceil(ROUNDS);
    let burst = settings.secs / ROUNDS as f64;
    let (f, s) = alternate(
        ROUNDS,
        async || floor_burst(&runner, &image, 1, 1, burst).await,
        async || {
            let started = Instant::now();
            let mut side = Side::default();
            for _ in 0..jobs {
                side.samples
                    .push(slow::one_job(gateway.addr, &mut conn, chelsea).await?.0);
                side.units += 1.0;
            }
            side.secs = started.elapsed().as_secs_f64();
            Ok(side)
        },
    )
    .await?;
    worker.proc.stop().await;
    gateway.proc.stop().await;
    nats.proc.stop().await;
    Ok(paired(
        "slow answer",
        format!("{SLOW}, batch 1"),
        "submit -> SSE succeeded, one job at a time".into(),
        &f,
        &s,
    ))
}
