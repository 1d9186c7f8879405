//! `GET /job/<id>`, `DELETE /job/<id>` and `GET /job/<id>/events` (Server-Sent Events).

use std::{convert::Infallible, sync::Arc};

use axum::{
    Json,
    extract::{Path, State},
    http::HeaderMap,
    response::sse::{Event, KeepAlive, Sse},
};
use futures::{Stream, StreamExt as _};
use tandem_core::{
    job::{JobId, JobRecord, JobStatus},
    store::{JobStore, Versioned},
    telemetry,
};
use tokio::sync::{broadcast::error::RecvError, watch};

use crate::{
    error::ApiError,
    hub::Change,
    prefer,
    progress::{QueueProgress, Snapshot},
    queue::Queue,
    replies::{CancelReply, JobView, QueuePosition},
    state::AppState,
    waiting::{self, Waited},
};

fn parse_id(raw: &str) -> Result<JobId, ApiError> {
    raw.parse()
        .map_err(|_| ApiError::JobNotFound(truncate(raw)))
}

/// Echoing a hostile 1 MB id back would be unkind to logs and clients.
fn truncate(raw: &str) -> String {
    raw.chars().take(64).collect()
}

/// The job's record; with `Prefer: wait=N`, a long poll: once the job is final, or after N
/// seconds as it then stands.
#[utoipa::path(get, path = "/job/{id}", tag = "jobs",
    params(("id" = String, Path, description = "The job id"),
        ("Prefer" = Option<String>, Header, description = crate::openapi::PREFER)),
    responses(
        (status = 200, description = "The record, plus `\"<id>\": {\"prediction\": \"<final label>\"}` for the original clients", body = JobView,
            headers(("Preference-Applied" = String, description = "`wait=N`: the seconds waited at most, when the request had `Prefer: wait`"))),
        (status = 400, description = "A path that cannot be decoded (`bad_request`)", body = crate::replies::ErrorReply),
        (status = 404, description = "Unknown, expired or malformed id", body = crate::replies::ErrorReply),
        (status = 503, description = "NATS unavailable", body = crate::replies::ErrorReply),
    ))]
#[tracing::instrument(skip(state, headers))]
pub async fn get_job(
    State(state): State<AppState>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Result<Waited<JobView>, ApiError> {
    let id = parse_id(&id)?;
    let wait = prefer::wait(&headers, state.config.max_wait)?;
    let current = match wait {
        Some(wait) => waiting::until_final(&state, id, wait.duration()).await?,
        None => {
            let jetstream = state.queue.jetstream_or_unavailable()?;
            jetstream.store.get(id).await?
        }
    }
    .ok_or_else(|| ApiError::JobNotFound(id.to_string()))?;
    // Past its deadline, it is expired now (should the gateway that set its timer be gone).
    let current = crate::deadline::expire_if_due(&state.queue, current).await;
    if let Some(slow) = &current.record.slow {
        crate::escalation::observe_slow(slow);
    }
    let queue = queue_position(&state.queue, &current.record).await;
    Ok(Waited(
        JobView::new(&current.record).with_queue(queue),
        wait,
    ))
}

/// Where `record` stands in the queue, while it is `queued` (and its place is known).
async fn queue_position(queue: &Queue, record: &JobRecord) -> Option<QueuePosition> {
    let seq = record
        .stream_seq
        .filter(|_| record.status == JobStatus::Queued)?;
    Some(queue.progress.current().await?.position(seq))
}

/// Cancels a job that has not finished; says "too late" (409) for one that has.
#[utoipa::path(delete, path = "/job/{id}", tag = "jobs",
    params(("id" = String, Path, description = "The job id")),
    responses(
        (status = 200, description = "Cancelled", body = crate::replies::CancelReply),
        (status = 400, description = "A path that cannot be decoded (`bad_request`)", body = crate::replies::ErrorReply),
        (status = 404, description = "Unknown, expired or malformed id", body = crate::replies::ErrorReply),
        (status = 409, description = "Too late: the job had already ended", body = crate::replies::ErrorReply),
        (status = 503, description = "NATS unavailable", body = crate::replies::ErrorReply),
    ))]
