//! Prometheus metrics: one recorder per process, its `/metrics` handler, and the series every
//! service describes.
//!
//! The `metrics` facade is process-global, and the tests run the gateway, workers and the model
//! server in one process: [`init`] installs the recorder once and every later call shares its
//! handle. Series never collide because each service names its own (`tandem_http_*` for the
//! gateway's HTTP layer, `tandem_worker_*`, `tandem_model_*`, `tandem_queue_*`,
//! `tandem_sse_*`); in one process, each `/metrics` shows every series of that process.

use std::{sync::OnceLock, time::Duration};

use axum::{http::header, response::IntoResponse};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

/// Latency buckets in seconds: 1 ms to 2 minutes.
const SECONDS_BUCKETS: &[f64] = &[
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0,
];
/// Batch-size buckets (images per batch).
const BATCH_BUCKETS: &[f64] = &[1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0];

/// Installs the process's Prometheus recorder (first call) and returns its handle.
///
/// If another recorder was installed first (not by Tandem), a handle that is not installed is
/// returned: `/metrics` then answers with nothing rather than failing the service.
pub fn init() -> &'static PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE.get_or_init(|| {
        let builder = || {
            PrometheusBuilder::new()
                .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), SECONDS_BUCKETS)
                .and_then(|b| {
                    b.set_buckets_for_metric(Matcher::Suffix("_batch_size".into()), BATCH_BUCKETS)
                })
                .unwrap_or_else(|_| PrometheusBuilder::new())
        };
        match builder().install_recorder() {
            Ok(handle) => {
                describe();
                spawn_upkeep(handle.clone());
                handle
            }
            Err(e) => {
                tracing::warn!(error = %e, "metrics recorder not installed");
                builder().build_recorder().handle()
            }
        }
    })
}

/// How often histogram samples are folded into their buckets when nothing scrapes.
const UPKEEP_INTERVAL: Duration = Duration::from_secs(5);

/// Folds histogram samples into their buckets every [`UPKEEP_INTERVAL`], on a thread of its
/// own (`init` may run outside any runtime). The recorder keeps each sample until upkeep runs,
/// which `install_recorder` leaves to us: with no scraper, each job's few samples (about 30
/// bytes) would be kept for ever, memory growing without bound (the soak, row s, found it).
fn spawn_upkeep(handle: PrometheusHandle) {
    let spawned = std::thread::Builder::new()
        .name("metrics-upkeep".into())
        .spawn(move || {
            loop {
                std::thread::sleep(UPKEEP_INTERVAL);
                handle.run_upkeep();
            }
        });
    if let Err(e) = spawned {
        tracing::warn!(error = %e, "metrics upkeep not started: histograms drain on scrape only");
    }
}

/// The Prometheus text exposition of every series of this process.
pub fn render() -> String {
    let handle = init();
    handle.run_upkeep();
    handle.render()
}

/// `GET /metrics` for an axum router.
pub async fn metrics_route() -> impl IntoResponse {
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        render(),
    )
}

/// Help texts of every series, by the service that writes them.
fn describe() {
    describe_gateway();
    describe_worker();
    describe_model_server();
}

fn describe_gateway() {
    use metrics::{Unit, describe_counter, describe_gauge, describe_histogram};
    describe_counter!(
        "tandem_http_requests_total",
        "HTTP requests answered by the gateway, by method, route and status"
    );
    describe_histogram!(
        "tandem_http_request_duration_seconds",
        Unit::Seconds,
        "Time to the response head, by method, route and status"
    );
    describe_gauge!("tandem_sse_open_streams", "Open job event streams");
    describe_gauge!(
        "tandem_queue_messages",
        "Jobs stored in the work-queue stream (waiting or being worked on)"
    );
    describe_gauge!(
        "tandem_queue_consumer_pending",
        "Jobs not yet delivered to any worker"
    );
    describe_gauge!(
        "tandem_queue_consumer_ack_pending",
        "Jobs delivered to a worker and not yet acknowledged"
    );
    describe_counter!(
        "tandem_escalation_decisions_total",
        "Jobs by escalation policy and outcome: escalated (to the slow model), skipped (the fast answer final) or cached"
    );
    describe_counter!(
        "tandem_escalation_slow_ms_saved_total",
        "Slow-model milliseconds not spent on skipped and cached jobs, at the recent average slow inference time"
    );
    describe_gauge!(
        "tandem_escalation_brownout",
        "1 while the slow path's expected wait is over TANDEM_BROWNOUT_WAIT_MS (auto uses the brownout threshold)"
    );
    describe_counter!(
        "tandem_escalation_audits_dropped_total",
        "Skipped jobs sampled for the audit that could not be queued (audit stream full or away)"
    );
    describe_counter!(
        "tandem_result_cache_lookups_total",
        "Result cache lookups: hit, slow_hit (the fast answer missing or outdated), miss, outdated"
    );
    describe_counter!(
        "tandem_jobs_expired_total",
        "Jobs ended expired by a gateway: the deadline passed before the slow answer"
    );
}

