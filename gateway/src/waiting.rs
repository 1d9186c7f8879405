//! `Prefer: wait=N` (see `prefer`): `POST /predict` and `GET /job/<id>` wait, on the gateway's
//! one record watcher (`hub`), for the job to become final.
//!
//! Waiting holds a `hub` subscription and nothing else: no NATS consumer, no task. A client
//! that goes away while waiting drops the request, and with it the subscription; the job,
//! stored before the wait began, carries on. When the gateway begins to drain, waits end at
//! once and answer with the job as it stands.

use std::time::Duration;

use axum::{
    Json,
    response::{IntoResponse, Response},
};
use serde::Serialize;
use tandem_core::{job::JobId, store::Versioned};
use tokio::sync::broadcast::error::RecvError;

use crate::{
    error::ApiError,
    prefer::{self, Wait},
    replies::PredictReply,
    state::AppState,
};

/// A JSON reply, with `Preference-Applied: wait=N` when the request's wait was honoured.
#[derive(Debug)]
pub struct Waited<T>(pub T, pub Option<Wait>);

impl<T: Serialize> IntoResponse for Waited<T> {
    fn into_response(self) -> Response {
        let mut response = Json(self.0).into_response();
        if let Some(wait) = self.1 {
            response
                .headers_mut()
                .insert(prefer::PREFERENCE_APPLIED, wait.applied());
        }
        response
    }
}

/// `POST /predict`'s reply: at once without `wait`; else once the job is final (carrying it
/// whole) or the wait has run out (with the status it then has). Trouble while waiting leaves
/// the reply as it was: the job is stored, and an error would have the client submit it again.
pub async fn predict_reply(
    state: &AppState,
    wait: Option<Wait>,
    reply: PredictReply,
) -> Waited<PredictReply> {
    let Some(wait) = wait else {
        return Waited(reply, None);
    };
    match until_final(state, reply.job_id, wait.duration()).await {
        Ok(Some(current)) => Waited(reply.waited(&current.record), Some(wait)),
        Ok(None) => Waited(reply, Some(wait)),
        Err(e) => {
            tracing::warn!(error = %e, "waiting for the job failed; answering as it stood");
            Waited(reply, Some(wait))
        }
    }
}

/// The job's record once it is final, or as it stands when `wait` has passed or the gateway
/// begins to drain; `None` when there is no such job.
pub async fn until_final(
    state: &AppState,
    id: JobId,
    wait: Duration,
) -> Result<Option<Versioned>, ApiError> {
    let deadline = tokio::time::Instant::now() + wait;
    let store = state.queue.jetstream_or_unavailable()?.store.clone();
    // Subscribe before reading, so no change falls between the read and the subscription.
    let mut changes = state.hub.subscribe(id);
    let Some(mut current) = store.get(id).await? else {
        return Ok(None);
    };
    let mut draining = state.draining.clone();
    while !current.record.status.is_terminal() {
        tokio::select! {
            received = changes.receiver.recv() => match received {
                Ok(change) if change.update.revision > current.revision => {
                    current = change.update.clone();
                }
                Ok(_) => {}
                // Fell behind: the store has the latest.
                Err(RecvError::Lagged(_)) => {
                    if let Some(latest) = store.get(id).await? {
                        current = latest;
                    }
                }
                Err(RecvError::Closed) => break,
            },
            () = tokio::time::sleep_until(deadline) => break,
            () = drained(&mut draining) => break,
        }
    }
    Ok(Some(current))
}

/// Resolves once the gateway begins to drain.
async fn drained(draining: &mut tokio::sync::watch::Receiver<bool>) {
    // Dropped at once: a `watch::Ref` held across an await would make the handler's future
    // not `Send`.
    let _ = draining.wait_for(|draining| *draining).await.map(drop);
}
