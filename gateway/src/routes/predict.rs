//! `POST /predict`: the fast label now, the job on the queue for the better one.

use std::time::Duration;

use axum::{
    Json,
    body::Body,
    extract::State,
    http::{HeaderMap, header},
};
use http_body_util::{BodyExt as _, Limited};
use serde_json::{Map, Value, json};
use tandem_core::{
    job::{JobId, JobRecord, Prediction},
    model_client::ClassifyError,
    store::Claim,
};
use time::OffsetDateTime;

use crate::{error::ApiError, image_input, queue::SubmitError, state::AppState};

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
        description = "A retried request with the same key returns the same job")),
    responses(
        (status = 200, description = "The fast label, and the stored job", body = crate::openapi::PredictReply),
        (status = 400, description = "Malformed request", body = crate::openapi::ErrorReply),
        (status = 413, description = "Body or image too large", body = crate::openapi::ErrorReply),
        (status = 415, description = "Unsupported content type", body = crate::openapi::ErrorReply),
        (status = 422, description = "Not an image, or one the model cannot read", body = crate::openapi::ErrorReply),
        (status = 429, description = "Queue full; the fast answer is included", body = crate::openapi::ErrorReply),
        (status = 503, description = "Queue or fast model unavailable", body = crate::openapi::ErrorReply),
        (status = 504, description = "The fast model did not answer in time", body = crate::openapi::ErrorReply),
    ))]
#[tracing::instrument(skip_all, fields(job_id))]
pub async fn predict(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Body,
) -> Result<Json<Value>, ApiError> {
    let body = read_body(&headers, body, state.config.max_body_bytes).await?;
    let upload = image_input::extract(&headers, body, state.config.max_image_pixels).await?;
    let idempotency_key = idempotency_key(&headers)?;

    let mut id = JobId::new();
    if let (Some(key), Some(parts)) = (&idempotency_key, state.queue.parts()) {
        match parts.store.claim_idempotency_key(key, id).await? {
            Claim::New(_) => {}
            Claim::Existing(existing) => {
                if let Some(done) = parts.store.get(existing).await?
                    && let Some(fast) = &done.record.fast
                {
                    return Ok(Json(reply(&state, &done.record, fast)));
                }
                // The first attempt did not finish: finish it under the same id (JetStream
                // drops the duplicate publish by message id).
                id = existing;
            }
        }
    }
    tracing::Span::current().record("job_id", tracing::field::display(id));
    // Changes to the record while the fast model runs (a worker marking it `running`) reach
    // this gateway's watcher: knowing the newest revision, adding the fast answer is one
    // compare-and-set, not a read and a write.
    let mut changes = state.hub.subscribe(id);

    let submitted_at = OffsetDateTime::now_utc();
    let fast = state.model.classify(
        &state.config.fast_model,
        upload.bytes.clone(),
        state.config.top_k,
        Default::default(),
    );
    let submit = state.queue.submit(id, upload.bytes, submitted_at);
    let (fast, submitted) = tokio::join!(fast, submit);

    let fast = match fast {
        Ok(fast) => fast,
        Err(e) => {
            // With an Idempotency-Key the client's retry finishes this same job (see above):
            // withdrawing it would answer that retry with a job that never runs.
            if submitted.is_ok() && idempotency_key.is_none() {
                withdraw(&state, id, &e).await;
            }
            return Err(fast_error(e, &state.config.fast_model));
        }
    };
    if let Err(e) = submitted {
        let mut extra = Map::new();
        extra.insert(state.config.fast_model.clone(), json!(fast.label));
        extra.insert("fast".into(), json!(fast));
        return Err(match e {
            SubmitError::Full => ApiError::QueueFull {
                retry_after: Duration::from_secs(5),
                extra,
            },
            SubmitError::Unavailable(reason) => {
                tracing::warn!(%reason, "job not stored");
                ApiError::QueueUnavailable {
                    retry_after: Duration::from_secs(2),
                    extra,
                }
            }
        });
    }

    let parts = state.queue.wait_ready().await;
    let mut known = submitted.ok().flatten();
    while let Ok(change) = changes.receiver.try_recv() {
        if known
            .as_ref()
            .is_none_or(|k| change.update.revision > k.revision)
        {
            known = Some(change.update.clone());
        }
    }
    drop(changes);
    let stored = parts
        .store
        .update_from(id, known, |record| {
            record.fast = Some(fast.clone());
            true
        })
        .await;
    // The job is stored: a failure to add the fast answer to its record must not make the
    // client retry (and submit it twice), so it is logged, not returned.
    let record = match stored {
        Ok(Some(stored)) => {
            // The slow model answered first: its worker could not compare the two answers.
            if let Some(slow) = &stored.record.slow {
                tandem_core::metrics::record_agreement(&fast, slow);
            }
            stored.record
        }
        outcome => {
            if let Err(e) = outcome {
                tracing::warn!(error = %e, "fast result not added to the job record");
            }
            let mut record = JobRecord::queued(id, submitted_at);
            record.fast = Some(fast.clone());
            record
        }
    };
    Ok(Json(reply(&state, &record, &fast)))
}

/// The reply: the original clients' `{"job_id", "<fast model>": label}` plus the full picture.
fn reply(state: &AppState, record: &JobRecord, fast: &Prediction) -> Value {
    let mut body = Map::new();
    body.insert("job_id".into(), json!(record.id));
    body.insert(state.config.fast_model.clone(), json!(fast.label));
    body.insert("fast".into(), json!(fast));
    body.insert("status".into(), json!(record.status));
    body.insert("job_url".into(), json!(format!("/job/{}", record.id)));
    body.insert(
        "events_url".into(),
        json!(format!("/job/{}/events", record.id)),
    );
    Value::Object(body)
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
        Err(e) => Err(ApiError::InvalidMultipart(format!(
            "could not read the body: {e}"
        ))),
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
    let Some(parts) = state.queue.parts() else {
        return;
    };
    let reason = format!("withdrawn at submission: {cause}");
    let result = parts.store.fail(id, &reason).await;
    if let Err(e) = result {
        tracing::warn!(error = %e, job_id = %id, "could not withdraw job");
    }
}
