//! Running one slow job: the per-message state machine.
//!
//! Order matters for "nothing lost, nothing twice": the result is written to the KV bucket
//! before the message is acknowledged (a crash in between redelivers a job whose record is
//! already final, which is then acknowledged without running again), and a failure is recorded
//! before the message is terminated (a terminated work-queue message is gone).

use std::sync::{
    Arc,
    atomic::{AtomicU64, AtomicUsize, Ordering},
};

use async_nats::jetstream::{AckKind, Message, object_store::ObjectStore};
use bytes::Bytes;
use tandem_core::{
    job::{JobId, JobRecord, JobStatus, Prediction},
    model_client::{ClassifyError, ModelClient},
    result_cache::ResultCache,
    slow_job::SlowJob,
    store::{JobStore, Versioned},
    telemetry,
};
use tracing::Instrument as _;

use crate::{cached::Answer, config::WorkerConfig};
pub(crate) use crate::{
    delivery::{ack, keep_alive, patiently},
    image::{forget_image, load_image},
};

/// What every job task needs.
pub struct JobContext {
    pub config: WorkerConfig,
    pub model: ModelClient,
    pub store: JobStore,
    pub images: ObjectStore,
    /// Where webhook events are emitted (`tandem_core::webhook`).
    pub js: async_nats::jetstream::Context,
    /// The result cache, when `TANDEM_RESULT_CACHE_TTL_SECS` turns it on.
    pub cache: Option<ResultCache>,
    /// Escalated jobs running now: audits wait while there are any.
    pub running: AtomicUsize,
    /// When the worker started, and when (ms after) it last re-made its NATS connection.
    pub started: std::time::Instant,
    pub last_reconnect_ms: AtomicU64,
}

impl std::fmt::Debug for JobContext {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JobContext")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

/// How a delivery ended (for logs and tests).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Succeeded,
    Failed,
    /// Already final (a redelivery, or cancelled): acknowledged without running.
    Skipped,
    /// Will be redelivered after a delay.
    Retrying,
}

impl Outcome {
    /// The `outcome` label of `tandem_worker_jobs_total`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Succeeded => "succeeded",
            Self::Failed => "failed",
            Self::Skipped => "skipped",
            Self::Retrying => "retrying",
        }
    }
}

/// Processes one delivered message to the end, and counts how it ended. The work is a
/// consumer span in the trace of the request that published the job (its `traceparent`).
pub async fn process(ctx: Arc<JobContext>, msg: Message) -> Outcome {
    let delivered = msg.info().map(|i| i.delivered).unwrap_or(1);
    let span = tracing::info_span!(
        "jobs.process",
        otel.kind = "consumer",
        messaging.system = "nats",
        messaging.destination.name = %msg.subject,
        job_id = tracing::field::Empty,
        delivered,
    );
    telemetry::set_remote_parent(&span, |name| {
        msg.headers
            .as_ref()
            .and_then(|h| h.get(name))
            .map(|v| v.as_str())
    });
    if delivered > 1 {
        metrics::counter!("tandem_worker_redeliveries_total").increment(1);
    }
    ctx.running.fetch_add(1, Ordering::Relaxed);
    // Boxed: a delivery's future holds its records and the cache's calls (kilobytes).
    let outcome = Box::pin(run_delivery(&ctx, &msg, delivered).instrument(span)).await;
    ctx.running.fetch_sub(1, Ordering::Relaxed);
    metrics::counter!("tandem_worker_jobs_total", "outcome" => outcome.as_str()).increment(1);
    if outcome == Outcome::Retrying {
        metrics::counter!("tandem_worker_retries_total").increment(1);
    }
    outcome
}

