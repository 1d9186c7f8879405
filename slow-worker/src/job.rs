//! Running one slow job: the per-message state machine.
//!
//! Order matters for "nothing lost, nothing twice": the result is written to the KV bucket
//! before the message is acknowledged (a crash in between redelivers a job whose record is
//! already final, which is then acknowledged without running again), and a failure is recorded
//! before the message is terminated (a terminated work-queue message is gone).

use std::{sync::Arc, time::Duration};

use async_nats::jetstream::{AckKind, Message, object_store::ObjectStore};
use bytes::Bytes;
use tandem_core::{
    job::{JobId, JobRecord, JobStatus, Prediction},
    model_client::{ClassifyError, ModelClient},
    slow_job::{ImageRef, SlowJob},
    store::JobStore,
    telemetry,
};
use tokio::io::AsyncReadExt as _;
use tracing::Instrument as _;

use crate::config::WorkerConfig;

/// What every job task needs.
pub struct JobContext {
    pub config: WorkerConfig,
    pub model: ModelClient,
    pub store: JobStore,
    pub images: ObjectStore,
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
    let outcome = run_delivery(&ctx, &msg, delivered).instrument(span).await;
    metrics::counter!("tandem_worker_jobs_total", "outcome" => outcome.as_str()).increment(1);
    if outcome == Outcome::Retrying {
        metrics::counter!("tandem_worker_retries_total").increment(1);
    }
    outcome
}

async fn run_delivery(ctx: &JobContext, msg: &Message, delivered: i64) -> Outcome {
    let job = match SlowJob::from_message(msg.headers.as_ref(), msg.payload.clone()) {
        Ok(job) => job,
        Err(e) => {
            tracing::warn!(error = %e, "terminating a message that is not a valid job");
            let id = msg
                .headers
                .as_ref()
                .and_then(|h| h.get(tandem_core::nats::headers::JOB_ID))
                .and_then(|v| v.as_str().parse::<JobId>().ok());
            if let Some(id) = id {
                fail(ctx, id, &format!("invalid job message: {e}")).await;
            }
            ack(msg, AckKind::Term).await;
            return Outcome::Failed;
        }
    };
    tracing::Span::current().record("job_id", tracing::field::display(job.id));

    // Marking the job `running` and the model call overlap, so the record's round trips are
    // not on the way to the result; a job that must not run (final already, cancelled) drops
    // the call.
    let inference = async {
        match load_image(ctx, &job).await {
            Ok(image) => run_model(ctx, msg, image).await,
            Err(e) => Err(e),
        }
    };
    let mut inference = std::pin::pin!(inference);
    let mut marking = std::pin::pin!(start(ctx, &job));
    let mut early = None;
    let started = tokio::select! {
        started = &mut marking => started,
        result = &mut inference => {
            early = Some(result);
            marking.await
        }
    };
    match started {
        Ok(true) => {}
        Ok(false) => {
            ack(msg, AckKind::Ack).await;
            forget_image(ctx, &job).await;
            return Outcome::Skipped;
        }
        Err(e) => {
            tracing::warn!(error = %e, "job store unavailable; retrying later");
            ack(msg, AckKind::Nak(Some(ctx.config.retry_delay(delivered)))).await;
            return Outcome::Retrying;
        }
    }
    let result = match early {
        Some(result) => result,
        None => inference.await,
    };
    match result {
        Ok(prediction) => finish(ctx, msg, &job, prediction, delivered).await,
        Err(e) if e.is_transient() && delivered < ctx.config.nats.max_deliver => {
            let delay = ctx.config.retry_delay(delivered);
            tracing::warn!(error = %e, retry_in = ?delay, "transient failure; will retry");
            let note = format!("attempt {delivered} failed, retrying in {delay:?}: {e}");
            let _ = ctx
                .store
                .update(job.id, |r| {
                    if r.status.is_terminal() {
                        return false;
                    }
                    r.error = Some(note.clone());
                    r.transition(JobStatus::Queued);
                    true
                })
                .await;
            ack(msg, AckKind::Nak(Some(delay))).await;
            Outcome::Retrying
        }
        Err(e) => {
            let reason = if e.is_transient() {
                format!("gave up after {delivered} attempts: {e}")
            } else {
                e.to_string()
            };
            tracing::warn!(%reason, "job failed");
            fail(ctx, job.id, &reason).await;
            ack(msg, AckKind::Term).await;
            forget_image(ctx, &job).await;
            Outcome::Failed
        }
    }
}

/// Marks the job `running`; `Ok(false)` when it must not run (final already, or cancelled).
async fn start(ctx: &JobContext, job: &SlowJob) -> Result<bool, tandem_core::store::StoreError> {
    let mark_running = |r: &mut JobRecord| {
        if r.status.is_terminal() {
            return false;
        }
        r.attempts += 1;
        r.transition(JobStatus::Running);
        true
    };
    let stored = match ctx.store.update(job.id, mark_running).await? {
        Some(stored) => stored,
        None => {
            // No record: published by something other than the gateway, or expired. Create it
            // so that the outcome is visible.
            let mut record = JobRecord::queued(job.id, job.submitted_at);
            mark_running(&mut record);
            ctx.store.create(&record).await?;
            return Ok(true);
        }
    };
    Ok(stored.record.status == JobStatus::Running)
}

