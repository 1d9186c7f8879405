//! The results: every measurement as JSON, the targets computed from them, markdown tables.

use serde::{Deserialize, Serialize};

use crate::{
    Settings,
    escalation::Escalation,
    fanout::Fanout,
    fast::PredictPoint,
    floor::Floor,
    isolation::Isolation,
    paired::Paired,
    slow::{JobsRun, SubmitOnly},
    soak::Soak,
    stats::{Machine, Summary},
};

/// Everything one run measured.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Results {
    pub machine: Machine,
    pub command: String,
    pub git_commit: String,
    pub started_at: String,
    pub total_secs: f64,
    pub settings: Settings,
    pub floor: Option<Floor>,
    pub http_floor: Option<Summary>,
    /// The floor and the service measured in alternation (the targets' ratios).
    #[serde(default)]
    pub paired: Vec<Paired>,
    pub predict: Vec<PredictPoint>,
    pub slow_answer: Vec<JobsRun>,
    pub isolation: Vec<Isolation>,
    pub pipeline: Option<JobsRun>,
    pub submit_only: Option<SubmitOnly>,
    pub fanout: Option<Fanout>,
    /// Row g.
    #[serde(default)]
    pub escalation: Option<Escalation>,
    /// Row s.
    #[serde(default)]
    pub soak: Option<Soak>,
    pub targets: Vec<Target>,
}

/// One target of the issue, checked against this run.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Target {
    pub target: String,
    pub measured: String,
    /// `None`: the rows it needs were not run.
    pub met: Option<bool>,
}

fn target(text: &str, measured: Option<(String, bool)>) -> Target {
    Target {
        target: text.to_owned(),
        measured: measured
            .as_ref()
            .map_or_else(|| "not measured".into(), |(m, _)| m.clone()),
        met: measured.map(|(_, met)| met),
    }
}

impl Results {
    /// The shipped `/predict` point of `image` at `concurrency`.
    pub fn point(&self, image: &str, concurrency: usize) -> Option<&PredictPoint> {
        self.predict
            .iter()
            .find(|p| p.image == image && p.concurrency == concurrency && p.variant == "shipped")
    }

    /// The paired comparison named `what`.
    pub fn paired(&self, what: &str) -> Option<&Paired> {
        self.paired.iter().find(|p| p.what == what)
    }

    /// Computes the targets from this run's numbers: the first three from the paired
    /// (alternating) measurements, the rest from rows d, e and f.
    pub fn compute_targets(&mut self) {
        let mut targets = Vec::new();
        targets.push(target(
            "fast path p50 at concurrency 1 <= 1.15 x the fast model's floor latency",
            self.paired("fast latency").map(|p| {
                let ratio = p.service.p50_ms / p.floor.p50_ms;
                (
                    format!(
                        "{:.2} ms = {ratio:.2} x {:.2} ms",
                        p.service.p50_ms, p.floor.p50_ms
                    ),
                    ratio <= 1.15,
                )
            }),
        ));
        targets.push(target(
            "fast path throughput >= 0.9 x the fast model's floor throughput (slow path idle)",
            self.paired("fast throughput").map(|p| {
                let ratio = p.service_per_sec / p.floor_per_sec;
                (
                    format!(
                        "{:.1} req/s = {ratio:.2} x {:.1} images/s",
                        p.service_per_sec, p.floor_per_sec
                    ),
                    ratio >= 0.9,
                )
            }),
        ));
        targets.push(target(
            "submit -> SSE `succeeded` p50 <= slow model floor latency + 5 ms at light load",
            self.paired("slow answer").map(|p| {
                let limit = p.floor.p50_ms + 5.0;
                (
                    format!(
                        "{:.2} ms (limit {:.2} + 5 = {limit:.2} ms)",
                        p.service.p50_ms, p.floor.p50_ms
                    ),
                    p.service.p50_ms <= limit,
                )
            }),
        ));

        let big = self.point("12mp", 1).zip(self.point("chelsea", 1));
        targets.push(target(
            "12-megapixel photo: /predict p50 at concurrency 1 <= 3 x chelsea's",
            big.map(|(big, chelsea)| {
                let ratio = big.latency.p50_ms / chelsea.latency.p50_ms;
                (
                    format!(
                        "{:.2} ms = {ratio:.2} x {:.2} ms",
                        big.latency.p50_ms, chelsea.latency.p50_ms
                    ),
                    ratio <= 3.0,
                )
            }),
        ));

        let shipped = self.isolation.first().map(|i| i.variant.clone());
        for i in self
            .isolation
            .iter()
            .filter(|i| Some(&i.variant) == shipped.as_ref())
        {
            targets.push(target(
                &format!(
                    "slow queue saturated, {} client(s): fast path throughput >= 0.9 x idle and p99 <= 2 x idle",
                    i.concurrency
                ),
                Some((
                    format!(
                        "{:.1} req/s = {:.2} x {:.1}; p99 {:.2} ms = {:.2} x {:.2} ms; slow path {:.1} jobs/s meanwhile",
                        i.busy.requests_per_sec,
                        i.throughput_ratio(),
                        i.idle.requests_per_sec,
                        i.busy.latency.p99_ms,
                        i.p99_ratio(),
                        i.idle.latency.p99_ms,
                        i.slow_jobs_per_sec
                    ),
                    i.met(),
                )),
            ));
        }

        targets.push(target(
            ">= 5,000 null-model jobs per second end to end",
            self.pipeline.as_ref().map(|p| {
                (
                    format!("{:.0} jobs/s", p.jobs_per_sec),
                    p.jobs_per_sec >= 5000.0,
                )
            }),
        ));

        let fanout = self.fanout.as_ref();
        targets.push(target(
            "10,000 SSE clients in <= 200 MB gateway RSS",
            fanout.map(|f| {
                let mb = f.rss_peak_mib * 1.048_576;
                (
                    format!(
                        "{} clients, peak {mb:.1} MB ({:.1} MiB)",
                        f.connected, f.rss_peak_mib
                    ),
                    f.connected >= 10_000 && mb <= 200.0,
                )
            }),
        ));
        targets.push(target(
            "one result delivered to all 10,000 within 1 s",
            fanout.map(|f| {
                (
                    format!(
                        "last of {} after {:.1} ms, {} missed",
                        f.connected - f.missed.min(f.connected),
                        f.delivery.max_ms,
                        f.missed
                    ),
                    f.connected >= 10_000 && f.missed == 0 && f.delivery.max_ms <= 1000.0,
                )
            }),
        ));
        targets.extend(escalation_targets(self.escalation.as_ref()));
        targets.push(soak_target(self.soak.as_ref()));
        self.targets = targets;
    }
}

