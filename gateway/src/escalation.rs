//! Escalation on the gateway: which jobs go on to the slow model (`escalate=always|auto|never`),
//! the thresholds `auto` compares the fast score with, the brownout that lowers them while the
//! slow path is far behind, and the audit sample of skipped jobs.
//!
//! The policy and the thresholds file are `tandem_core::escalation`; this module adds what
//! only the gateway knows: the queue's expected wait, and the metrics of its decisions.

use std::{
    path::PathBuf,
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::Duration,
};

use tandem_core::{
    config::Env,
    escalation::{self, Escalate, EscalationDecision, Thresholds},
    job::{JobId, Prediction},
};

use crate::progress::QueueProgress;

/// `TANDEM_ESCALATE*` and `TANDEM_BROWNOUT_*` (see the README's configuration table).
#[derive(Debug, Clone)]
pub struct EscalationConfig {
    /// `TANDEM_ESCALATE` (default `always`): the policy of requests that name none.
    pub default_policy: Escalate,
    /// `TANDEM_ESCALATE_THRESHOLD` (default 0.9) or, with `TANDEM_ESCALATE_THRESHOLDS_FILE`
    /// (written by `tandem calibrate`), the file's global and per-class thresholds.
    pub thresholds: Arc<Thresholds>,
    /// `TANDEM_ESCALATE_THRESHOLDS_FILE`, when set.
    pub thresholds_file: Option<PathBuf>,
    /// `TANDEM_ESCALATE_AUDIT_RATE` (default 0): the share of skipped jobs audited.
    pub audit_rate: f64,
    /// `TANDEM_BROWNOUT_WAIT_MS` (default 0: never): past this expected wait for the slow
    /// path, `auto` uses the brownout threshold.
    pub brownout_wait: Duration,
    /// `TANDEM_BROWNOUT_THRESHOLD` (default 0.5): the threshold during a brownout.
    pub brownout_threshold: f32,
}

impl EscalationConfig {
    pub fn from_env(env: &mut Env) -> Self {
        let default_policy = env.parse("TANDEM_ESCALATE", Escalate::Always);
        let global: f32 = env.parse("TANDEM_ESCALATE_THRESHOLD", 0.9);
        let thresholds_file = env
            .optional_string("TANDEM_ESCALATE_THRESHOLDS_FILE")
            .map(PathBuf::from);
        let thresholds = match &thresholds_file {
            Some(path) => Thresholds::load(path).unwrap_or_else(|e| {
                env.error(format!("TANDEM_ESCALATE_THRESHOLDS_FILE: {e}"));
                Thresholds::global(global)
            }),
            None => Thresholds::global(global),
        };
        let config = Self {
            default_policy,
            thresholds: Arc::new(thresholds),
            thresholds_file,
            audit_rate: env.parse("TANDEM_ESCALATE_AUDIT_RATE", 0.0),
            brownout_wait: env.millis("TANDEM_BROWNOUT_WAIT_MS", Duration::ZERO),
            brownout_threshold: env.parse("TANDEM_BROWNOUT_THRESHOLD", 0.5),
        };
        if !(0.0..=1.0).contains(&global) {
            env.error("TANDEM_ESCALATE_THRESHOLD must be between 0 and 1");
        }
        if !(0.0..=1.0).contains(&config.audit_rate) {
            env.error("TANDEM_ESCALATE_AUDIT_RATE must be between 0 and 1");
        }
        if !(0.0..=1.0).contains(&config.brownout_threshold) {
            env.error("TANDEM_BROWNOUT_THRESHOLD must be between 0 and 1");
        }
        config
    }
}

/// The gateway's escalation state; cheap to clone.
#[derive(Debug, Clone)]
pub struct Escalation {
    pub config: Arc<EscalationConfig>,
    brownout: Arc<AtomicBool>,
}

/// The slow model's recent inference time (ms, as `f64` bits; 0 while none was seen): what a
/// skipped job saves, for `tandem_escalation_slow_seconds_saved_total`.
static SLOW_MS: AtomicU64 = AtomicU64::new(0);

/// Feeds the estimate of the slow model's cost with an answer the gateway has seen (a moving
/// average: a tenth of each new observation).
pub fn observe_slow(slow: &Prediction) {
    let old = f64::from_bits(SLOW_MS.load(Ordering::Relaxed));
    let new = if old == 0.0 {
        slow.inference_ms
    } else {
        old * 0.9 + slow.inference_ms * 0.1
    };
    SLOW_MS.store(new.to_bits(), Ordering::Relaxed);
}

/// Counts the slow model's time a job did not spend (`tandem_escalation_slow_ms_saved_total`,
/// milliseconds: Prometheus counters are integers), at the recent average.
pub fn count_saved() {
    let ms = f64::from_bits(SLOW_MS.load(Ordering::Relaxed));
    metrics::counter!("tandem_escalation_slow_ms_saved_total").increment(ms.round() as u64);
}

impl Escalation {
    pub fn new(config: EscalationConfig) -> Self {
        Self {
            config: Arc::new(config),
            brownout: Arc::new(AtomicBool::new(false)),
        }
    }

    /// Decides one job from its fast answer: whether it goes to the slow model, and why.
    pub async fn decide(
        &self,
        policy: Escalate,
        fast: &Prediction,
        progress: &QueueProgress,
    ) -> (bool, EscalationDecision) {
        let mut threshold = self.config.thresholds.for_label(&fast.label);
        let brownout = policy == Escalate::Auto && self.brownout_now(progress).await;
        if brownout {
            threshold = threshold.min(self.config.brownout_threshold);
        }
        let (escalated, decision) = escalation::decide(policy, fast.score, threshold, brownout);
        self.count(policy, if escalated { "escalated" } else { "skipped" });
        if !escalated {
            count_saved();
        }
        (escalated, decision)
    }

    /// Counts a decision (`outcome`: `escalated`, `skipped` or `cached`).
    pub fn count(&self, policy: Escalate, outcome: &'static str) {
        metrics::counter!("tandem_escalation_decisions_total",
            "policy" => policy.as_str(), "outcome" => outcome)
        .increment(1);
    }

    /// Whether this skipped job is in the audit sample: the job id's random bits decide, so
    /// the sample is uniform and a retry of the same job decides the same.
    pub fn audited(&self, id: JobId) -> bool {
        // The low 64 bits of a v4 UUID are random but for 2 variant bits (the high ones).
        let bits = id.uuid().as_u128() as u64 & (u64::MAX >> 2);
        (bits as f64 / (u64::MAX >> 2) as f64) < self.config.audit_rate
    }

    /// Whether the slow path's expected wait is over `TANDEM_BROWNOUT_WAIT_MS`; says so (log
    /// line, gauge) when that changes.
    async fn brownout_now(&self, progress: &QueueProgress) -> bool {
        if self.config.brownout_wait.is_zero() {
            return false;
        }
        let wait = progress.current().await.and_then(|s| s.expected_wait());
        let on = wait.is_some_and(|w| w > self.config.brownout_wait);
        if self.brownout.swap(on, Ordering::Relaxed) != on {
            metrics::gauge!("tandem_escalation_brownout").set(if on { 1.0 } else { 0.0 });
            if on {
                tracing::warn!(expected_wait = ?wait, limit = ?self.config.brownout_wait,
                    threshold = self.config.brownout_threshold,
                    "brownout on: the slow path is behind, auto escalates fewer jobs");
            } else {
                tracing::info!(expected_wait = ?wait, "brownout off");
            }
        }
        on
    }
}
