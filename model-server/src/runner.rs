//! Each model's instances: OS threads, each owning an ONNX Runtime session, sharing the model's
//! bounded queue (Triton's instance group).
//!
//! An instance takes the first queued request, waits for the [`Scheduler`] to admit a batch of
//! its model, then takes whatever else is already queued (waiting at most `max_queue_delay_us`
//! for more) up to `max_batch_size` images, and runs them as one batch: Triton's dynamic
//! batching. Inference never runs on the async runtime's threads. Requests whose caller is gone
//! (a deadline passed) are dropped unrun. Creating and checking a session, and running a batch
//! on it, are in `runner/session.rs`.

use std::{
    borrow::Cow,
    sync::{
        Arc, Mutex, MutexGuard,
        mpsc::{Receiver, SyncSender, TrySendError, sync_channel},
    },
    time::{Duration, Instant},
};

use anyhow::Context;
use ort::environment::Environment;
use tokio::sync::{mpsc, oneshot};

use crate::{
    error::ModelError,
    repository::ModelSpec,
    scheduler::{Lane, Scheduler},
};
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

/// A model's queue, shared by its instances.
type SharedQueue = Arc<Mutex<Receiver<BatchItem>>>;

/// What one instance thread runs: the model, its share of the queue and its scheduler lane.
type InstanceWork = dyn Fn(&ModelSpec, &SharedQueue, &Lane) + Send + Sync;

/// A handle to a model's instances; dropping every handle stops their threads.
#[derive(Debug, Clone)]
pub struct ModelRunner {
    name: String,
    queue: SyncSender<BatchItem>,
    lane: Lane,
}

impl std::fmt::Debug for BatchItem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BatchItem")
            .field("images", &self.images)
            .finish()
    }
}

