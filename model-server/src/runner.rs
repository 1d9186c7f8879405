//! One OS thread per model, owning its ONNX Runtime session, fed by a bounded channel.
//!
//! The thread takes the first queued request, then whatever else is already queued (waiting at
//! most `max_queue_delay_us` for more) up to `max_batch_size` images, and runs them as one
//! batch: Triton's dynamic batching. Inference never runs on the async runtime's threads.

use std::{
    borrow::Cow,
    sync::{
        Arc,
        mpsc::{Receiver, SyncSender, TrySendError, sync_channel},
    },
    time::{Duration, Instant},
};

use anyhow::{Context, bail};
use ort::{
    environment::Environment,
    session::Session,
    value::{TensorElementType, TensorRef, ValueType},
};
use tokio::sync::oneshot;

use crate::{
    error::ModelError,
    repository::{ModelSpec, Spinning},
};

/// Requests that may wait in a model's queue before new ones are refused.
const QUEUE_CAPACITY: usize = 256;

/// One request's input: `images` images, `images * image_len` values.
struct Job {
    input: Vec<f32>,
    images: usize,
    queued: Instant,
    reply: oneshot::Sender<Result<Vec<f32>, ModelError>>,
}

/// A handle to a model's thread; dropping every handle stops the thread.
#[derive(Debug, Clone)]
pub struct ModelRunner {
    name: String,
    queue: SyncSender<Job>,
}

impl std::fmt::Debug for Job {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Job").field("images", &self.images).finish()
    }
}

impl ModelRunner {
    /// Starts the model's thread, which creates the session; resolves once it is loaded.
    pub async fn start(spec: Arc<ModelSpec>, environment: Environment) -> anyhow::Result<Self> {
        let (queue, jobs) = sync_channel(QUEUE_CAPACITY);
        let (loaded_tx, loaded) = oneshot::channel();
        let name = spec.name.clone();
        std::thread::Builder::new()
            .name(format!("model-{name}"))
            .spawn(move || {
                // Before the session exists: ONNX Runtime's own threads inherit it.
                set_nice(&spec);
                let mut session = match load_session(&spec, &environment) {
                    Ok(session) => {
                        let _ = loaded_tx.send(Ok(()));
                        session
                    }
                    Err(e) => {
                        let _ = loaded_tx.send(Err(e));
                        return;
                    }
                };
                let duration =
                    metrics::histogram!("tandem_model_inference_duration_seconds", "model" => spec.name.clone());
                let batch_size =
                    metrics::histogram!("tandem_model_batch_size", "model" => spec.name.clone());
                let failures =
                    metrics::counter!("tandem_model_inference_failures_total", "model" => spec.name.clone());
                serve(
                    &jobs,
                    spec.max_batch_size,
                    spec.max_queue_delay,
                    &queue_wait(&spec),
                    |input, batch| {
                        let started = Instant::now();
                        let result = infer(&mut session, &spec, input, batch);
                        duration.record(started.elapsed().as_secs_f64());
                        batch_size.record(batch as f64);
                        if result.is_err() {
                            failures.increment(1);
                        }
                        result
                    },
                );
                tracing::debug!(model = %spec.name, "model thread stopped");
            })
            .context("cannot start a model thread")?;
        loaded
            .await
            .context("the model thread stopped while loading")??;
        Ok(Self { name, queue })
    }

    /// Starts the thread of a `backend = "null"` model: batched like any model, but every image
    /// gets all-zero logits at once, without ONNX Runtime (see `bench/`).
    pub fn start_null(spec: Arc<ModelSpec>) -> anyhow::Result<Self> {
        let (queue, jobs) = sync_channel(QUEUE_CAPACITY);
        let name = spec.name.clone();
        let classes = spec.num_classes();
        std::thread::Builder::new()
            .name(format!("model-{name}"))
            .spawn(move || {
                set_nice(&spec);
                serve(
                    &jobs,
                    spec.max_batch_size,
                    spec.max_queue_delay,
                    &queue_wait(&spec),
                    |_, batch| Ok(vec![0.0; batch * classes]),
                );
            })
            .context("cannot start a model thread")?;
        Ok(Self { name, queue })
    }

