//! Row b: `/predict` latency and throughput against concurrency (row d, in `isolation`,
//! measures its points the same way).

use serde::{Deserialize, Serialize};

use crate::{
    Settings,
    inputs::Photo,
    load::{self, Call},
    procs::{Env, Gateway, ModelServer, Nats, scrape},
    stats::{CpuMeter, CpuSplit, Summary, round3},
};

pub const FAST: &str = "efficientnet_lite0";
pub const SLOW: &str = "efficientnet_lite2";

/// One image at one concurrency.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PredictPoint {
    pub image: String,
    /// `shipped` (models/ as committed) or the changed setting.
    pub variant: String,
    pub concurrency: usize,
    pub latency: Summary,
    pub requests_per_sec: f64,
    pub errors: u64,
    /// Mean time to the response head inside the gateway (its own histogram).
    pub gateway_ms_mean: f64,
    /// Mean of `fast.inference_ms`: the gateway's gRPC call, decode and inference included.
    pub model_call_ms_mean: f64,
    /// Mean ONNX Runtime time of one batch in the model server (its own histogram).
    pub ort_batch_ms_mean: f64,
    /// Mean images per ONNX Runtime batch.
    pub batch_size_mean: f64,
    /// Mean decode + preprocessing time of one request in the model server.
    #[serde(default)]
    pub preprocess_ms_mean: f64,
    /// Mean wait of one request in the model's queue before its batch started.
    #[serde(default)]
    pub queue_ms_mean: f64,
    pub cpu: CpuSplit,
    /// Every latency, milliseconds.
    pub samples: Vec<f64>,
}

/// Counters read before and after a measurement.
#[derive(Debug, Clone, Copy, Default)]
struct Counters {
    gateway_sum: f64,
    gateway_count: f64,
    ort_sum: f64,
    ort_count: f64,
    batch_sum: f64,
    preprocess_sum: f64,
    preprocess_count: f64,
    queue_sum: f64,
    queue_count: f64,
}

async fn counters(gateway: &Gateway, model_server: &str) -> anyhow::Result<Counters> {
    let route = "route=\"/predict\"";
    let model = format!("model=\"{FAST}\"");
    Ok(Counters {
        gateway_sum: scrape(
            &gateway.url(),
            "tandem_http_request_duration_seconds_sum",
            route,
        )
        .await?,
        gateway_count: scrape(
            &gateway.url(),
            "tandem_http_request_duration_seconds_count",
            route,
        )
        .await?,
        ort_sum: scrape(
            model_server,
            "tandem_model_inference_duration_seconds_sum",
            &model,
        )
        .await?,
        ort_count: scrape(
            model_server,
            "tandem_model_inference_duration_seconds_count",
            &model,
        )
        .await?,
        batch_sum: scrape(model_server, "tandem_model_batch_size_sum", &model).await?,
        preprocess_sum: scrape(
            model_server,
            "tandem_model_preprocess_duration_seconds_sum",
            &model,
        )
        .await?,
        preprocess_count: scrape(
            model_server,
            "tandem_model_preprocess_duration_seconds_count",
            &model,
        )
        .await?,
        queue_sum: scrape(
            model_server,
            "tandem_model_queue_duration_seconds_sum",
            &model,
        )
        .await?,
        queue_count: scrape(
            model_server,
            "tandem_model_queue_duration_seconds_count",
            &model,
        )
        .await?,
    })
}

fn ratio_ms(sum: f64, count: f64) -> f64 {
    if count > 0.0 {
        round3(sum / count * 1000.0)
    } else {
        0.0
    }
}