async fn run_delivery(ctx: &JobContext, msg: &Message, delivered: i64) -> Outcome {
    let job = match SlowJob::from_message(msg.headers.as_ref(), msg.payload.clone()) {
        Ok(job) => job,
        Err(e) => return refuse_invalid(ctx, msg, &e).await,
    };
    tracing::Span::current().record("job_id", tracing::field::display(job.id));

    // Marking the job `running` and the model call overlap, so the record's round trips are
    // not on the way to the result; a job that must not run (final already, cancelled) drops
    // the call.
    let inference = async {
        match load_image(ctx, &job).await {
            Ok(image) => crate::cached::slow_answer(ctx, msg, &job, image).await,
            Err(e) => Err(e),
        }
    };
    let mut inference = std::pin::pin!(inference);
    let mut marking = std::pin::pin!(patiently(ctx, msg, || mark_running(ctx, &job)));
    let mut early = None;
    let runs = tokio::select! {
        runs = &mut marking => runs,
        result = &mut inference => {
            early = Some(result);
            marking.await
        }
    };
    let marked = match runs {
        Ok(Marked::Running(marked)) => marked,
        Ok(Marked::Settled(settled)) => {
            // Final already (a redelivery, or cancelled): its webhook events may not have been
            // emitted yet (the writer died first); emitted twice, they are stored once.
            if !tandem_core::webhook::emit_logged(&ctx.js, &settled).await {
                ack(msg, AckKind::Nak(Some(ctx.config.retry_delay(delivered)))).await;
                return Outcome::Retrying;
            }
            ack(msg, AckKind::Ack).await;
            forget_image(ctx, &job).await;
            return Outcome::Skipped;
        }
        Err(e) => {
            tracing::warn!(error = %e, "job store unavailable; retrying later");
            ack(msg, AckKind::Nak(Some(ctx.config.retry_delay(delivered)))).await;
            return Outcome::Retrying;
        }
    };
    let result = match early {
        Some(result) => result,
        None => inference.await,
    };
    match result {
        // Boxed: the write holds the marked version and the store's retry loop (kilobytes).
        Ok(prediction) => Box::pin(finish(ctx, msg, &job, prediction, delivered, marked)).await,
        Err(e) => on_model_error(ctx, msg, &job, &e, delivered).await,
    }
}

/// A message that is not a job: fail its record if it names one, and drop the message.
async fn refuse_invalid(
    ctx: &JobContext,
    msg: &Message,
    error: &tandem_core::slow_job::SlowJobError,
) -> Outcome {
    tracing::warn!(%error, "terminating a message that is not a valid job");
    let id = msg
        .headers
        .as_ref()
        .and_then(|h| h.get(tandem_core::nats::headers::JOB_ID))
        .and_then(|v| v.as_str().parse::<JobId>().ok());
    if let Some(id) = id {
        let _ = fail(ctx, id, &format!("invalid job message: {error}")).await;
    }
    ack(msg, AckKind::Term).await;
    Outcome::Failed
}

/// The slow model failed: retry later while the failure is transient and deliveries remain,
/// else end the job `failed`.
async fn on_model_error(
    ctx: &JobContext,
    msg: &Message,
    job: &SlowJob,
    error: &ClassifyError,
    delivered: i64,
) -> Outcome {
    if error.is_transient() && delivered < ctx.config.nats.max_deliver {
        let delay = ctx.config.retry_delay(delivered);
        tracing::warn!(%error, retry_in = ?delay, "transient failure; will retry");
        let note = format!("attempt {delivered} failed, retrying in {delay:?}: {error}");
        let _ = ctx
            .store
            .update(job.id, |r| {
                let back = r.advance(JobStatus::Queued);
                if back {
                    r.error = Some(note.clone());
                }
                back
            })
            .await;
        ack(msg, AckKind::Nak(Some(delay))).await;
        return Outcome::Retrying;
    }
    let reason = if error.is_transient() {
        format!("gave up after {delivered} attempts: {error}")
    } else {
        error.to_string()
    };
    tracing::warn!(%reason, "job failed");
    if !fail(ctx, job.id, &reason).await && delivered < ctx.config.nats.max_deliver {
        // Not recorded (or its webhook events not emitted): the redelivery finishes it.
        ack(msg, AckKind::Nak(Some(ctx.config.retry_delay(delivered)))).await;
        return Outcome::Retrying;
    }
    ack(msg, AckKind::Term).await;
    forget_image(ctx, job).await;
    Outcome::Failed
}

/// What marking a job `running` found.
enum Marked {
    /// Marked: the record as stored, whose revision the result is written from.
    Running(Versioned),
    /// It must not run: final already, cancelled, or past its deadline (now `expired`).
    Settled(JobRecord),
}

/// Marks the job `running` and counts the attempt. A job without a record (published by
/// something other than the gateway, or expired) gets one, so that its outcome is visible.
///
/// This is the one read of the job's record a worker makes: the record's revision is not in the
/// message (the gateway creates the record while the job is being published), and the read is
/// what sees a cancel or a final state before the model runs.
async fn mark_running(
    ctx: &JobContext,
    job: &SlowJob,
) -> Result<Marked, tandem_core::store::StoreError> {
    let stored = ctx
        .store
        .update_or_create(
            job.id,
            || {
                let mut record = JobRecord::queued(job.id, job.submitted_at);
                record.deadline_at = job.deadline_at;
                record
            },
            |r| {
                if r.past_deadline(time::OffsetDateTime::now_utc()) {
                    return r.expire();
                }
                let runs = r.advance(JobStatus::Running);
                if runs {
                    r.attempts += 1;
                }
                runs
            },
        )
        .await?;
    Ok(if stored.record.status == JobStatus::Running {
        Marked::Running(stored)
    } else {
        Marked::Settled(stored.record)
    })
}

