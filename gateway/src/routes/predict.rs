//! `POST /predict`: the fast label now, the job on the queue for the better one.

use axum::{
    body::Body,
    extract::State,
    http::{HeaderMap, header},
};
use http_body_util::{BodyExt as _, Limited};
use tandem_core::{
    escalation::{DecidedBy, Escalate, EscalationDecision},
    job::{JobId, JobRecord, JobStatus, Prediction},
    model_client::ClassifyError,
    store::Claim,
};
use time::OffsetDateTime;

use crate::{
    deadline,
    error::ApiError,
    hub::Subscription,
    image_input,
    job_options::{JobOptions, OptionParams},
    prefer,
    queue::{NewJob, SubmitError, Submitted},
    replies::PredictReply,
    state::AppState,
    waiting::{self, Waited},
};

/// Header with which a client makes a retried submission return the same job.
pub const IDEMPOTENCY_KEY: &str = "idempotency-key";
/// Idempotency keys longer than this are refused.
const MAX_IDEMPOTENCY_KEY_LEN: usize = 256;

/// Classifies the image with the fast model and queues it for the slow one, concurrently; the
/// reply leaves only once JetStream has stored the job.
#[utoipa::path(post, path = "/predict", tag = "predict",
    request_body(description = "One image, in any of three forms", content(
        (crate::openapi::PredictJson = "application/json"),
        (crate::openapi::PredictUpload = "multipart/form-data"),
        (Vec<u8> = "image/*"),
    )),
    params(("Idempotency-Key" = Option<String>, Header,
        description = "A retried request with the same key returns the same job"),
        ("webhook" = Option<String>, Query, description = "Where to POST the job's events, signed (any form; the JSON form may give it as a body field instead)"),
        ("webhook_events_filter" = Option<String>, Query, description = "Comma-separated events for the webhook: `fast`, `completed` (the default), `changed`"),
        ("escalate" = Option<tandem_core::escalation::Escalate>, Query, description = "Whether the job goes on to the slow model: `always`, `auto` (only when the fast score is below the threshold) or `never`; default `TANDEM_ESCALATE` (the JSON form may give it as a body field instead)"),
        ("deadline_ms" = Option<u64>, Query, description = "Milliseconds after submission when the slow answer stops being wanted: a job not final by then ends `expired`, the fast answer final (the JSON form may give it as a body field instead)"),
        ("Prefer" = Option<String>, Header, description = crate::openapi::PREFER)),
    responses(
        (status = 200, description = "The fast label, and the stored job; with `Prefer: wait=N`, once the job is final (then with `job`) or N seconds have passed", body = PredictReply,
            headers(("Preference-Applied" = String, description = "`wait=N`: the seconds waited at most, when the request had `Prefer: wait`"))),
        (status = 400, description = "Malformed request", body = crate::replies::ErrorReply),
        (status = 413, description = "Body or image too large", body = crate::replies::ErrorReply),
        (status = 415, description = "Unsupported content type", body = crate::replies::ErrorReply),
        (status = 422, description = "Not an image, or one the model cannot read", body = crate::replies::ErrorReply),
        (status = 429, description = "Queue full; the fast answer is included", body = crate::replies::ErrorReply),
        (status = 503, description = "Queue or fast model unavailable", body = crate::replies::ErrorReply),
        (status = 504, description = "The fast model did not answer in time", body = crate::replies::ErrorReply),
    ))]
