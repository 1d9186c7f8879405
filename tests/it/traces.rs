//! Traces: one `/predict` is one OpenTelemetry trace across the gateway, the queue, a worker
//! and the model server, exported over OTLP when `OTEL_EXPORTER_OTLP_ENDPOINT` is set.
//!
//! The three services run as real processes (each installs its own exporter), pointed at a
//! small OTLP receiver in the test.

use std::{
    collections::HashMap,
    time::{Duration, Instant},
};

use crate::support::{
    gateway::Gateway,
    nats::{NatsServer, free_port},
    otlp::{OtlpReceiver, ReceivedSpan},
    photo,
    process::ServiceProcess,
    workspace_root,
};

/// The spans of one trace, by span id.
struct Trace(HashMap<Vec<u8>, ReceivedSpan>);

impl Trace {
    /// The one span named `name` from `service` that `filter` accepts.
    fn find(
        &self,
        service: &str,
        name: &str,
        filter: impl Fn(&ReceivedSpan) -> bool,
    ) -> &ReceivedSpan {
        let found: Vec<_> = self
            .0
            .values()
            .filter(|s| s.service == service && s.name == name && filter(s))
            .collect();
        assert_eq!(
            found.len(),
            1,
            "expected one {service} span {name:?}, found {}; spans: {:#?}",
            found.len(),
            self.summary()
        );
        found[0]
    }

    /// Whether `ancestor` is `span` or above it.
    fn descends_from(&self, span: &ReceivedSpan, ancestor: &ReceivedSpan) -> bool {
        let mut current = Some(span);
        while let Some(s) = current {
            if s.span_id == ancestor.span_id {
                return true;
            }
            current = self.0.get(&s.parent_span_id);
        }
        false
    }

