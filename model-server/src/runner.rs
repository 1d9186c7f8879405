//! One OS thread per model, owning its ONNX Runtime session, fed by a bounded channel.
//!
//! The thread takes the first queued request, then whatever else is already queued (waiting at
//! most `max_queue_delay_us` for more) up to `max_batch_size` images, and runs them as one
//! batch: Triton's dynamic batching. Inference never runs on the async runtime's threads.
//! Creating and checking the session, and running a batch on it, are in `runner/session.rs`.

use std::{
    borrow::Cow,
    sync::{
        Arc,
        mpsc::{Receiver, SyncSender, TrySendError, sync_channel},
    },
    time::{Duration, Instant},
};

use anyhow::Context;
use ort::environment::Environment;
use tokio::sync::oneshot;

use crate::{error::ModelError, repository::ModelSpec};
use session::{infer, load_session};

mod session;

/// Requests that may wait in a model's queue before new ones are refused.
const QUEUE_CAPACITY: usize = 256;

/// The counter of images each model has run, by `model` (see [`serve_model`]).
pub const INFERENCES_METRIC: &str = "tandem_model_inferences_total";

/// One queued request, an item of the batch it will run in: `images` images,
/// `images * image_len` values.
struct BatchItem {
    input: Vec<f32>,
    images: usize,
    queued: Instant,
    reply: oneshot::Sender<Result<Vec<f32>, ModelError>>,
}

/// A handle to a model's thread; dropping every handle stops the thread.
#[derive(Debug, Clone)]
pub struct ModelRunner {
    name: String,
    queue: SyncSender<BatchItem>,
}

impl std::fmt::Debug for BatchItem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BatchItem")
            .field("images", &self.images)
            .finish()
    }
}

impl ModelRunner {
    /// Starts the model's thread, which creates the session; resolves once it is loaded.
    pub async fn start(spec: Arc<ModelSpec>, environment: Environment) -> anyhow::Result<Self> {
        let (loaded_tx, loaded) = oneshot::channel();
        let runner = Self::spawn(spec, move |spec, queued| {
            let mut session = match load_session(spec, &environment) {
                Ok(session) => {
                    let _ = loaded_tx.send(Ok(()));
                    session
                }
                Err(e) => {
                    let _ = loaded_tx.send(Err(e));
                    return;
                }
            };
            let duration = metrics::histogram!("tandem_model_inference_duration_seconds", "model" => spec.name.clone());
            let batch_size =
                metrics::histogram!("tandem_model_batch_size", "model" => spec.name.clone());
            let failures = metrics::counter!("tandem_model_inference_failures_total", "model" => spec.name.clone());
            serve_model(queued, spec, |input, batch| {
                let started = Instant::now();
                let result = infer(&mut session, spec, input, batch);
                duration.record(started.elapsed().as_secs_f64());
                batch_size.record(batch as f64);
                if result.is_err() {
                    failures.increment(1);
                }
                result
            });
        })?;
        loaded
            .await
            .context("the model thread stopped while loading")??;
        Ok(runner)
    }

    /// Starts the thread of a `backend = "null"` model: batched like any model, but every image
    /// gets all-zero logits at once, without ONNX Runtime (see `bench/`).
    pub fn start_null(spec: Arc<ModelSpec>) -> anyhow::Result<Self> {
        let classes = spec.num_classes();
        Self::spawn(spec, move |spec, queued| {
            serve_model(queued, spec, |_, batch| Ok(vec![0.0; batch * classes]));
        })
    }

    /// Starts the model's thread, as nice as the model says, running `work` on its queue.
    fn spawn(
        spec: Arc<ModelSpec>,
        work: impl FnOnce(&ModelSpec, &Receiver<BatchItem>) + Send + 'static,
    ) -> anyhow::Result<Self> {
        let (queue, queued) = sync_channel(QUEUE_CAPACITY);
        let name = spec.name.clone();
        // At 0 before the model can be ready, so that a scrape can show it ran nothing.
        metrics::counter!(INFERENCES_METRIC, "model" => name.clone()).increment(0);
        std::thread::Builder::new()
            .name(format!("model-{name}"))
            .spawn(move || {
                // Before any session exists: ONNX Runtime's own threads inherit it.
                set_nice(&spec);
                work(&spec, &queued);
                tracing::debug!(model = %spec.name, "model thread stopped");
            })
            .context("cannot start a model thread")?;
        Ok(Self { name, queue })
    }