#[tracing::instrument(skip_all, fields(job_id))]
pub async fn predict(
    State(state): State<AppState>,
    headers: HeaderMap,
    uri: axum::http::Uri,
    body: Body,
) -> Result<Waited<PredictReply>, ApiError> {
    let wait = prefer::wait(&headers, state.config.max_wait)?;
    let body = read_body(&headers, body, state.config.max_body_bytes).await?;
    let upload = image_input::extract(&headers, body, state.config.max_image_pixels).await?;
    let webhook =
        crate::webhook::requested(&state.config.webhooks, &upload.webhook, uri.query()).await?;
    let options = upload
        .options
        .clone()
        .or(OptionParams::from_query(uri.query()))
        .check(
            state.config.escalation.default_policy,
            state.config.nats.job_ttl,
        )?;
    let idempotency_key = idempotency_key(&headers)?;
    let id = match &idempotency_key {
        Some(key) => match claim(&state, key).await? {
            Claimed::Done(reply) => return Ok(waiting::predict_reply(&state, wait, *reply).await),
            Claimed::Run(id) => id,
        },
        None => JobId::new(),
    };
    tracing::Span::current().record("job_id", tracing::field::display(id));
    let submitted_at = OffsetDateTime::now_utc();
    let new = NewJob {
        id,
        image_sha256: crate::result_cache::key(&state, &upload.bytes),
        image: upload.bytes,
        submitted_at,
        deadline_at: options.deadline.map(|d| submitted_at + d),
    };
    let (record, fast) = run(&state, new, options, idempotency_key.is_some()).await?;
    deadline::schedule(&state.queue, &record);
    let record = crate::webhook::attach(&state.queue, record, webhook).await;
    let reply = PredictReply::new(&record, fast);
    Ok(waiting::predict_reply(&state, wait, reply).await)
}

/// The job, stored, and its fast answer: from the cache, decided from the fast answer
/// (`auto`, `never`), or queued while the fast model runs (`always`).
async fn run(
    state: &AppState,
    new: NewJob,
    options: JobOptions,
    retryable: bool,
) -> Result<(JobRecord, Prediction), ApiError> {
    let policy = options.escalate;
    if policy != Escalate::Never
        && let Some(key) = &new.image_sha256
        && let Some((fast, slow)) = crate::result_cache::lookup(state, key).await
    {
        let fast = match fast {
            Some(fast) => fast,
            None => {
                let fast = classify(state, new.image.clone())
                    .await
                    .map_err(|e| fast_error(e, &state.config.fast_model))?;
                crate::result_cache::add_fast(state, key, &fast, &slow).await;
                fast
            }
        };
        return from_cache(state, new, policy, fast, slow).await;
    }
    // Changes to the record while the fast model runs (a worker marking it `running`) reach
    // this gateway's watcher: knowing the newest revision, adding the fast answer is one
    // compare-and-set, not a read and a write.
    let changes = state.hub.subscribe(new.id);
    if policy != Escalate::Always {
        return decide_first(state, new, policy, changes).await;
    }
    let (id, submitted_at) = (new.id, new.submitted_at);
    let fast = classify(state, new.image.clone());
    let (fast, submitted) = tokio::join!(fast, state.queue.submit(new));
    let fast = match fast {
        Ok(fast) => fast,
        Err(e) => {
            // With an Idempotency-Key the client's retry finishes this same job (see `claim`):
            // withdrawing it would answer that retry with a job that never runs.
            if submitted.is_ok() && !retryable {
                withdraw(state, id, &e).await;
            }
            return Err(fast_error(e, &state.config.fast_model));
        }
    };
    let stored = submitted.map_err(|e| not_stored(e, fast.clone()))?;
    let (_, decision) = state
        .escalation
        .decide(policy, &fast, &state.queue.progress)
        .await;
    let record = attach_fast_answer(state, id, submitted_at, stored, changes, &fast, decision);
    Ok((record.await, fast))
}

fn classify(
    state: &AppState,
    image: bytes::Bytes,
) -> impl Future<Output = Result<Prediction, ClassifyError>> + '_ {
    state.model.classify(
        &state.config.fast_model,
        image,
        state.config.top_k,
        Default::default(),
    )
}