    fn summary(&self) -> Vec<String> {
        let mut lines: Vec<_> = self
            .0
            .values()
            .map(|s| {
                format!(
                    "{} {} {} <- {}",
                    s.service,
                    s.name,
                    hex(&s.span_id),
                    hex(&s.parent_span_id)
                )
            })
            .collect();
        lines.sort();
        lines
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Whether the slow path's last span (the SSE delivery of `succeeded`) has arrived.
fn complete(spans: &[ReceivedSpan]) -> bool {
    spans.iter().any(|s| {
        s.name == "sse.deliver"
            && s.attributes.get("status").map(String::as_str) == Some("succeeded")
    }) && spans
        .iter()
        .filter(|s| s.service == "tandem-model-server" && s.name == "ModelInfer")
        .count()
        >= 2
}

#[tokio::test]
async fn one_predict_is_one_trace_from_the_http_request_to_the_sse_delivery() {
    let receiver = OtlpReceiver::start().await;
    let nats = NatsServer::start();
    let (model_port, gateway_port, worker_port) = (free_port(), free_port(), free_port());
    let otel = |service: &str| {
        vec![
            ("OTEL_EXPORTER_OTLP_ENDPOINT", receiver.endpoint.clone()),
            ("OTEL_BSP_SCHEDULE_DELAY", "100".to_owned()),
            ("OTEL_SERVICE_NAME", service.to_owned()),
            ("TANDEM_NATS_URL", nats.url()),
            (
                "TANDEM_MODEL_SERVER_URL",
                format!("http://127.0.0.1:{model_port}"),
            ),
        ]
    };
    let mut model_env = otel("tandem-model-server");
    model_env.extend([
        (
            "TANDEM_MODEL_REPOSITORY",
            workspace_root().join("models").display().to_string(),
        ),
        (
            "TANDEM_MODEL_SERVER_ADDR",
            format!("127.0.0.1:{model_port}"),
        ),
        ("TANDEM_MODEL_SERVER_METRICS_ADDR", "127.0.0.1:0".to_owned()),
    ]);
    let mut gateway_env = otel("tandem-gateway");
    gateway_env.push(("TANDEM_GATEWAY_ADDR", format!("127.0.0.1:{gateway_port}")));
    let mut worker_env = otel("tandem-slow-worker");
    worker_env.push((
        "TANDEM_WORKER_HTTP_ADDR",
        format!("127.0.0.1:{worker_port}"),
    ));
    let _model_server = ServiceProcess::spawn("tandem-model-server", &model_env);
    let _gateway = ServiceProcess::spawn("tandem-gateway", &gateway_env);
    let _worker = ServiceProcess::spawn("tandem-slow-worker", &worker_env);

    let gateway = Gateway::new(
        &format!("http://127.0.0.1:{gateway_port}"),
        reqwest::Client::new(),
    );
    gateway.wait_ready_for(Duration::from_secs(90)).await;
    // The worker too (the slow model loaded), so the job runs once: one consumer span.
    Gateway::new(
        &format!("http://127.0.0.1:{worker_port}"),
        reqwest::Client::new(),
    )
    .wait_ready_for(Duration::from_secs(90))
    .await;

    // The caller's own trace context: the gateway must continue it, not start another.
    let trace_id: [u8; 16] = rand_bytes();
    let caller_span: [u8; 8] = rand_bytes();
    let traceparent = format!("00-{}-{}-01", hex(&trace_id), hex(&caller_span));
    let reply = gateway
        .http
        .post(gateway.url("/predict"))
        .header("content-type", "image/jpeg")
        .header("traceparent", &traceparent)
        .body(photo("chelsea.jpg"))
        .send()
        .await
        .unwrap();
    assert_eq!(reply.status(), 200);
    let body: serde_json::Value = reply.json().await.unwrap();
    let job_id = body["job_id"].as_str().unwrap().to_owned();
    let mut events = gateway.events(&job_id).await;
    let mut succeeded = false;
    while let Some(event) = events.next_event(Duration::from_secs(30)).await {
        if event.event == "succeeded" {
            succeeded = true;
            break;
        }
    }
    assert!(succeeded, "the job did not succeed");

    // Spans arrive in batches (every 100 ms here): wait for the last one of the path.
    let deadline = Instant::now() + Duration::from_secs(20);
    let spans = loop {
        let spans = receiver.trace(&trace_id);
        if complete(&spans) || Instant::now() > deadline {
            break spans;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let trace = Trace(spans.into_iter().map(|s| (s.span_id.clone(), s)).collect());
    let is = |key: &'static str, value: &'static str| {
        move |s: &ReceivedSpan| s.attributes.get(key).map(String::as_str) == Some(value)
    };
    let any = |_: &ReceivedSpan| true;

    // Gateway: the HTTP server span continues the caller's span...
    let http = trace.find("tandem-gateway", "POST /predict", any);
    assert_eq!(
        http.parent_span_id,
        caller_span.to_vec(),
        "{:#?}",
        trace.summary()
    );
    // ... the fast call is its child, and the model server continues it.
    let fast_call = trace.find(
        "tandem-gateway",
        "ModelInfer",
        is("model", "efficientnet_lite0"),
    );
    assert!(trace.descends_from(fast_call, http));
    let fast_infer = trace.find(
        "tandem-model-server",
        "ModelInfer",
        is("model", "efficientnet_lite0"),
    );
    assert_eq!(fast_infer.parent_span_id, fast_call.span_id);
    // ... the publish is its child too, and the worker's consumer span is the publish's child.
    let publish = trace.find("tandem-gateway", "jobs.publish", any);
    assert!(trace.descends_from(publish, http));
    let process = trace.find("tandem-slow-worker", "jobs.process", any);
    assert_eq!(process.parent_span_id, publish.span_id);
    assert_eq!(process.attributes.get("job_id"), Some(&job_id));
    // Worker: the slow call, continued by the model server.
    let slow_call = trace.find(
        "tandem-slow-worker",
        "ModelInfer",
        is("model", "efficientnet_lite2"),
    );
    assert!(trace.descends_from(slow_call, process));
    let slow_infer = trace.find(
        "tandem-model-server",
        "ModelInfer",
        is("model", "efficientnet_lite2"),
    );
    assert_eq!(slow_infer.parent_span_id, slow_call.span_id);
    // The worker's writes (`running`, then the result)...
    let worker_writes: Vec<_> = trace
        .0
        .values()
        .filter(|s| s.service == "tandem-slow-worker" && s.name == "kv.update")
        .collect();
    assert!(worker_writes.len() >= 2, "{:#?}", trace.summary());
    assert!(
        worker_writes
            .iter()
            .all(|w| trace.descends_from(w, process))
    );
    // ... and the SSE delivery of `succeeded` hangs off the KV write of the version it sent:
    // the worker's, or the gateway's when adding the fast answer came last (the slow model
    // can beat the fast reply).
    let delivery = trace.find("tandem-gateway", "sse.deliver", is("status", "succeeded"));
    let write = &trace.0[&delivery.parent_span_id];
    assert_eq!(write.name, "kv.update", "{:#?}", trace.summary());
    assert!(
        trace.descends_from(write, process) || trace.descends_from(write, http),
        "{:#?}",
        trace.summary()
    );
}

/// `N` random bytes (a v4 UUID's, enough for trace and span ids).
fn rand_bytes<const N: usize>() -> [u8; N] {
    let uuid = tandem_core::job::JobId::new().to_string().replace('-', "");
    let mut out = [0u8; N];
    for (i, byte) in out.iter_mut().enumerate() {
        *byte = u8::from_str_radix(&uuid[i * 2..i * 2 + 2], 16).unwrap();
    }
    out
}
