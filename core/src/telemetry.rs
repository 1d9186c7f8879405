//! One place where every Tandem binary sets up logging and tracing.
//!
//! - Logs: `RUST_LOG` filters (default `info`; `TANDEM_TRACE_FILTER` filters exported spans the
//!   same way); `TANDEM_LOG_FORMAT=json` switches to JSON lines
//!   for log shippers.
//! - Traces: when `OTEL_EXPORTER_OTLP_ENDPOINT` (or `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`) is set,
//!   spans are exported over OTLP/gRPC with the standard `OTEL_*` variables (service name,
//!   resource attributes, sampler, batch settings, headers, timeout). When it is not set, no
//!   OpenTelemetry layer is installed at all: spans cost what plain `tracing` costs, and the
//!   propagation helpers below return at once.
//! - Propagation: W3C trace context (`traceparent`, `tracestate`) through HTTP headers, gRPC
//!   metadata and NATS message headers, so one request is one trace across the queue.
//!
//! [`init`] is safe to call more than once (tests start several services in one process); it
//! must run inside the Tokio runtime, as the gRPC exporter's channel lives there.

use std::{
    collections::HashMap,
    sync::atomic::{AtomicBool, Ordering},
};

use opentelemetry::{
    Context,
    propagation::TextMapPropagator as _,
    trace::{TraceContextExt as _, TracerProvider as _},
};
use opentelemetry_sdk::{Resource, propagation::TraceContextPropagator, trace::SdkTracerProvider};
use tracing_opentelemetry::OpenTelemetrySpanExt as _;
use tracing_subscriber::{EnvFilter, Layer, fmt, prelude::*};

/// The W3C trace-context header names (HTTP, gRPC metadata and NATS headers alike).
pub const TRACEPARENT: &str = "traceparent";
pub const TRACESTATE: &str = "tracestate";

/// Whether spans are being exported (and so worth propagating).
static EXPORTING: AtomicBool = AtomicBool::new(false);

/// What [`init`] set up; call [`Telemetry::shutdown`] before exiting to flush buffered spans.
#[derive(Debug, Default)]
#[must_use = "call shutdown() before exiting so buffered spans are exported"]
pub struct Telemetry {
    provider: Option<SdkTracerProvider>,
}

impl Telemetry {
    /// Exports what is buffered and stops the exporter (at most the exporter's timeout).
    pub async fn shutdown(self) {
        if let Some(provider) = self.provider {
            // `shutdown` blocks until the export thread is done; keep it off the async workers.
            let _ = tokio::task::spawn_blocking(move || {
                if let Err(e) = provider.shutdown() {
                    eprintln!("telemetry: could not flush spans: {e}");
                }
            })
            .await;
        }
    }
}

/// Installs the global subscriber for `service`; later calls are no-ops.
pub fn init(service: &'static str) -> Telemetry {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let json = std::env::var("TANDEM_LOG_FORMAT").is_ok_and(|v| v.eq_ignore_ascii_case("json"));
    let logs = if json {
        fmt::layer().json().with_current_span(true).boxed()
    } else {
        // Colour only for a person at a terminal: log files and collectors get plain text.
        let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr())
            && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty());
        fmt::layer()
            .compact()
            .with_ansi(ansi)
            .with_writer(std::io::stderr)
            .boxed()
    };
    let (provider, problem) = match otlp_requested() {
        Ok(true) => match tracer_provider(service) {
            Ok(provider) => (Some(provider), None),
            Err(e) => (None, Some(format!("OTLP export disabled: {e}"))),
        },
        Ok(false) => (None, None),
        Err(e) => (None, Some(e)),
    };
    let traces = provider.as_ref().map(|provider| {
        tracing_opentelemetry::layer()
            .with_tracer(provider.tracer(service))
            // Its own filter: quiet logs (RUST_LOG=warn) must not thin out the traces.
            .with_filter(
                EnvFilter::try_from_env("TANDEM_TRACE_FILTER").unwrap_or_else(|_| "info".into()),
            )
    });
    let installed = tracing_subscriber::registry()
        .with(logs.with_filter(filter))
        .with(traces)
        .try_init()
        .is_ok();
    if let Some(problem) = problem {
        tracing::warn!("{problem}");
    }
    if !installed {
        return Telemetry::default();
    }
    if provider.is_some() {
        EXPORTING.store(true, Ordering::Relaxed);
        tracing::info!(service, "exporting traces over OTLP/gRPC");
    }
    Telemetry { provider }
}