    /// Queues `images` prepared images and waits for their output (`images * classes` values).
    pub async fn infer(&self, input: Vec<f32>, images: usize) -> Result<Vec<f32>, ModelError> {
        let (reply, output) = oneshot::channel();
        self.queue
            .try_send(BatchItem {
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

/// [`serve`] with the model's batching settings, counting every image run (failed batches
/// too) in `tandem_model_inferences_total{model}`.
fn serve_model(
    queued: &Receiver<BatchItem>,
    spec: &ModelSpec,
    mut engine: impl FnMut(&[f32], usize) -> Result<Vec<f32>, String>,
) {
    let waited =
        metrics::histogram!("tandem_model_queue_duration_seconds", "model" => spec.name.clone());
    let inferred = metrics::counter!(INFERENCES_METRIC, "model" => spec.name.clone());
    serve(
        queued,
        spec.max_batch_size,
        spec.max_queue_delay,
        &waited,
        |input, images| {
            inferred.increment(images as u64);
            engine(input, images)
        },
    );
}

/// The model thread's loop: batches queued items and runs them until every sender is gone.
fn serve(
    queued: &Receiver<BatchItem>,
    max_batch: usize,
    max_delay: Duration,
    waited: &metrics::Histogram,
    mut engine: impl FnMut(&[f32], usize) -> Result<Vec<f32>, String>,
) {
    let mut next = None;
    loop {
        let first = match next.take() {
            Some(item) => item,
            None => match queued.recv() {
                Ok(item) => item,
                Err(_) => return,
            },
        };
        let (batch, images, left_over) = fill_batch(first, queued, max_batch, max_delay);
        next = left_over;
        let now = Instant::now();
        for item in &batch {
            waited.record(now.duration_since(item.queued).as_secs_f64());
        }
        run_batch(batch, images, &mut engine);
    }
}

/// A batch starting with `first`: whatever else is queued, waiting at most `max_delay` for
/// more, up to `max_batch` images. Returns the batch, its image count, and the item that came
/// but did not fit (it starts the next batch).
fn fill_batch(
    first: BatchItem,
    queued: &Receiver<BatchItem>,
    max_batch: usize,
    max_delay: Duration,
) -> (Vec<BatchItem>, usize, Option<BatchItem>) {
    let deadline = Instant::now() + max_delay;
    let mut images = first.images;
    let mut batch = vec![first];
    while images < max_batch {
        let remaining = deadline.saturating_duration_since(Instant::now());
        let item = if remaining.is_zero() {
            queued.try_recv().ok()
        } else {
            queued.recv_timeout(remaining).ok()
        };
        let Some(item) = item else { break };
        if images + item.images > max_batch {
            return (batch, images, Some(item));
        }
        images += item.images;
        batch.push(item);
    }
    (batch, images, None)
}

/// Runs one batch and sends each item its share of the output (or the error).
fn run_batch(
    batch: Vec<BatchItem>,
    images: usize,
    engine: &mut impl FnMut(&[f32], usize) -> Result<Vec<f32>, String>,
) {
    let result = {
        let input: Cow<'_, [f32]> = match batch.as_slice() {
            [only] => Cow::Borrowed(&only.input),
            items => Cow::Owned(items.iter().flat_map(|i| i.input.iter().copied()).collect()),
        };
        engine(&input, images)
    };
    tracing::trace!(requests = batch.len(), images, "ran a batch");
    match result {
        Ok(output) => {
            let per_image = output.len() / images.max(1);
            let mut rest = output.as_slice();
            for item in batch {
                let (mine, others) = rest.split_at((item.images * per_image).min(rest.len()));
                rest = others;
                let _ = item.reply.send(Ok(mine.to_vec()));
            }
        }
        Err(detail) => {
            for item in batch {
                let _ = item.reply.send(Err(ModelError::internal(&detail)));
            }
        }
    }
}

#[cfg(test)]
#[path = "runner_tests.rs"]
mod tests;
