//! A small Server-Sent Events client for the tests (events, ids, comment lines), on the
//! `eventsource-stream` parser.
//!
//! Like the suite's HTTP client, it checks what it gets against the gateway's OpenAPI document
//! ([`super::openapi`]): the reply's status and content type when a stream is opened, and each
//! event's data, the job as in `GET /job/{id}`, against the `JobView` schema.

use std::{
    pin::Pin,
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    time::Duration,
};

use eventsource_stream::{EventStreamError, Eventsource as _};
use futures::{Stream, StreamExt as _};
use serde_json::Value;

use super::openapi;

/// One event as sent.
#[derive(Debug, Clone)]
pub struct SseEvent {
    pub id: Option<String>,
    pub event: String,
    pub data: String,
}

impl SseEvent {
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.data).expect("event data is JSON")
    }
}

type Events = Pin<
    Box<
        dyn Stream<Item = Result<eventsource_stream::Event, EventStreamError<reqwest::Error>>>
            + Send,
    >,
>;

/// An open event stream.
pub struct SseStream {
    pub status: reqwest::StatusCode,
    events: Events,
    /// Comment lines received so far, counted as the bytes go by (the parser drops them).
    seen_comments: Arc<AtomicUsize>,
    /// Comment lines seen (keep-alives), as of the last [`Self::next_event`].
    pub comments: usize,
}

impl SseStream {
    /// Opens `url`, optionally resuming after `last_event_id`; panics unless the reply's status
    /// and content type are documented for its path (or, with `TANDEM_OPENAPI_DRIFT_LOG` set,
    /// logs the mismatch: [`openapi::check_client_reply`]).
    pub async fn open(http: &reqwest::Client, url: &str, last_event_id: Option<&str>) -> Self {
        let mut request = http.get(url).header("accept", "text/event-stream");
        if let Some(id) = last_event_id {
            request = request.header("last-event-id", id);
        }
        let response = request.send().await.expect("SSE request");
        let status = response.status();
        let content_type = response.headers().get(reqwest::header::CONTENT_TYPE);
        let content_type = content_type.map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned());
        // The body is read as events below, each event's data checked in `next_event`.
        let path = response.url().path();
        openapi::check_client_reply("GET", path, status.as_u16(), content_type.as_deref(), None);
        let seen_comments = Arc::new(AtomicUsize::new(0));
        let counter = seen_comments.clone();
        // A comment is a line that starts with a colon; a line starts the stream or follows
        // CR or LF (SSE's three line endings), whichever chunk it falls in.
        let mut line_start = true;
        let body = response.bytes_stream().inspect(move |chunk| {
            for &byte in chunk.iter().flatten() {
                if line_start && byte == b':' {
                    counter.fetch_add(1, Ordering::Relaxed);
                }
                line_start = matches!(byte, b'\n' | b'\r');
            }
        });
        Self {
            status,
            events: Box::pin(body.eventsource()),
            seen_comments,
            comments: 0,
        }
    }

    /// The next event; `None` when the stream ends or nothing comes within `timeout`. Panics
    /// when an event's data is not a `JobView`.
    pub async fn next_event(&mut self, timeout: Duration) -> Option<SseEvent> {
        let next = tokio::time::timeout(timeout, self.events.next()).await;
        self.comments = self.seen_comments.load(Ordering::Relaxed);
        match next.ok()?? {
            Ok(event) => {
                let event = SseEvent {
                    id: (!event.id.is_empty()).then_some(event.id),
                    event: event.event,
                    data: event.data,
                };
                check_job_view(&event);
                Some(event)
            }
            // A connection cut by the server (e.g. a gateway restart) ends the stream too.
            Err(EventStreamError::Transport(_)) => None,
            Err(e) => panic!("the event stream does not parse: {e}"),
        }
    }

    /// Every event until the stream ends (or `timeout` passes without one).
    pub async fn collect(&mut self, timeout: Duration) -> Vec<SseEvent> {
        let mut events = Vec::new();
        while let Some(event) = self.next_event(timeout).await {
            events.push(event);
        }
        events
    }
}

/// Panics, naming the event and the problems, unless its data is a job as the OpenAPI document
/// describes it (`#/components/schemas/JobView`).
fn check_job_view(event: &SseEvent) {
    let problems = serde_json::from_str(&event.data)
        .map_err(|e| format!("its data is not JSON: {e}"))
        .and_then(|data| openapi::schema_problems("JobView", &data));
    if let Err(problems) = problems {
        panic!("the event does not match the OpenAPI document's JobView: {event:?}\n{problems}");
    }
}