#[tracing::instrument(skip(state))]
pub async fn cancel_job(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<CancelReply>, ApiError> {
    let id = parse_id(&id)?;
    let stored = state
        .queue
        .jetstream_or_unavailable()?
        .store
        .update(id, |record| record.advance(JobStatus::Cancelled))
        .await?
        .ok_or_else(|| ApiError::JobNotFound(id.to_string()))?;
    if stored.record.status == JobStatus::Cancelled
        && let Some(jetstream) = state.queue.jetstream()
    {
        // `completed`, if the job has a webhook (the worker emits it again when it skips the
        // job: stored once).
        tandem_core::webhook::emit_logged(&jetstream.js, &stored.record).await;
    }
    let status = stored.record.status;
    let reply = CancelReply {
        job_id: id,
        cancelled: status == JobStatus::Cancelled,
        status,
    };
    if reply.cancelled {
        Ok(Json(reply))
    } else {
        Err(ApiError::TooLate(reply))
    }
}

/// The job's changes as Server-Sent Events: the current state at once, then each change, until
/// a final state. Event ids are KV revisions: a client reconnecting with `Last-Event-ID` gets
/// only what is newer.
#[utoipa::path(get, path = "/job/{id}/events", tag = "jobs",
    params(
        ("id" = String, Path, description = "The job id"),
        ("Last-Event-ID" = Option<u64>, Header, description = "Resume after this event id"),
    ),
    responses(
        (status = 200, description = "Server-Sent Events: `event` is the status, `id` the revision, `data` the job as in GET /job/{id}; ends after a final state", content_type = "text/event-stream", body = JobView),
        (status = 400, description = "A path that cannot be decoded (`bad_request`)", body = crate::replies::ErrorReply),
        (status = 404, description = "Unknown, expired or malformed id", body = crate::replies::ErrorReply),
        (status = 503, description = "NATS unavailable", body = crate::replies::ErrorReply),
    ))]
#[tracing::instrument(skip(state, headers))]
pub async fn job_events(
    State(state): State<AppState>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Result<Sse<impl Stream<Item = Result<Event, Infallible>>>, ApiError> {
    let id = parse_id(&id)?;
    let last_seen: u64 = headers
        .get("last-event-id")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0);
    let store = state.queue.jetstream_or_unavailable()?.store.clone();
    // Subscribe before reading, so no change falls between the read and the subscription.
    let subscription = state.hub.subscribe(id);
    let current = store
        .get(id)
        .await?
        .ok_or_else(|| ApiError::JobNotFound(id.to_string()))?;
    // The stream ends at the deadline, whichever gateway accepted the job.
    let current = crate::deadline::expire_if_due(&state.queue, current).await;
    crate::deadline::schedule(&state.queue, &current.record);

    let stream = EventStream {
        subscription,
        store,
        id,
        sent: last_seen,
        next: Some(Change::new(current)),
        queued: None,
        progress: state.queue.progress.clone(),
        _open: super::metrics::OpenStream::open(),
    }
    .into_stream();
    Ok(Sse::new(stream).keep_alive(KeepAlive::new().interval(state.config.sse_keepalive)))
}

/// A span for handing one version to the client, in the trace of the step that wrote it.
fn delivery_span(update: &Versioned) -> tracing::Span {
    let Some(traceparent) = update.record.traceparent.as_deref() else {
        // Not traced upstream: a root span per event would only be noise.
        return tracing::Span::none();
    };
    let span = tracing::info_span!(
        "sse.deliver",
        otel.kind = "producer",
        job_id = %update.record.id,
        status = update.record.status.as_str(),
        revision = update.revision,
    );
    telemetry::set_remote_parent(&span, |name| {
        (name == telemetry::TRACEPARENT).then_some(traceparent)
    });
    span
}

async fn latest(store: &JobStore, id: JobId) -> Option<Arc<Change>> {
    store.get(id).await.ok().flatten().map(Change::new)
}

fn event(change: &Change, queue: Option<QueuePosition>) -> Result<Event, Infallible> {
    let event = Event::default()
        .id(change.update.revision.to_string())
        .event(change.update.record.status.as_str());
    Ok(match queue {
        // The queue position is this stream's own: rendered for it.
        Some(queue) => event.data(
            serde_json::to_string(&JobView::new(&change.update.record).with_queue(Some(queue)))
                .unwrap_or_default(),
        ),
        None => event.data(change.view()),
    })
}

