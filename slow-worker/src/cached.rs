//! The worker's side of the result cache: a job whose image the slow model has answered (by
//! the same model, same digest) takes that answer; identical jobs running at once run the
//! model once (the first holds the entry, the others wait for its answer); a fresh answer is
//! stored for the next one. Only jobs the gateway marked (`Tandem-Image-Sha256`) take part.

use async_nats::jetstream::Message;
use bytes::Bytes;
use tandem_core::{
    job::{JobRecord, Prediction},
    model_client::ClassifyError,
    result_cache::Begin,
    slow_job::SlowJob,
};

use crate::job::{JobContext, keep_alive, run_model};

/// The slow answer of a job, and whether it came from the cache.
#[derive(Debug, Clone)]
pub struct Answer {
    pub prediction: Prediction,
    pub cached: bool,
}

impl Answer {
    fn fresh(prediction: Prediction) -> Self {
        Self {
            prediction,
            cached: false,
        }
    }
}

/// The job's slow answer: from the cache when it holds the slow model's own, else from the
/// model (once for identical jobs running together).
pub async fn slow_answer(
    ctx: &JobContext,
    msg: &Message,
    job: &SlowJob,
    image: Bytes,
) -> Result<Answer, ClassifyError> {
    let (Some(cache), Some(key)) = (&ctx.cache, job.image_sha256.as_deref()) else {
        return run_model(ctx, msg, image).await.map(Answer::fresh);
    };
    // A holder that has run longer than a model call may take is gone: take over.
    let stale_after = ctx.config.model_timeout * 2;
    let found = match cache.begin(key, job.id, stale_after).await {
        Ok(Begin::Run) => None,
        Ok(Begin::Found { slow, .. }) => Some(slow),
        Ok(Begin::Wait { job: holder, .. }) => {
            tracing::debug!(%holder, "the same image is running for another job; waiting");
            let waited = keep_alive(ctx, msg, cache.wait_complete(key, stale_after)).await;
            waited.ok().flatten().map(|(_, slow)| slow)
        }
        Err(e) => {
            tracing::warn!(error = %e, "result cache unavailable; running the model");
            None
        }
    };
    if let Some(slow) = found
        && is_current(ctx, &slow).await
    {
        metrics::counter!("tandem_worker_cache_hits_total").increment(1);
        return Ok(Answer {
            prediction: slow,
            cached: true,
        });
    }
    let result = run_model(ctx, msg, image).await;
    if result.is_err() {
        // The next identical job must not wait on an answer that is not coming.
        let _ = cache.release(key, job.id).await;
    }
    result.map(Answer::fresh)
}

/// Whether a cached answer is the configured slow model's, at the digest it has now.
async fn is_current(ctx: &JobContext, slow: &Prediction) -> bool {
    slow.model == ctx.config.slow_model
        && slow.model_digest.is_some()
        && slow.model_digest == ctx.model.model_digest(&slow.model).await
}

/// Stores both answers of a finished job for the next identical image (when the job takes
/// part in the cache and both answers name their model's digest).
pub async fn remember(ctx: &JobContext, job: &SlowJob, record: &JobRecord) {
    let (Some(cache), Some(key)) = (&ctx.cache, job.image_sha256.as_deref()) else {
        return;
    };
    // The fast answer is stored with it when the job has it already (the slow model can be
    // first; the gateway then adds it when it next uses the entry).
    let fast = record.fast.as_ref().filter(|f| f.model_digest.is_some());
    let Some(slow) = record.slow.as_ref().filter(|s| s.model_digest.is_some()) else {
        let _ = cache.release(key, job.id).await;
        return;
    };
    if let Err(e) = cache.complete(key, fast, slow).await {
        tracing::warn!(error = %e, "answers not cached");
    }
}
