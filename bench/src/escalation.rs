//! Row g: the same mixed workload (the test photos and their variants) through the real
//! services with `escalate=always` and with `escalate=auto` on thresholds that `tandem
//! calibrate` chose for it, in alternating rounds on one gateway, to see how much slow-model
//! work `auto` saves, whether the skipped jobs' answers hold up (the audit sample), and that
//! the fast path does not pay for it.
//!
//! Each round submits for a fixed time with no slow-worker running (the fast path measured
//! alone, as in row b, the jobs queued), then starts a worker and waits until the slow model
//! is done with them (escalated jobs, then audits): the model server's
//! `tandem_model_inferences_total{model=SLOW}` over the round is the slow-model work that round's
//! jobs cost.

use std::{
    path::Path,
    time::{Duration, Instant},
};

use anyhow::bail;
use serde::{Deserialize, Serialize};

use crate::{
    Settings,
    calibration::{self, Calibration},
    fast::{FAST, SLOW},
    inputs::Photo,
    load::{self, Call, Outcome},
    procs::{Env, Gateway, ModelServer, Nats, Worker, scrape},
    stats::{CpuMeter, CpuSplit, Summary, round3},
};

/// How long the slow model's counter must stand still for the slow path to count as done.
const QUIET: Duration = Duration::from_millis(1500);
const POLL: Duration = Duration::from_millis(200);

/// Row g.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Escalation {
    pub calibration: Calibration,
    /// The workload's images, by name.
    pub images: Vec<String>,
    pub clients: usize,
    pub rounds: usize,
    /// Seconds each side submits in each round.
    pub secs: f64,
    /// `TANDEM_ESCALATE_AUDIT_RATE` of the gateway.
    pub audit_rate: f64,
    pub always: Side,
    pub auto: Side,
}

/// One policy, over all its rounds.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Side {
    pub policy: String,
    /// Jobs submitted (`/predict` answered 200) and failed requests.
    pub submitted: u64,
    pub errors: u64,
    /// Replies with `"escalated": true`.
    pub escalated: u64,
    /// Seconds spent submitting, and requests per second (each round's last two thirds).
    pub submit_secs: f64,
    pub per_sec: f64,
    pub latency: Summary,
    /// Images the slow model ran for this side's jobs: escalated and audited.
    pub slow_inferences: f64,
    /// Audits done (`tandem_escalation_audits_total`), agreeing and not.
    pub audits_agreed: f64,
    pub audits_disagreed: f64,
    /// Audits the gateway could not queue (`tandem_escalation_audits_dropped_total`).
    pub audits_dropped: f64,
    /// Seconds the slow path worked after the submitting stopped (all rounds).
    pub drain_secs: f64,
    /// Where the CPU went while each round submitted (`others`: processes outside the
    /// benchmark).
    #[serde(default)]
    pub cpu: Vec<CpuSplit>,
    /// Every latency, milliseconds.
    pub samples: Vec<f64>,
    #[serde(skip)]
    window_units: f64,
}

impl Side {
    /// Slow-model inferences per submitted job.
    pub fn slow_per_job(&self) -> f64 {
        ratio(self.slow_inferences, self.submitted as f64)
    }

    /// Slow-model inferences per second of submitting: the rate the slow path must keep up.
    pub fn slow_per_sec(&self) -> f64 {
        ratio(self.slow_inferences, self.submit_secs)
    }

    /// The audited skipped jobs' agreement with the slow model (`None`: no audit).
    pub fn audit_agreement(&self) -> Option<f64> {
        let audits = self.audits_agreed + self.audits_disagreed;
        (audits > 0.0).then(|| self.audits_agreed / audits)
    }

    /// Share of the machine that processes outside the benchmark used while this side
    /// submitted.
    pub fn others_share(&self) -> f64 {
        let others: f64 = self.cpu.iter().map(|c| c.others).sum();
        ratio(others, self.cpu.iter().map(|c| c.capacity).sum())
    }