/// Warms up, then measures `/predict` with `photo` at `concurrency` against a running stack.
#[allow(clippy::too_many_arguments)]
pub(crate) async fn measure_point(
    settings: &Settings,
    gateway: &Gateway,
    model_server: &ModelServer,
    others: &[(&str, u32)],
    photo: &Photo,
    variant: &str,
    concurrency: usize,
    secs: f64,
) -> anyhow::Result<PredictPoint> {
    let call = Call::predict(photo);
    load::run(gateway.addr, &call, concurrency, settings.warmup_secs).await?;
    let before = counters(gateway, &model_server.metrics_url).await?;
    let mut pids = vec![
        ("gateway", gateway.proc.pid()),
        ("model-server", model_server.proc.pid()),
    ];
    pids.extend_from_slice(others);
    let meter = CpuMeter::start(&pids);
    let outcome = load::run(gateway.addr, &call, concurrency, secs).await?;
    let cpu = meter.stop();
    let after = counters(gateway, &model_server.metrics_url).await?;
    let ort_batches = after.ort_count - before.ort_count;
    let point = PredictPoint {
        image: photo.name.clone(),
        variant: variant.to_owned(),
        concurrency,
        latency: Summary::of(&outcome.latencies),
        requests_per_sec: round3(outcome.per_sec),
        errors: outcome.errors,
        gateway_ms_mean: ratio_ms(
            after.gateway_sum - before.gateway_sum,
            after.gateway_count - before.gateway_count,
        ),
        model_call_ms_mean: Summary::of(&outcome.model_call_ms).mean_ms,
        ort_batch_ms_mean: ratio_ms(after.ort_sum - before.ort_sum, ort_batches),
        batch_size_mean: if ort_batches > 0.0 {
            round3((after.batch_sum - before.batch_sum) / ort_batches)
        } else {
            0.0
        },
        preprocess_ms_mean: ratio_ms(
            after.preprocess_sum - before.preprocess_sum,
            after.preprocess_count - before.preprocess_count,
        ),
        queue_ms_mean: ratio_ms(
            after.queue_sum - before.queue_sum,
            after.queue_count - before.queue_count,
        ),
        cpu,
        samples: outcome.latencies.iter().map(|v| round3(*v)).collect(),
    };
    println!(
        "  {} c={concurrency} [{variant}]: p50 {:.2} p90 {:.2} p99 {:.2} ms, {:.1} req/s, {} errors",
        photo.name,
        point.latency.p50_ms,
        point.latency.p90_ms,
        point.latency.p99_ms,
        point.requests_per_sec,
        point.errors
    );
    Ok(point)
}

/// Row b: every photo at every concurrency, each point on a fresh nats-server and gateway (so
/// queued jobs never pile up across points), no slow-worker (the slow path idle).
pub async fn predict_curve(
    settings: &Settings,
    env: &Env,
    model_server: &ModelServer,
    photos: &[(&Photo, f64)],
    concurrencies: &[usize],
    variant: &str,
) -> anyhow::Result<Vec<PredictPoint>> {
    let mut points = Vec::new();
    for (photo, secs) in photos {
        for &concurrency in concurrencies {
            let nats = Nats::start(env).await?;
            let gateway = Gateway::start(env, &nats, &model_server.url, FAST).await?;
            let others = [("nats-server", nats.proc.pid())];
            points.push(
                measure_point(
                    settings,
                    &gateway,
                    model_server,
                    &others,
                    photo,
                    variant,
                    concurrency,
                    *secs,
                )
                .await?,
            );
            gateway.proc.stop().await;
            nats.proc.stop().await;
        }
    }
    Ok(points)
}

/// `GET /healthz` at concurrency 1: what the HTTP stack and the load generator cost alone.
pub async fn http_floor(
    settings: &Settings,
    env: &Env,
    model_server: &ModelServer,
) -> anyhow::Result<Summary> {
    let nats = Nats::start(env).await?;
    let gateway = Gateway::start(env, &nats, &model_server.url, FAST).await?;
    load::run(gateway.addr, &Call::healthz(), 1, settings.warmup_secs).await?;
    let outcome = load::run(gateway.addr, &Call::healthz(), 1, settings.secs / 2.0).await?;
    gateway.proc.stop().await;
    nats.proc.stop().await;
    Ok(Summary::of(&outcome.latencies))
}