/// Whether the `OTEL_*` environment asks for OTLP trace export; an error names a setting that
/// cannot be honoured.
fn otlp_requested() -> Result<bool, String> {
    let set = |name: &str| std::env::var(name).is_ok_and(|v| !v.trim().is_empty());
    let value = |name: &str| std::env::var(name).unwrap_or_default().to_ascii_lowercase();
    if value("OTEL_SDK_DISABLED") == "true" || value("OTEL_TRACES_EXPORTER") == "none" {
        return Ok(false);
    }
    if !set("OTEL_EXPORTER_OTLP_ENDPOINT") && !set("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT") {
        return Ok(false);
    }
    for name in [
        "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL",
        "OTEL_EXPORTER_OTLP_PROTOCOL",
    ] {
        let protocol = value(name);
        if !protocol.is_empty() && protocol != "grpc" {
            return Err(format!(
                "{name}={protocol} is not supported: Tandem exports OTLP over gRPC \
                 (a collector's port 4317); unset it or set it to grpc"
            ));
        }
    }
    Ok(true)
}

fn tracer_provider(service: &'static str) -> Result<SdkTracerProvider, String> {
    use opentelemetry_otlp::WithExportConfig as _;
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_tonic()
        .with_protocol(opentelemetry_otlp::Protocol::Grpc)
        .build()
        .map_err(|e| e.to_string())?;
    // OTEL_SERVICE_NAME and OTEL_RESOURCE_ATTRIBUTES win over the binary's own name.
    let mut resource = Resource::builder();
    if std::env::var_os("OTEL_SERVICE_NAME").is_none() {
        resource = resource.with_service_name(service);
    }
    Ok(SdkTracerProvider::builder()
        .with_batch_exporter(exporter)
        .with_resource(resource.build())
        .build())
}

/// Whether trace context is worth reading or writing (an exporter is installed).
pub fn exporting() -> bool {
    EXPORTING.load(Ordering::Relaxed)
}

/// The W3C headers (`traceparent`, and `tracestate` if any) of `span`, to send downstream.
/// Empty when not exporting or the span is not sampled into a trace.
pub fn trace_headers(span: &tracing::Span) -> Vec<(&'static str, String)> {
    if !exporting() {
        return Vec::new();
    }
    let mut carrier = HashMap::new();
    TraceContextPropagator::new().inject_context(&span.context(), &mut carrier);
    [TRACEPARENT, TRACESTATE]
        .into_iter()
        .filter_map(|name| carrier.remove(name).map(|value| (name, value)))
        .collect()
}

/// The `traceparent` of `span` (see [`trace_headers`]).
pub fn traceparent(span: &tracing::Span) -> Option<String> {
    trace_headers(span)
        .into_iter()
        .find_map(|(name, value)| (name == TRACEPARENT).then_some(value))
}

/// Makes `span` a child of the remote span that `get` finds in incoming headers (HTTP, gRPC
/// metadata or NATS headers: `get` reads one header by name). Call it before entering `span`.
/// Headers without a valid `traceparent` leave `span` where it was.
pub fn set_remote_parent<'a>(span: &tracing::Span, get: impl Fn(&str) -> Option<&'a str>) {
    if !exporting() {
        return;
    }
    let carrier: HashMap<String, String> = [TRACEPARENT, TRACESTATE]
        .into_iter()
        .filter_map(|name| get(name).map(|value| (name.to_owned(), value.to_owned())))
        .collect();
    let parent: Context = TraceContextPropagator::new().extract(&carrier);
    if parent.span().span_context().is_valid() {
        let _ = span.set_parent(parent);
    }
}

/// Trace headers of the current span as gRPC metadata (for [`crate::model_client`]).
pub fn inject_grpc(span: &tracing::Span, metadata: &mut tonic::metadata::MetadataMap) {
    for (name, value) in trace_headers(span) {
        if let Ok(value) = value.parse() {
            metadata.insert(name, value);
        }
    }
}

/// Continues the trace that a gRPC request's metadata carries.
pub fn set_grpc_parent(span: &tracing::Span, metadata: &tonic::metadata::MetadataMap) {
    set_remote_parent(span, |name| {
        metadata.get(name).and_then(|v| v.to_str().ok())
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nothing_is_propagated_when_not_exporting() {
        // No exporter in unit tests: the helpers must be free and inert.
        let span = tracing::info_span!("x");
        assert!(trace_headers(&span).is_empty());
        assert_eq!(traceparent(&span), None);
        let mut metadata = tonic::metadata::MetadataMap::new();
        inject_grpc(&span, &mut metadata);
        assert!(metadata.is_empty());
    }
}