/// Row g's targets: `auto` costs the fast path nothing, saves slow-model work, and the jobs it
/// skips keep the calibration's agreement in the audit sample.
fn escalation_targets(g: Option<&Escalation>) -> [Target; 3] {
    let latency = target(
        "`escalate=auto` fast path p50 <= 1.1 x `escalate=always`'s (same workload, alternating)",
        g.map(|g| {
            let (a, b) = (&g.always.latency, &g.auto.latency);
            let ratio = b.p50_ms / a.p50_ms;
            (
                format!(
                    "{:.2} ms = {ratio:.2} x {:.2} ms (p99 {:.2} x)",
                    b.p50_ms,
                    a.p50_ms,
                    b.p99_ms / a.p99_ms
                ),
                ratio <= 1.1,
            )
        }),
    );
    let saved = target(
        "`escalate=auto` sends fewer jobs to the slow model than `always`",
        g.map(|g| {
            (
                format!(
                    "{:.2} slow inferences per job against {:.2}: {:.0} % saved",
                    g.auto.slow_per_job(),
                    g.always.slow_per_job(),
                    g.saved_share() * 100.0
                ),
                g.saved_share() > 0.0,
            )
        }),
    );
    let agreement = target(
        "skipped jobs agree with the slow model >= the calibration target (audit sample)",
        g.map(|g| {
            let audits = g.auto.audits_agreed + g.auto.audits_disagreed;
            match g.auto.audit_agreement() {
                Some(share) => (
                    format!(
                        "{:.0} of {audits:.0} audited agree: {:.1} % (target {:.0} %)",
                        g.auto.audits_agreed,
                        share * 100.0,
                        g.calibration.target * 100.0
                    ),
                    share >= g.calibration.target,
                ),
                None => ("no audit done".into(), false),
            }
        }),
    );
    [latency, saved, agreement]
}

/// Row s's target: nothing grows, nothing fails, nothing is left queued.
fn soak_target(s: Option<&Soak>) -> Target {
    target(
        "soak (null model, 30 min or 100,000 jobs): every process's RSS grows < 10 % after \
         warm-up, 0 failures, queue drained",
        s.map(|s| {
            let growth = s.worst_growth().map_or_else(
                || "RSS growth unknown".into(),
                |(g, name)| format!("largest RSS growth {:+.1} % ({name})", g * 100.0),
            );
            let drained = if s.drained {
                format!("queue drained in {:.1} s", s.drain_secs)
            } else {
                "queue not drained".into()
            };
            (
                format!(
                    "{} jobs in {:.0} s: {growth}, {} failures, {drained}",
                    s.completed, s.secs, s.failures
                ),
                s.passed(),
            )
        }),
    )
}
