//! `GET /metrics` (Prometheus text), the layer that measures every request, and the span and
//! status that `tower_http`'s trace layer gives each one.

use std::time::{Duration, Instant};

use axum::{
    extract::{MatchedPath, State},
    http::{Request, Response},
    middleware::Next,
    response::IntoResponse,
};
use tandem_core::{nats as contract, telemetry};

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
    let Some(jetstream) = state.queue.jetstream() else {
        return;
    };
    let read = async {
        let stream = jetstream.js.get_stream(contract::JOBS_STREAM).await.ok()?;
        let info = stream.get_info().await.ok()?;
        metrics::gauge!("tandem_queue_messages").set(info.state.messages as f64);
        let consumer = stream.consumer_info(contract::WORKER_CONSUMER).await.ok()?;
        metrics::gauge!("tandem_queue_consumer_pending").set(consumer.num_pending as f64);
        metrics::gauge!("tandem_queue_consumer_ack_pending").set(consumer.num_ack_pending as f64);
        Some(())
    };
    let _ = tokio::time::timeout(std::time::Duration::from_secs(1), read).await;
}

/// The server span of each request (for `tower_http::trace::TraceLayer`): named by matched
/// route (never the raw path: ids would make a span name each), continuing the caller's trace
/// (W3C `traceparent`) when traces are exported.
pub fn request_span<B>(request: &Request<B>) -> tracing::Span {
    let route = route_of(request);
    let method = request.method().as_str();
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
    span
}

/// Puts the status in the request's span (for `TraceLayer::on_response`).
pub fn record_status<B>(response: &Response<B>, _latency: Duration, span: &tracing::Span) {
    span.record("http.response.status_code", response.status().as_u16());
}

/// Counts each request and times it to the response head, by matched route and status.
pub async fn track(request: axum::extract::Request, next: Next) -> axum::response::Response {
    let started = Instant::now();
    let route = route_of(&request).to_owned();
    let method = request.method().as_str().to_owned();
    let response = next.run(request).await;
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

fn route_of<B>(request: &Request<B>) -> &str {
    request
        .extensions()
        .get::<MatchedPath>()
        .map_or("unmatched", MatchedPath::as_str)
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