/// A stream's `queued` job: its place is sent again (same event id) whenever it changes.
struct Queued {
    change: Arc<Change>,
    seq: u64,
    snapshots: watch::Receiver<Option<Arc<Snapshot>>>,
    sent: Option<QueuePosition>,
}

/// What an event stream woke up for.
enum Wake {
    Change(Result<Arc<Change>, RecvError>),
    Snapshot(bool),
}

/// One client's event stream. It is the response body itself, polled only as fast as the
/// client reads: no task and no channel per stream (ten thousand streams on one job cost their
/// sockets and little else), and a reader that falls behind skips to the latest version.
struct EventStream {
    subscription: crate::hub::Subscription,
    store: JobStore,
    id: JobId,
    /// The newest revision sent (or seen by the client, from `Last-Event-ID`).
    sent: u64,
    /// The version to send next, if already known.
    next: Option<Arc<Change>>,
    /// The latest version, while it is `queued` with a known place.
    queued: Option<Box<Queued>>,
    progress: QueueProgress,
    _open: super::metrics::OpenStream,
}

impl Queued {
    /// The event saying the job's place changed, if it did.
    fn moved(&mut self) -> Option<Result<Event, Infallible>> {
        let position = self
            .snapshots
            .borrow_and_update()
            .as_ref()
            .map(|s| s.position(self.seq));
        if position.is_none() || position == self.sent {
            return None;
        }
        self.sent = position;
        Some(event(&self.change, position))
    }
}

impl EventStream {
    /// Follows the queue position of `change` while it is `queued` (stops otherwise); returns
    /// its place now.
    async fn follow(&mut self, change: &Arc<Change>) -> Option<QueuePosition> {
        let record = &change.update.record;
        let Some(seq) = record
            .stream_seq
            .filter(|_| record.status == JobStatus::Queued)
        else {
            self.queued = None;
            return None;
        };
        let snapshots = match self.queued.take() {
            Some(queued) => queued.snapshots,
            None => self.progress.subscribe(),
        };
        let position = self.progress.current().await.map(|s| s.position(seq));
        self.queued = Some(Box::new(Queued {
            change: change.clone(),
            seq,
            snapshots,
            sent: position,
        }));
        position
    }

    fn into_stream(self) -> impl Stream<Item = Result<Event, Infallible>> + Send {
        futures::stream::unfold(Some(self), |state| async move {
            let mut state = state?;
            loop {
                if let Some(change) = state.next.take() {
                    let update = &change.update;
                    let done = update.record.status.is_terminal();
                    let queue = Box::pin(state.follow(&change)).await;
                    // Send only what the client has not seen (Last-Event-ID), and end after a
                    // final state even when the client had already seen it.
                    if update.revision > state.sent {
                        state.sent = update.revision;
                        let event = delivery_span(update).in_scope(|| event(&change, queue));
                        return Some((event, (!done).then_some(state)));
                    }
                    if done {
                        return None;
                    }
                }
                let wake = match &mut state.queued {
                    Some(queued) => tokio::select! {
                        received = state.subscription.receiver.recv() => Wake::Change(received),
                        changed = queued.snapshots.changed() => Wake::Snapshot(changed.is_ok()),
                    },
                    None => Wake::Change(state.subscription.receiver.recv().await),
                };
                state.next = match wake {
                    Wake::Change(Ok(change)) => Some(change),
                    // Too slow to keep up: skip to the latest state rather than buffer. (Boxed:
                    // the store's future is kilobytes that every idle stream would carry.)
                    Wake::Change(Err(RecvError::Lagged(_))) => {
                        Box::pin(latest(&state.store, state.id)).await
                    }
                    Wake::Change(Err(RecvError::Closed)) => return None,
                    Wake::Snapshot(true) => {
                        if let Some(event) = state.queued.as_mut().and_then(|q| q.moved()) {
                            return Some((event, Some(state)));
                        }
                        None
                    }
                    Wake::Snapshot(false) => {
                        state.queued = None;
                        None
                    }
                };
            }
        })
        .fuse()
    }
}
