//! `GET /metrics` (Prometheus text) and the layer that measures and traces every request.

use std::time::Instant;

use axum::{
    extract::{MatchedPath, Request, State},
    middleware::Next,
    response::{IntoResponse, Response},
};
use tandem_core::{nats as contract, telemetry};
use tracing::Instrument as _;

use crate::state::AppState;

/// Prometheus metrics of this process; the queue gauges are read from JetStream first.
#[utoipa::path(get, path = "/metrics", tag = "meta",
    responses((status = 200, description = "Prometheus text exposition format", content_type = "text/plain", body = String)))]
pub async fn metrics(State(state): State<AppState>) -> impl IntoResponse {
    refresh_queue_gauges(&state).await;
    tandem_core::metrics::metrics_route().await
}

/// Reads the work queue's depth from JetStream into gauges (left as they were if NATS is away).
async fn refresh_queue_gauges(state: &AppState) {
    let Some(parts) = state.queue.parts() else {
        return;
    };
    let read = async {
        let stream = parts.js.get_stream(contract::JOBS_STREAM).await.ok()?;
        let info = stream.get_info().await.ok()?;
        metrics::gauge!("tandem_queue_messages").set(info.state.messages as f64);
        let consumer = stream.consumer_info(contract::WORKER_CONSUMER).await.ok()?;
        metrics::gauge!("tandem_queue_consumer_pending").set(consumer.num_pending as f64);
        metrics::gauge!("tandem_queue_consumer_ack_pending").set(consumer.num_ack_pending as f64);
        Some(())
    };
    let _ = tokio::time::timeout(std::time::Duration::from_secs(1), read).await;
}

/// Counts each request and times it to the response head, by matched route (never the raw
/// path: ids would make a series each) and status; and runs it in a server span that continues
/// the caller's trace (W3C `traceparent`), when traces are exported.
pub async fn track(request: Request, next: Next) -> Response {
    let started = Instant::now();
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| "unmatched".to_owned(), |p| p.as_str().to_owned());
    let method = request.method().as_str().to_owned();
    let span = tracing::info_span!(
        "http.request",
        otel.name = %format_args!("{method} {route}"),
        otel.kind = "server",
        http.request.method = %method,
        http.route = %route,
        http.response.status_code = tracing::field::Empty,
    );
    let headers = request.headers();
    telemetry::set_remote_parent(&span, |name| {
        headers.get(name).and_then(|v| v.to_str().ok())
    });
    let response = next.run(request).instrument(span.clone()).await;
    span.record("http.response.status_code", response.status().as_u16());
    let labels = [
        ("method", method),
        ("route", route),
        ("status", response.status().as_u16().to_string()),
    ];
    metrics::counter!("tandem_http_requests_total", &labels).increment(1);
    metrics::histogram!("tandem_http_request_duration_seconds", &labels)
        .record(started.elapsed().as_secs_f64());
    response
}

/// Counts an open event stream while it lives.
#[derive(Debug)]
pub struct OpenStream(());

impl OpenStream {
    pub fn open() -> Self {
        metrics::gauge!("tandem_sse_open_streams").increment(1.0);
        Self(())
    }
}

impl Drop for OpenStream {
    fn drop(&mut self) {
        metrics::gauge!("tandem_sse_open_streams").decrement(1.0);
    }
}