    fn add(&mut self, outcome: &Outcome, secs: f64) {
        self.submitted += outcome.latencies.len() as u64;
        self.errors += outcome.errors;
        self.escalated += outcome.escalated;
        self.submit_secs = round3(self.submit_secs + secs);
        self.window_units += outcome.per_sec * secs;
        self.per_sec = round3(self.window_units / self.submit_secs);
        self.samples
            .extend(outcome.latencies.iter().map(|v| round3(*v)));
        self.latency = Summary::of(&self.samples);
    }
}

impl Escalation {
    /// The share of slow-model work per job that `auto` saves against `always`.
    pub fn saved_share(&self) -> f64 {
        1.0 - ratio(self.auto.slow_per_job(), self.always.slow_per_job())
    }
}

fn ratio(a: f64, b: f64) -> f64 {
    if b > 0.0 { a / b } else { 0.0 }
}

/// The services of row g: a gateway with the thresholds file and the audit rate.
struct Stack<'a> {
    env: &'a Env,
    model_server: &'a ModelServer,
    nats: Nats,
    gateway: Gateway,
    workload: &'a [Photo],
}

/// Row g: calibrates on the workload, then alternates the two policies (always, auto, auto,
/// always, ...) for `escalation_rounds` rounds each.
pub async fn row_g(
    settings: &Settings,
    env: &Env,
    model_server: &ModelServer,
    out_dir: &Path,
) -> anyhow::Result<Escalation> {
    let workload = calibration::workload(&env.root)?;
    let calibration = calibration::calibrate(env, model_server, &workload, out_dir).await?;
    println!(
        "  calibrated on {} images in {:.1} s: {}",
        calibration.images, calibration.secs, calibration.summary
    );
    let nats = Nats::start(env).await?;
    let thresholds = env.root.join(&calibration.thresholds_file);
    let gateway_settings = [
        (
            "TANDEM_ESCALATE_THRESHOLDS_FILE",
            thresholds.display().to_string(),
        ),
        (
            "TANDEM_ESCALATE_AUDIT_RATE",
            settings.audit_rate.to_string(),
        ),
    ];
    let gateway =
        Gateway::start_with(env, &nats, &model_server.url, FAST, &gateway_settings).await?;
    let stack = Stack {
        env,
        model_server,
        nats,
        gateway,
        workload: &workload,
    };
    let (clients, secs) = (settings.escalation_clients, settings.escalation_secs);
    // Warm-up with `never`: its jobs are final at once and never reach the slow model.
    let warmup = Call::predict_each("/predict?escalate=never", &workload);
    load::run(stack.gateway.addr, &warmup, clients, settings.warmup_secs).await?;
    let mut always = Side {
        policy: "always".into(),
        ..Side::default()
    };
    let mut auto = Side {
        policy: "auto".into(),
        ..Side::default()
    };
    for round in 0..settings.escalation_rounds {
        let (first, second) = if round % 2 == 0 {
            (&mut always, &mut auto)
        } else {
            (&mut auto, &mut always)
        };
        stack.round(settings, first).await?;
        stack.round(settings, second).await?;
    }
    stack.gateway.proc.stop().await;
    stack.nats.proc.stop().await;
    Ok(Escalation {
        calibration,
        images: workload.iter().map(|p| p.name.clone()).collect(),
        clients,
        rounds: settings.escalation_rounds,
        secs,
        audit_rate: settings.audit_rate,
        always,
        auto,
    })
}

