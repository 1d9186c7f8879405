//! Row a, the floor: each model on ONNX Runtime in this process, through the model server's own
//! runner (same session options, thread settings from `models/*/config.toml`), and what
//! decoding and preprocessing an image costs, with nothing else running.

use std::{
    path::Path,
    sync::Arc,
    time::{Duration, Instant},
};

use serde::{Deserialize, Serialize};
use tandem_model_server::{
    config::available_cores, repository::ModelSpec, runner::ModelRunner, runtime,
    scheduler::Scheduler,
};

use crate::{
    inputs::Photo,
    stats::{Summary, ms_since, round3},
};

/// One model, instances x threads and batch size.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct InferenceFloor {
    pub model: String,
    /// Sessions, each its own thread with `threads` intra-op threads; as many callers.
    #[serde(default = "one")]
    pub instances: usize,
    pub threads: usize,
    /// Whether `instances` x `threads` is what `models/<model>/config.toml` says.
    pub configured: bool,
    pub batch: usize,
    /// Time of one session run (one batch).
    pub latency: Summary,
    pub images_per_sec: f64,
}

/// Decode, crop, resize, scale of one image for one model's input, on one thread.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PreprocessFloor {
    pub image: String,
    pub model: String,
    pub latency: Summary,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Floor {
    pub inference: Vec<InferenceFloor>,
    pub preprocess: Vec<PreprocessFloor>,
}

fn one() -> usize {
    1
}

/// The shapes measured: the configured one first, then 1 x 1, 1 x 2 and 2 x 1 for comparison.
fn shapes(spec: &ModelSpec) -> Vec<(usize, usize)> {
    let configured = (spec.instances, spec.intra_op_threads);
    let mut shapes = vec![configured];
    shapes.extend(
        [(1, 1), (1, 2), (2, 1)]
            .into_iter()
            .filter(|s| *s != configured),
    );
    shapes
}

impl Floor {
    /// The configured, batch-1 row of `model`.
    pub fn of(&self, model: &str) -> Option<&InferenceFloor> {
        self.inference
            .iter()
            .find(|f| f.model == model && f.configured && f.batch == 1)
    }
}

/// Measures `models` (folders of `models_dir`) for `secs` per row, and preprocessing of
/// `photos` for the first model.
pub async fn measure(
    models_dir: &Path,
    dylib: Option<&Path>,
    models: &[&str],
    photos: &[&Photo],
    secs: f64,
) -> anyhow::Result<Floor> {
    let dylib = runtime::resolve_dylib(dylib)?;
    let environment = runtime::environment(&dylib)?;
    let mut floor = Floor::default();
    for model in models {
        let spec = ModelSpec::load(&models_dir.join(model))?;
        let chelsea = photos.first().map(|p| p.bytes.clone()).unwrap_or_default();
        let image = spec.preprocess.prepare_encoded(&chelsea, 0, 40_000_000)?;
        for (instances, threads) in shapes(&spec) {
            let mut variant = spec.clone();
            (variant.instances, variant.intra_op_threads) = (instances, threads);
            let scheduler = Scheduler::new(available_cores());
            let runner =
                ModelRunner::start(Arc::new(variant), environment.clone(), &scheduler).await?;
            for batch in [1, 8].into_iter().filter(|b| *b <= spec.max_batch_size) {
                let input: Vec<f32> = image.repeat(batch);
                let (latencies, wall_secs) =
                    time_runs(secs, instances, || runner.infer(input.clone(), batch)).await?;
                let row = InferenceFloor {
                    model: (*model).to_owned(),
                    instances,
                    threads,
                    configured: (instances, threads) == (spec.instances, spec.intra_op_threads),
                    batch,
                    images_per_sec: round3((latencies.len() * batch) as f64 / wall_secs),
                    latency: Summary::of(&latencies),
                };
                println!(
                    "  a. {model} {instances} x {threads} threads, batch {batch}: p50 {:.2} ms, {:.1} images/s",
                    row.latency.p50_ms, row.images_per_sec
                );
                floor.inference.push(row);
            }
        }
    }
    if let Some(model) = models.first() {
        let spec = ModelSpec::load(&models_dir.join(model))?;
        for photo in photos {
            let mut latencies = Vec::new();
            let started = Instant::now();
            while latencies.len() < 3 || started.elapsed().as_secs_f64() < secs / 2.0 {
                let t = Instant::now();
                spec.preprocess
                    .prepare_encoded(&photo.bytes, 0, 40_000_000)?;
                latencies.push(ms_since(t));
            }
            let row = PreprocessFloor {
                image: photo.name.clone(),
                model: (*model).to_owned(),
                latency: Summary::of(&latencies),
            };
            println!(
                "  a. preprocess {} for {model}: p50 {:.2} ms",
                photo.name, row.latency.p50_ms
            );
            floor.preprocess.push(row);
        }
    }
    Ok(floor)
}

/// The model's runner as configured, `photo` prepared as its input (one image), and the
/// model's instances (as many callers keep it busy).
pub async fn runner(
    models_dir: &Path,
    dylib: Option<&Path>,
    model: &str,
    photo: &Photo,
) -> anyhow::Result<(ModelRunner, Vec<f32>, usize)> {
    let environment = runtime::environment(&runtime::resolve_dylib(dylib)?)?;
    let spec = ModelSpec::load(&models_dir.join(model))?;
    let image = spec
        .preprocess
        .prepare_encoded(&photo.bytes, 0, 40_000_000)?;
    let scheduler = Scheduler::new(available_cores());
    let instances = spec.instances;
    Ok((
        ModelRunner::start(Arc::new(spec), environment, &scheduler).await?,
        image,
        instances,
    ))
}

/// Runs `call` a few times to warm up, then from `callers` loops at once for `secs` (at least
/// 20 runs); milliseconds each, and the seconds it took.
async fn time_runs<F, Fut, T, E>(
    secs: f64,
    callers: usize,
    call: F,
) -> anyhow::Result<(Vec<f64>, f64)>
where
    F: Fn() -> Fut,
    Fut: Future<Output = Result<T, E>>,
    E: std::error::Error + Send + Sync + 'static,
{
    for _ in 0..5 {
        call().await?;
    }
    from_callers(secs, callers, 20, call).await
}

/// Runs `call` from `callers` loops at once until `secs` have passed and each loop has run
/// at least `min_runs` times; milliseconds of each run, and the seconds it all took.
pub async fn from_callers<F, Fut, T, E>(
    secs: f64,
    callers: usize,
    min_runs: usize,
    call: F,
) -> anyhow::Result<(Vec<f64>, f64)>
where
    F: Fn() -> Fut,
    Fut: Future<Output = Result<T, E>>,
    E: std::error::Error + Send + Sync + 'static,
{
    let started = Instant::now();
    let caller = async || {
        let mut latencies = Vec::new();
        while latencies.len() < min_runs || started.elapsed() < Duration::from_secs_f64(secs) {
            let t = Instant::now();
            call().await?;
            latencies.push(ms_since(t));
        }
        anyhow::Ok(latencies)
    };
    let all = futures::future::try_join_all((0..callers.max(1)).map(|_| caller())).await?;
    Ok((all.concat(), started.elapsed().as_secs_f64()))
}