impl ModelRunner {
    /// Starts the model's instances, each creating its session; resolves once all are loaded.
    pub async fn start(
        spec: Arc<ModelSpec>,
        environment: Environment,
        scheduler: &Arc<Scheduler>,
    ) -> anyhow::Result<Self> {
        let instances = spec.instances;
        let (loaded_tx, mut loaded) = mpsc::channel(instances);
        let environment = Arc::new(Mutex::new(environment));
        let runner = Self::spawn(spec, scheduler, move |spec, queue, lane| {
            let session = {
                let environment = environment.lock().unwrap_or_else(|e| e.into_inner());
                load_session(spec, &environment)
            };
            let mut session = match session {
                Ok(session) => {
                    let _ = loaded_tx.blocking_send(Ok(()));
                    session
                }
                Err(e) => {
                    let _ = loaded_tx.blocking_send(Err(e));
                    return;
                }
            };
            let duration = metrics::histogram!("tandem_model_inference_duration_seconds", "model" => spec.name.clone());
            let batch_size =
                metrics::histogram!("tandem_model_batch_size", "model" => spec.name.clone());
            let failures = metrics::counter!("tandem_model_inference_failures_total", "model" => spec.name.clone());
            serve_model(queue, lane, spec, |input, batch| {
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
        for _ in 0..instances {
            loaded
                .recv()
                .await
                .context("a model instance stopped while loading")??;
        }
        Ok(runner)
    }

    /// Starts the instances of a `backend = "null"` model: batched and scheduled like any
    /// model, but every image gets all-zero logits at once, without ONNX Runtime (see `bench/`).
    pub fn start_null(spec: Arc<ModelSpec>, scheduler: &Arc<Scheduler>) -> anyhow::Result<Self> {
        let classes = spec.num_classes();
        Self::spawn(spec, scheduler, move |spec, queue, lane| {
            serve_model(queue, lane, spec, |_, batch| Ok(vec![0.0; batch * classes]));
        })
    }

    /// Starts the model's `instances` threads, as nice as the model says, each running `work`
    /// on the model's one queue.
    fn spawn(
        spec: Arc<ModelSpec>,
        scheduler: &Arc<Scheduler>,
        work: impl Fn(&ModelSpec, &SharedQueue, &Lane) + Send + Sync + 'static,
    ) -> anyhow::Result<Self> {
        let (queue, queued) = sync_channel(QUEUE_CAPACITY);
        let queued: SharedQueue = Arc::new(Mutex::new(queued));
        let work: Arc<InstanceWork> = Arc::new(work);
        let name = spec.name.clone();
        let lane = scheduler.lane(spec.priority, spec.intra_op_threads);
        // At 0 before the model can be ready, so that a scrape can show it ran nothing.
        metrics::counter!(INFERENCES_METRIC, "model" => name.clone()).increment(0);
        for instance in 0..spec.instances {
            let (spec, queued, work, lane) =
                (spec.clone(), queued.clone(), work.clone(), lane.clone());
            std::thread::Builder::new()
                .name(format!("model-{name}-{instance}"))
                .spawn(move || {
                    // Before any session exists: ONNX Runtime's own threads inherit it.
                    set_nice(&spec);
                    work(&spec, &queued, &lane);
                    tracing::debug!(model = %spec.name, instance, "model instance stopped");
                })
                .context("cannot start a model thread")?;
        }
        Ok(Self { name, queue, lane })
    }

    /// Queues `images` prepared images and waits for their output (`images * classes` values).
    pub async fn infer(&self, input: Vec<f32>, images: usize) -> Result<Vec<f32>, ModelError> {
        let (reply, output) = oneshot::channel();
        // Counted before it can be taken, so that a less urgent model never misses it.
        self.lane.waiting(1);
        self.queue
            .try_send(BatchItem {
                input,
                images,
                queued: Instant::now(),
                reply,
            })
            .map_err(|e| {
                self.lane.gone(1);
                match e {
                    TrySendError::Full(_) => ModelError::Overloaded(self.name.clone()),
                    TrySendError::Disconnected(_) => {
                        ModelError::internal("the model thread stopped")
                    }
                }
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
    queue: &SharedQueue,
    lane: &Lane,
    spec: &ModelSpec,
    mut engine: impl FnMut(&[f32], usize) -> Result<Vec<f32>, String>,
) {
    let waited =
        metrics::histogram!("tandem_model_queue_duration_seconds", "model" => spec.name.clone());
    let inferred = metrics::counter!(INFERENCES_METRIC, "model" => spec.name.clone());
    let batching = Batching {
        max_images: spec.max_batch_size,
        max_delay: spec.max_queue_delay,
    };
    serve(queue, lane, batching, &waited, |input, images| {
        inferred.increment(images as u64);
        engine(input, images)
    });
}

/// How an instance fills a batch.
#[derive(Debug, Clone, Copy)]
struct Batching {
    max_images: usize,
    max_delay: Duration,
}

/// An instance's loop: takes a request, waits for the scheduler, batches what else is queued
/// and runs it, until every sender is gone.
fn serve(
    queue: &SharedQueue,
    lane: &Lane,
    batching: Batching,
    waited: &metrics::Histogram,
    mut engine: impl FnMut(&[f32], usize) -> Result<Vec<f32>, String>,
) {
    let mut next = None;
    loop {
        let first = match next.take() {
            Some(item) => item,
            None => match lock(queue).recv() {
                Ok(item) => item,
                Err(_) => return,
            },
        };
        if first.reply.is_closed() {
            lane.gone(1);
            continue;
        }
        let running = lane.admit();
        // Another instance holding the queue is waiting on it: nothing more is queued.
        let filled = match queue.try_lock() {
            Ok(queued) => fill_batch(first, &queued, batching),
            Err(_) => Filled::alone(first),
        };
        running.joined(filled.taken - usize::from(filled.left_over.is_some()));
        next = filled.left_over;
        let now = Instant::now();
        for item in &filled.batch {
            waited.record(now.duration_since(item.queued).as_secs_f64());
        }
        run_batch(filled.batch, filled.images, &mut engine);
        drop(running);
    }
}

fn lock(queue: &SharedQueue) -> MutexGuard<'_, Receiver<BatchItem>> {
    queue.lock().unwrap_or_else(|e| e.into_inner())
}

/// A batch and what filling it took from the queue.
#[derive(Debug)]
struct Filled {
    batch: Vec<BatchItem>,
    images: usize,
    /// The item that came but did not fit: it starts the next batch.
    left_over: Option<BatchItem>,
    /// Items taken from the queue besides the first (dropped ones and `left_over` included).
    taken: usize,
}

impl Filled {
    fn alone(first: BatchItem) -> Self {
        Self {
            images: first.images,
            batch: vec![first],
            left_over: None,
            taken: 0,
        }
    }
}

/// A batch starting with `first`: whatever else is queued, waiting at most `max_delay` for
/// more, up to `max_images` images. Requests whose caller is gone are dropped.
fn fill_batch(first: BatchItem, queued: &Receiver<BatchItem>, batching: Batching) -> Filled {
    let deadline = Instant::now() + batching.max_delay;
    let mut filled = Filled::alone(first);
    while filled.images < batching.max_images {
        let remaining = deadline.saturating_duration_since(Instant::now());
        let item = if remaining.is_zero() {
            queued.try_recv().ok()
        } else {
            queued.recv_timeout(remaining).ok()
        };
        let Some(item) = item else { break };
        filled.taken += 1;
        if item.reply.is_closed() {
            continue;
        }
        if filled.images + item.images > batching.max_images {
            filled.left_over = Some(item);
            break;
        }
        filled.images += item.images;
        filled.batch.push(item);
    }
    filled
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
            // One copy of each item's tensor (a `flat_map` collect pushed value by value: 2 %
            // of the model server's CPU at 16 clients, measured with perf).
            items => {
                let mut all = Vec::with_capacity(items.iter().map(|i| i.input.len()).sum());
                for item in items {
                    all.extend_from_slice(&item.input);
                }
                Cow::Owned(all)
            }
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