/// `auto` and `never`: the fast answer first, then the job queued (escalated) or stored final
/// with the fast answer as its label (and, for a sample of `auto`'s skipped jobs, audited).
async fn decide_first(
    state: &AppState,
    new: NewJob,
    policy: Escalate,
    changes: Subscription,
) -> Result<(JobRecord, Prediction), ApiError> {
    let fast = classify(state, new.image.clone())
        .await
        .map_err(|e| fast_error(e, &state.config.fast_model))?;
    let (escalated, decision) = state
        .escalation
        .decide(policy, &fast, &state.queue.progress)
        .await;
    let (id, submitted_at) = (new.id, new.submitted_at);
    if escalated {
        let stored = state
            .queue
            .submit(new)
            .await
            .map_err(|e| not_stored(e, fast.clone()))?;
        let record = attach_fast_answer(state, id, submitted_at, stored, changes, &fast, decision);
        return Ok((record.await, fast));
    }
    drop(changes);
    let mut record = new.record();
    record.decided_by = DecidedBy::Fast;
    let stored = store_final_at_once(state, record, decision, &fast, None).await?;
    if policy == Escalate::Auto && state.escalation.audited(id) {
        let queue = state.queue.clone();
        tokio::spawn(async move { queue.submit_audit(new).await });
    }
    Ok((stored.record, fast))
}

/// Stores `record` as a job that never goes to the slow model: `succeeded` at once with the
/// fast answer (and the slow one, from the cache), the reason in `escalation`.
async fn store_final_at_once(
    state: &AppState,
    mut record: JobRecord,
    decision: EscalationDecision,
    fast: &Prediction,
    slow: Option<Prediction>,
) -> Result<tandem_core::store::Versioned, ApiError> {
    record.escalated = false;
    record.escalation = Some(decision);
    record.fast = Some(fast.clone());
    record.slow = slow;
    let _final = record.advance(JobStatus::Succeeded);
    state
        .queue
        .store_final(&record)
        .await
        .map_err(|e| not_stored(e, fast.clone()))
}

/// A repeated image: both answers from the cache, the job final at once, no model run.
async fn from_cache(
    state: &AppState,
    new: NewJob,
    policy: Escalate,
    fast: Prediction,
    slow: Prediction,
) -> Result<(JobRecord, Prediction), ApiError> {
    let decision = EscalationDecision {
        policy,
        score: fast.score,
        threshold: None,
        brownout: false,
        reason: "cached: this image was answered before by the same models".into(),
    };
    let mut record = new.record();
    record.cached = true;
    let stored = store_final_at_once(state, record, decision, &fast, Some(slow)).await?;
    state.escalation.count(policy, "cached");
    crate::escalation::count_saved();
    Ok((stored.record, fast))
}

/// What an `Idempotency-Key` says about this request.
enum Claimed {
    /// A finished earlier attempt: its reply.
    Done(Box<PredictReply>),
    /// Run the job under this id: a new one, or an earlier attempt's that did not finish (its
    /// publish is then dropped by JetStream as a duplicate of the message id).
    Run(JobId),
}

async fn claim(state: &AppState, key: &str) -> Result<Claimed, ApiError> {
    let candidate = JobId::new();
    let Some(jetstream) = state.queue.jetstream() else {
        // No JetStream, no job: the submission below answers 503.
        return Ok(Claimed::Run(candidate));
    };
    match jetstream
        .store
        .claim_idempotency_key(key, candidate)
        .await?
    {
        Claim::New(id) => Ok(Claimed::Run(id)),
        Claim::Existing(existing) => {
            let earlier = jetstream.store.get(existing).await?;
            Ok(
                match earlier.and_then(|e| e.record.fast.clone().map(|f| (e.record, f))) {
                    Some((record, fast)) => {
                        // The first attempt may have stopped before it emitted its webhook
                        // events: emitting again is harmless (de-duplicated by event id).
                        tandem_core::webhook::emit_logged(&jetstream.js, &record).await;
                        Claimed::Done(Box::new(PredictReply::new(&record, fast)))
                    }
                    None => Claimed::Run(existing),
                },
            )
        }
    }
}