async fn load_image(ctx: &JobContext, job: &SlowJob) -> Result<Bytes, ClassifyError> {
    match &job.image {
        ImageRef::Inline(bytes) => Ok(bytes.clone()),
        ImageRef::Object(name) => {
            let mut object = ctx.images.get(name).await.map_err(|e| {
                if e.kind() == async_nats::jetstream::object_store::GetErrorKind::NotFound {
                    ClassifyError::Rejected(format!(
                        "the job's image {name:?} is gone from the store"
                    ))
                } else {
                    ClassifyError::Unavailable(format!("image store: {e}"))
                }
            })?;
            let mut buffer = Vec::new();
            object
                .read_to_end(&mut buffer)
                .await
                .map_err(|e| ClassifyError::Unavailable(format!("image store: {e}")))?;
            Ok(Bytes::from(buffer))
        }
    }
}

/// Calls the slow model, telling JetStream the job is alive while it runs.
async fn run_model(
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
    tokio::pin!(call);
    let period = (ctx.config.nats.ack_wait / 3).max(Duration::from_millis(100));
    let mut ticker = tokio::time::interval_at(tokio::time::Instant::now() + period, period);
    loop {
        tokio::select! {
            result = &mut call => return result,
            _ = ticker.tick() => ack(msg, AckKind::Progress).await,
        }
    }
}

async fn finish(
    ctx: &JobContext,
    msg: &Message,
    job: &SlowJob,
    prediction: Prediction,
    delivered: i64,
) -> Outcome {
    let written = ctx
        .store
        .update(job.id, |r| {
            if r.status.is_terminal() {
                return false;
            }
            r.slow = Some(prediction.clone());
            r.error = None;
            r.transition(JobStatus::Succeeded);
            true
        })
        .await;
    match written {
        Ok(Some(stored)) if stored.record.status != JobStatus::Succeeded => {
            // Cancelled (or ended) while the model ran: keep that outcome.
            ack(msg, AckKind::Ack).await;
            forget_image(ctx, job).await;
            tracing::info!(status = stored.record.status.as_str(), "result discarded");
            Outcome::Skipped
        }
        Ok(None) => {
            // The record vanished while the model ran (expired, or its bucket re-created):
            // write the result as a new record rather than acknowledge a result stored nowhere.
            let mut record = JobRecord::queued(job.id, job.submitted_at);
            record.attempts = 1;
            record.slow = Some(prediction.clone());
            record.transition(JobStatus::Succeeded);
            match ctx.store.create(&record).await {
                Ok(_) => {
                    tracing::warn!("job record was gone; result stored as a new record");
                    Box::pin(finish(ctx, msg, job, prediction, delivered)).await
                }
                Err(e) => {
                    tracing::warn!(error = %e, "result not stored; retrying the job");
                    ack(msg, AckKind::Nak(Some(ctx.config.retry_delay(delivered)))).await;
                    Outcome::Retrying
                }
            }
        }
        Ok(Some(stored)) => {
            record_success(job, &prediction, Some(&stored.record));
            // Double ack: the server confirms, so a lost ack cannot look like success.
            if let Err(e) = msg.double_ack().await {
                tracing::warn!(error = %e, "ack not confirmed; a redelivery will be skipped");
            }
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
fn record_success(job: &SlowJob, prediction: &Prediction, record: Option<&JobRecord>) {
    let latency = time::OffsetDateTime::now_utc() - job.submitted_at;
    metrics::histogram!("tandem_worker_job_latency_seconds")
        .record(latency.as_seconds_f64().max(0.0));
    // Without the fast answer yet, the gateway counts the agreement when it adds it.
    if let Some(fast) = record.and_then(|r| r.fast.as_ref()) {
        tandem_core::metrics::record_agreement(fast, prediction);
    }
}

/// Records a final failure (unless the job is already final).
pub async fn fail(ctx: &JobContext, id: JobId, reason: &str) {
    if let Err(e) = ctx.store.fail(id, reason).await {
        tracing::warn!(error = %e, job_id = %id, "could not record failure");
    }
}

async fn forget_image(ctx: &JobContext, job: &SlowJob) {
    if let ImageRef::Object(name) = &job.image
        && let Err(e) = ctx.images.delete(name).await
    {
        tracing::debug!(error = %e, "image object not deleted (expires with the bucket's TTL)");
    }
}

async fn ack(msg: &Message, kind: AckKind) {
    if let Err(e) = msg.ack_with(kind).await {
        tracing::warn!(error = %e, "could not acknowledge message");
    }
}