    /// Queues `images` prepared images and waits for their output (`images * classes` values).
    pub async fn infer(&self, input: Vec<f32>, images: usize) -> Result<Vec<f32>, ModelError> {
        let (reply, output) = oneshot::channel();
        self.queue
            .try_send(Job {
                input,
                images,
                queued: Instant::now(),
                reply,
            })
            .map_err(|e| match e {
                TrySendError::Full(_) => ModelError::Overloaded(self.name.clone()),
                TrySendError::Disconnected(_) => ModelError::internal("the model thread stopped"),
            })?;
        output
            .await
            .map_err(|_| ModelError::internal("the model thread dropped a request"))?
    }
}

/// Creates the session and checks it against the configuration.
fn load_session(spec: &ModelSpec, environment: &Environment) -> anyhow::Result<Session> {
    let started = Instant::now();
    let ort = |e: ort::Error<_>| anyhow::anyhow!("{e}");
    let mut builder = Session::builder(environment)
        .map_err(|e| anyhow::anyhow!("{e}"))?
        .with_intra_threads(spec.intra_op_threads)
        .map_err(ort)?
        .with_inter_threads(1)
        .map_err(ort)?
        .with_intra_op_spinning(spec.intra_op_spinning != Spinning::Never)
        .map_err(ort)?
        .with_config_entry(
            "session.force_spinning_stop",
            if spec.intra_op_spinning == Spinning::Run {
                "1"
            } else {
                "0"
            },
        )
        .map_err(ort)?;
    let session = builder
        .commit_from_file(&spec.onnx_path)
        .map_err(|e| anyhow::anyhow!("cannot load {}: {e}", spec.onnx_path.display()))?;
    check_signature(&session, spec)?;
    tracing::info!(
        model = %spec.name,
        file = %spec.onnx_path.display(),
        threads = spec.intra_op_threads,
        spinning = ?spec.intra_op_spinning,
        nice = spec.thread_nice,
        max_batch_size = spec.max_batch_size,
        ms = started.elapsed().as_millis(),
        "model loaded"
    );
    Ok(session)
}

/// The session's input and output must be what `config.toml` says.
fn check_signature(session: &Session, spec: &ModelSpec) -> anyhow::Result<()> {
    let config = spec.config_path.display();
    let model = spec.onnx_path.display();
    let names = |outlets: &[ort::value::Outlet]| {
        outlets
            .iter()
            .map(|o| o.name().to_owned())
            .collect::<Vec<_>>()
            .join(", ")
    };
    if session.inputs().len() != 1 {
        bail!(
            "{config}: {model} has {} inputs ({}); only single-input classifiers are supported",
            session.inputs().len(),
            names(session.inputs())
        );
    }
    let Some(input) = session
        .inputs()
        .iter()
        .find(|i| i.name() == spec.input_tensor)
    else {
        bail!(
            "{config}: field `input_tensor`: {model} has no input {:?} (its input: {})",
            spec.input_tensor,
            names(session.inputs())
        );
    };
    let Some(output) = session
        .outputs()
        .iter()
        .find(|o| o.name() == spec.output_tensor)
    else {
        bail!(
            "{config}: field `output_tensor`: {model} has no output {:?} (its outputs: {})",
            spec.output_tensor,
            names(session.outputs())
        );
    };
    let expected = spec.input_shape();
    match input.dtype() {
        ValueType::Tensor {
            ty: TensorElementType::Float32,
            shape,
            ..
        } if shape.len() == 4
            && shape
                .iter()
                .zip(expected)
                .skip(1)
                .all(|(&got, want)| got < 0 || got == want) => {}
        other => bail!(
            "{config}: fields `width`/`height`/`layout`: {model}'s input {:?} is {other:?}, \
             but the configuration describes float32 {expected:?}",
            spec.input_tensor
        ),
    }
    let classes = i64::try_from(spec.num_classes()).unwrap_or(i64::MAX);
    match output.dtype() {
        ValueType::Tensor {
            ty: TensorElementType::Float32,
            shape,
            ..
        } if shape.len() == 2 && (shape[1] < 0 || shape[1] == classes) => Ok(()),
        other => bail!(
            "{config}: fields `output_tensor`/`labels_file`: {model}'s output {:?} is {other:?}, \
             but there are {classes} labels (expected float32 [-1, {classes}])",
            spec.output_tensor
        ),
    }
}