fn describe_worker() {
    use metrics::{Unit, describe_counter, describe_histogram};
    describe_counter!(
        "tandem_worker_jobs_total",
        "Job deliveries ended by a worker, by outcome"
    );
    describe_counter!(
        "tandem_worker_redeliveries_total",
        "Deliveries of a job that had been delivered before"
    );
    describe_counter!(
        "tandem_worker_retries_total",
        "Jobs handed back (nak) for a later retry"
    );
    describe_histogram!(
        "tandem_worker_job_latency_seconds",
        Unit::Seconds,
        "From submission to the slow result stored"
    );
    describe_counter!(
        "tandem_escalation_audits_total",
        "Audited skipped jobs, by whether the slow model agreed with the fast label"
    );
    describe_histogram!(
        "tandem_worker_audit_inference_seconds",
        Unit::Seconds,
        "Slow-model time of one audit (a skipped job run in the background)"
    );
    describe_counter!(
        "tandem_worker_cache_hits_total",
        "Jobs answered from the result cache by a worker (an identical job had run the model)"
    );
    describe_counter!(
        "tandem_fast_slow_agreement_total",
        "Succeeded jobs whose fast and slow labels agree (agree=true) or differ"
    );
}

fn describe_model_server() {
    use metrics::{Unit, describe_counter, describe_histogram};
    describe_histogram!(
        "tandem_model_inference_duration_seconds",
        Unit::Seconds,
        "ONNX Runtime time of one batch, by model"
    );
    describe_histogram!("tandem_model_batch_size", "Images per batch run, by model");
    describe_histogram!(
        "tandem_model_preprocess_duration_seconds",
        Unit::Seconds,
        "Decoding, resizing and scaling one request's images, by model"
    );
    describe_counter!(
        "tandem_model_decode_cache_hits_total",
        "Images not decoded again: another request (the other model's) had just decoded them"
    );
    describe_histogram!(
        "tandem_model_queue_duration_seconds",
        Unit::Seconds,
        "Time a request waited in its model's queue for a batch to start, by model"
    );
    describe_counter!(
        "tandem_model_inferences_total",
        "Images run through a model, failed batches included, by model"
    );
    describe_counter!(
        "tandem_model_inference_failures_total",
        "Batches that failed in ONNX Runtime, by model"
    );
}

/// Counts one job whose fast and slow answers are both known, in
/// `tandem_fast_slow_agreement_total`. Whoever writes the second of the two answers counts it:
/// the worker, or the gateway when the slow model answered first.
pub fn record_agreement(fast: &crate::job::Prediction, slow: &crate::job::Prediction) {
    let agree = if fast.label == slow.label {
        "true"
    } else {
        "false"
    };
    metrics::counter!("tandem_fast_slow_agreement_total", "agree" => agree).increment(1);
}

#[cfg(test)]
mod tests {
    /// Without a scraper the recorder keeps every histogram sample until upkeep runs, so
    /// `init` must start the thread that runs it.
    #[test]
    fn init_starts_the_histogram_upkeep_thread() {
        super::init();
        let thread_names = || -> Vec<String> {
            let tasks = std::fs::read_dir("/proc/self/task").expect("Linux /proc");
            tasks
                .filter_map(|task| std::fs::read_to_string(task.ok()?.path().join("comm")).ok())
                .map(|name| name.trim().to_owned())
                .collect()
        };
        // The new thread names itself once it runs: poll for it.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        let mut names = thread_names();
        while !names.iter().any(|name| name == "metrics-upkeep") {
            assert!(
                std::time::Instant::now() < deadline,
                "no metrics-upkeep thread: {names:?}"
            );
            std::thread::yield_now();
            names = thread_names();
        }
    }
}
