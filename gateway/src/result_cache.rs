//! The result cache on the gateway: a repeated image gets both answers without running either
//! model, while the model server still reports the digests the answers were made with.
//!
//! The entries and their single-flight are `tandem_core::result_cache`; the workers write them.

use tandem_core::{job::Prediction, result_cache};

use crate::state::AppState;

/// The answers cached for `image` under the models as they are now (the fast one may be
/// missing: the caller then runs the fast model); `None` on a miss, an entry made by other
/// models (or other versions of them), with the cache off, or when the lookup fails (the job
/// then runs as usual).
pub async fn lookup(state: &AppState, key: &str) -> Option<(Option<Prediction>, Prediction)> {
    let cache = state.queue.jetstream()?.results.as_ref()?;
    let found = match cache.answers(key).await {
        Ok(found) => found,
        Err(e) => {
            tracing::warn!(error = %e, "result cache lookup failed; running the models");
            return None;
        }
    };
    let outcome = |outcome: &'static str| {
        metrics::counter!("tandem_result_cache_lookups_total", "outcome" => outcome).increment(1);
    };
    let Some((fast, slow)) = found else {
        outcome("miss");
        return None;
    };
    let (fast_now, slow_now) = tokio::join!(
        state.model.model_digest(&state.config.fast_model),
        state.model.model_digest(&slow.model),
    );
    if slow.model_digest.is_none() || slow.model_digest != slow_now {
        outcome("outdated");
        return None;
    }
    // A fast answer from another fast model (or version) is not used; the slow one still is.
    let fast = fast.filter(|fast| {
        fast.model == state.config.fast_model
            && fast.model_digest.is_some()
            && fast.model_digest == fast_now
    });
    outcome(if fast.is_some() { "hit" } else { "slow_hit" });
    Some((fast, slow))
}

/// Completes an entry that lacked a fast answer with the one just computed.
pub async fn add_fast(state: &AppState, key: &str, fast: &Prediction, slow: &Prediction) {
    if let Some(cache) = state.queue.jetstream().and_then(|j| j.results.as_ref())
        && let Err(e) = cache.complete(key, Some(fast), slow).await
    {
        tracing::debug!(error = %e, "fast answer not added to the cache");
    }
}

/// The cache key of `image`, when the cache is on.
pub fn key(state: &AppState, image: &[u8]) -> Option<String> {
    state
        .queue
        .jetstream()
        .and_then(|j| j.results.as_ref())
        .map(|_| result_cache::image_key(image))
}