/// Calls the slow model, telling JetStream the job is alive while it runs.
pub(crate) async fn run_model(
    ctx: &JobContext,
    msg: &Message,
    image: Bytes,
) -> Result<Prediction, ClassifyError> {
    let call = ctx.model.classify(
        &ctx.config.slow_model,
        image,
        ctx.config.top_k,
        Default::default(),
    );
    keep_alive(ctx, msg, call).await
}

/// Stores the slow answer (creating the record if it vanished while the model ran: a result
/// stored nowhere must not be acknowledged), then acknowledges the message.
///
/// The write is a compare-and-set on `marked`, the version this worker wrote: no read first.
/// Another writer since (the gateway's fast answer, a cancel, a deadline) makes it fail; the
/// store then re-reads and applies the result to that version, or keeps a final state.
async fn finish(
    ctx: &JobContext,
    msg: &Message,
    job: &SlowJob,
    answer: Answer,
    delivered: i64,
    marked: Versioned,
) -> Outcome {
    let Answer { prediction, cached } = answer;
    // Only the first try starts from `marked`: a retried write may have landed already.
    let mut known = Some(marked);
    let written = patiently(ctx, msg, || {
        ctx.store.update_or_create_from(
            job.id,
            known.take(),
            || {
                tracing::warn!("job record was gone; result stored as a new record");
                let mut record = JobRecord::queued(job.id, job.submitted_at);
                record.attempts = 1;
                record
            },
            |r| {
                let done = r.advance(JobStatus::Succeeded);
                if done {
                    r.slow = Some(prediction.clone());
                    r.cached = cached;
                    r.error = None;
                }
                done
            },
        )
    })
    .await;
    match written {
        Ok(stored) if !tandem_core::webhook::emit_logged(&ctx.js, &stored.record).await => {
            // The result is stored; its webhook events are not: the redelivery emits them.
            ack(msg, AckKind::Nak(Some(ctx.config.retry_delay(delivered)))).await;
            Outcome::Retrying
        }
        Ok(stored) if stored.record.status != JobStatus::Succeeded => {
            // Cancelled (or ended) while the model ran: keep that outcome.
            ack(msg, AckKind::Ack).await;
            forget_image(ctx, job).await;
            tracing::info!(status = stored.record.status.as_str(), "result discarded");
            Outcome::Skipped
        }
        Ok(stored) => {
            record_success(job, &prediction, &stored.record);
            if !cached {
                crate::cached::remember(ctx, job, &stored.record).await;
            }
            // The result is stored (JetStream acknowledged its write), so the ack need not wait
            // for the server's confirmation (a round trip, and a subscription per job): an ack
            // that is lost only redelivers a job whose record is final, which the next worker
            // acknowledges without running it again (`Outcome::Skipped`).
            ack(msg, AckKind::Ack).await;
            forget_image(ctx, job).await;
            tracing::info!(label = %prediction.label, ms = prediction.inference_ms, "job succeeded");
            Outcome::Succeeded
        }
        Err(e) => {
            tracing::warn!(error = %e, "result not stored; retrying the job");
            ack(msg, AckKind::Nak(Some(ctx.config.retry_delay(delivered)))).await;
            Outcome::Retrying
        }
    }
}

/// Submit-to-result latency, and whether the fast model had already said the same.
fn record_success(job: &SlowJob, prediction: &Prediction, record: &JobRecord) {
    let latency = time::OffsetDateTime::now_utc() - job.submitted_at;
    metrics::histogram!("tandem_worker_job_latency_seconds")
        .record(latency.as_seconds_f64().max(0.0));
    // Without the fast answer yet, the gateway counts the agreement when it adds it.
    if let Some(fast) = &record.fast {
        tandem_core::metrics::record_agreement(fast, prediction);
    }
}

/// Records a final failure (unless the job is already final) and emits the webhook events
/// that makes due; `false` when either did not happen (the caller then leaves the message to
/// be redelivered, where possible).
pub async fn fail(ctx: &JobContext, id: JobId, reason: &str) -> bool {
    match ctx.store.fail(id, reason).await {
        Ok(Some(stored)) => tandem_core::webhook::emit_logged(&ctx.js, &stored.record).await,
        Ok(None) => true,
        Err(e) => {
            tracing::warn!(error = %e, job_id = %id, "could not record failure");
            false
        }
    }
}