/// Runs one batch: `input` holds `batch` images; returns `batch * classes` values.
fn infer(
    session: &mut Session,
    spec: &ModelSpec,
    input: &[f32],
    batch: usize,
) -> Result<Vec<f32>, String> {
    let [_, a, b, c] = spec.input_shape();
    let rows = i64::try_from(batch).map_err(|e| e.to_string())?;
    let tensor = TensorRef::from_array_view(([rows, a, b, c], input)).map_err(|e| e.to_string())?;
    let outputs = session
        .run(ort::inputs![spec.input_tensor.as_str() => tensor])
        .map_err(|e| format!("inference failed: {e}"))?;
    let value = outputs
        .get(&spec.output_tensor)
        .ok_or_else(|| format!("no output {:?}", spec.output_tensor))?;
    let (shape, data) = value
        .try_extract_tensor::<f32>()
        .map_err(|e| e.to_string())?;
    let classes = i64::try_from(spec.num_classes()).map_err(|e| e.to_string())?;
    if **shape != [rows, classes] {
        return Err(format!(
            "output {:?} has shape {shape}, expected [{rows}, {classes}]",
            spec.output_tensor
        ));
    }
    Ok(data.to_vec())
}

/// Makes the calling thread (and the threads it starts) as nice as the model says. Linux
/// niceness is per thread: the other models and the async runtime keep theirs.
fn set_nice(spec: &ModelSpec) {
    if spec.thread_nice == 0 {
        return;
    }
    let thread = rustix::thread::gettid();
    if let Err(e) = rustix::process::setpriority_process(Some(thread), spec.thread_nice) {
        tracing::warn!(model = %spec.name, nice = spec.thread_nice, error = %e, "cannot make the model's threads nicer");
    }
}

fn queue_wait(spec: &ModelSpec) -> metrics::Histogram {
    metrics::histogram!("tandem_model_queue_duration_seconds", "model" => spec.name.clone())
}

/// The model thread's loop: batches queued jobs and runs them until every sender is gone.
fn serve(
    jobs: &Receiver<Job>,
    max_batch: usize,
    max_delay: Duration,
    waited: &metrics::Histogram,
    mut engine: impl FnMut(&[f32], usize) -> Result<Vec<f32>, String>,
) {
    let mut next = None;
    loop {
        let first = match next.take() {
            Some(job) => job,
            None => match jobs.recv() {
                Ok(job) => job,
                Err(_) => return,
            },
        };
        let deadline = Instant::now() + max_delay;
        let mut batch = vec![first];
        let mut images = batch[0].images;
        while images < max_batch {
            let remaining = deadline.saturating_duration_since(Instant::now());
            let job = if remaining.is_zero() {
                jobs.try_recv().ok()
            } else {
                jobs.recv_timeout(remaining).ok()
            };
            let Some(job) = job else { break };
            if images + job.images > max_batch {
                next = Some(job);
                break;
            }
            images += job.images;
            batch.push(job);
        }
        let now = Instant::now();
        for job in &batch {
            waited.record(now.duration_since(job.queued).as_secs_f64());
        }
        run_batch(batch, images, &mut engine);
    }
}

fn run_batch(
    batch: Vec<Job>,
    images: usize,
    engine: &mut impl FnMut(&[f32], usize) -> Result<Vec<f32>, String>,
) {
    let result = {
        let input: Cow<'_, [f32]> = match batch.as_slice() {
            [only] => Cow::Borrowed(&only.input),
            jobs => Cow::Owned(jobs.iter().flat_map(|j| j.input.iter().copied()).collect()),
        };
        engine(&input, images)
    };
    tracing::trace!(requests = batch.len(), images, "ran a batch");
    match result {
        Ok(output) => {
            let per_image = output.len() / images.max(1);
            let mut rest = output.as_slice();
            for job in batch {
                let (mine, others) = rest.split_at((job.images * per_image).min(rest.len()));
                rest = others;
                let _ = job.reply.send(Ok(mine.to_vec()));
            }
        }
        Err(detail) => {
            for job in batch {
                let _ = job.reply.send(Err(ModelError::internal(&detail)));
            }
        }
    }
}

#[cfg(test)]
#[path = "runner_tests.rs"]
mod tests;