impl Stack<'_> {
    /// `tandem_model_inferences_total` of the slow model.
    async fn slow_inferences(&self) -> anyhow::Result<f64> {
        let model = format!("model=\"{SLOW}\"");
        scrape(
            &self.model_server.metrics_url,
            "tandem_model_inferences_total",
            &model,
        )
        .await
    }

    /// One round of one policy: submit, then a worker until the slow model is done.
    async fn round(&self, settings: &Settings, side: &mut Side) -> anyhow::Result<()> {
        let path = format!("/predict?escalate={}", side.policy);
        let call = Call::predict_each(&path, self.workload);
        let secs = settings.escalation_secs;
        let gateway = self.gateway.url();
        let dropped = || scrape(&gateway, "tandem_escalation_audits_dropped_total", "");
        let (slow_before, dropped_before) = (self.slow_inferences().await?, dropped().await?);
        let meter = CpuMeter::start(&[
            ("gateway", self.gateway.proc.pid()),
            ("model-server", self.model_server.proc.pid()),
            ("nats-server", self.nats.proc.pid()),
        ]);
        let outcome =
            load::run(self.gateway.addr, &call, settings.escalation_clients, secs).await?;
        side.cpu.push(meter.stop());
        side.add(&outcome, secs);
        let worker = Worker::start(
            self.env,
            &self.nats,
            &self.model_server.url,
            SLOW,
            settings.worker_concurrency,
        )
        .await?;
        let drain = self.drain(&worker, outcome.escalated).await;
        let audits = |agree| scrape(&worker.ops_url, "tandem_escalation_audits_total", agree);
        let (agreed, disagreed) = (
            audits("agree=\"true\"").await,
            audits("agree=\"false\"").await,
        );
        worker.proc.stop().await;
        side.drain_secs = round3(side.drain_secs + drain?);
        side.slow_inferences += self.slow_inferences().await? - slow_before;
        side.audits_agreed += agreed?;
        side.audits_disagreed += disagreed?;
        side.audits_dropped += dropped().await? - dropped_before;
        println!(
            "  g. {}: {} jobs, {:.1} req/s, p50 {:.2} ms, {} escalated; slow model {} images so far",
            side.policy,
            outcome.latencies.len(),
            outcome.per_sec,
            Summary::of(&outcome.latencies).p50_ms,
            outcome.escalated,
            side.slow_inferences
        );
        Ok(())
    }

    /// Waits until the worker has finished the `escalated` jobs and the slow model's counter
    /// has stood still for [`QUIET`] (the audits come after the escalated jobs); the seconds
    /// until its last change.
    async fn drain(&self, worker: &Worker, escalated: u64) -> anyhow::Result<f64> {
        let started = Instant::now();
        let limit = Duration::from_secs(60) + Duration::from_millis(200) * escalated as u32;
        let mut last = (self.slow_inferences().await?, started);
        loop {
            tokio::time::sleep(POLL).await;
            let slow = self.slow_inferences().await?;
            if slow != last.0 {
                last = (slow, Instant::now());
            }
            let all = scrape(&worker.ops_url, "tandem_worker_jobs_total", "").await?;
            let retrying =
                scrape(&worker.ops_url, "tandem_worker_jobs_total", "\"retrying\"").await?;
            if all - retrying >= escalated as f64 && last.1.elapsed() >= QUIET {
                return Ok(last.1.duration_since(started).as_secs_f64());
            }
            if started.elapsed() > limit {
                bail!(
                    "the slow path did not finish {escalated} jobs in {limit:?} ({} done)",
                    all - retrying
                );
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sides_add_rounds_and_give_their_ratios() {
        let mut side = Side::default();
        let outcome = Outcome {
            latencies: vec![1.0, 2.0, 3.0, 4.0],
            escalated: 1,
            per_sec: 2.0,
            ..Outcome::default()
        };
        side.add(&outcome, 2.0);
        side.add(&outcome, 2.0);
        side.slow_inferences = 4.0;
        side.audits_agreed = 3.0;
        side.audits_disagreed = 1.0;
        assert_eq!((side.submitted, side.escalated, side.per_sec), (8, 2, 2.0));
        assert_eq!((side.slow_per_job(), side.slow_per_sec()), (0.5, 1.0));
        assert_eq!(side.audit_agreement(), Some(0.75));
        assert_eq!(side.latency.p50_ms, 2.0);
        assert_eq!(Side::default().audit_agreement(), None);
    }
}