/// The job is stored with the fast answer added to its record, in one compare-and-set from the
/// newest revision this gateway saw. A failure here is logged, not returned: the job is stored,
/// and an error would make the client retry (and submit it twice).
async fn attach_fast_answer(
    state: &AppState,
    id: JobId,
    submitted_at: OffsetDateTime,
    stored: Submitted,
    mut changes: Subscription,
    fast: &Prediction,
    decision: EscalationDecision,
) -> JobRecord {
    let (mut known, stream_seq) = (stored.record, Some(stored.stream_seq));
    let jetstream = state.queue.wait_for_jetstream().await;
    while let Ok(change) = changes.receiver.try_recv() {
        if known
            .as_ref()
            .is_none_or(|k| change.update.revision > k.revision)
        {
            known = Some(change.update.clone());
        }
    }
    drop(changes);
    let stored = jetstream
        .store
        .update_from(id, known, |record| {
            record.fast = Some(fast.clone());
            record.stream_seq = stream_seq;
            record.escalation = Some(decision.clone());
            true
        })
        .await;
    match stored {
        Ok(Some(stored)) => {
            // The slow model answered first: its worker could not compare the two answers.
            if let Some(slow) = &stored.record.slow {
                tandem_core::metrics::record_agreement(fast, slow);
            }
            stored.record
        }
        outcome => {
            if let Err(e) = outcome {
                tracing::warn!(error = %e, "fast result not added to the job record");
            }
            let mut record = JobRecord::queued(id, submitted_at);
            record.fast = Some(fast.clone());
            record.stream_seq = stream_seq;
            record.escalation = Some(decision);
            record
        }
    }
}

/// The job was not stored: 429 or 503, with the fast answer that was computed anyway.
fn not_stored(e: SubmitError, fast: Prediction) -> ApiError {
    let answer = Some(Box::new(fast));
    match e {
        SubmitError::Full(retry_after) => ApiError::QueueFull(answer, retry_after),
        SubmitError::Unavailable(reason) => {
            tracing::warn!(%reason, "job not stored");
            ApiError::QueueUnavailable(answer)
        }
    }
}

async fn read_body(
    headers: &HeaderMap,
    body: Body,
    limit: usize,
) -> Result<bytes::Bytes, ApiError> {
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > limit as u64) {
        return Err(ApiError::BodyTooLarge { limit });
    }
    match Limited::new(body, limit).collect().await {
        Ok(collected) => Ok(collected.to_bytes()),
        Err(e)
            if e.downcast_ref::<http_body_util::LengthLimitError>()
                .is_some() =>
        {
            Err(ApiError::BodyTooLarge { limit })
        }
        // Whatever the content type: the body itself broke off (the client went away, or
        // sent a malformed chunked encoding).
        Err(e) => Err(ApiError::UnreadableBody(e.to_string())),
    }
}

fn idempotency_key(headers: &HeaderMap) -> Result<Option<String>, ApiError> {
    let Some(value) = headers.get(IDEMPOTENCY_KEY) else {
        return Ok(None);
    };
    match value.to_str() {
        Ok(key) if !key.is_empty() && key.len() <= MAX_IDEMPOTENCY_KEY_LEN => {
            Ok(Some(key.to_owned()))
        }
        _ => Err(ApiError::InvalidIdempotencyKey),
    }
}

fn fast_error(e: ClassifyError, model: &str) -> ApiError {
    match e {
        ClassifyError::Rejected(reason) => ApiError::ImageRejected(reason),
        ClassifyError::ModelNotFound(_) => ApiError::ModelMissing(model.to_owned()),
        ClassifyError::Timeout(_) => ApiError::ModelTimeout,
        ClassifyError::Unavailable(reason) => {
            tracing::warn!(%reason, "fast model call failed");
            ApiError::ModelUnavailable
        }
    }
}

/// The job was stored but the request failed: end the job so no worker spends time on it.
async fn withdraw(state: &AppState, id: JobId, cause: &ClassifyError) {
    let Some(jetstream) = state.queue.jetstream() else {
        return;
    };
    let reason = format!("withdrawn at submission: {cause}");
    let result = jetstream.store.fail(id, &reason).await;
    if let Err(e) = result {
        tracing::warn!(error = %e, job_id = %id, "could not withdraw job");
    }
}
