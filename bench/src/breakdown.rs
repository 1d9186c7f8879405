//! The "where the time goes" tables: one `/predict` at concurrency 1 from the services' own
//! histograms, and one slow answer at light load from its record's timestamps.

use std::fmt::Write as _;

use serde::{Deserialize, Serialize};

use crate::{
    fast::{FAST, SLOW},
    report::Results,
    slow::JobsRun,
    stats::round3,
};

/// Where one job's time went, from the timestamps in its final record (every process shares
/// the machine's clock), milliseconds.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize)]
pub struct JobSpans {
    /// Submission to a worker starting it: JetStream publish, delivery, the worker's pickup.
    pub to_start: f64,
    /// The worker's slow model call (gRPC, decode, preprocessing, queueing, inference).
    pub model_call: f64,
    /// The rest of the worker's time before the result's write: reading the image, marking it
    /// `running` when that outlasts the call.
    pub worker_rest: f64,
    /// From the worker's result to its event at the client: the KV write, the gateway's watch,
    /// the SSE frame.
    pub to_event: f64,
}

impl JobSpans {
    /// Reads the spans from a final event's data; `None` if a field is missing.
    pub fn of(data: &str, at: time::OffsetDateTime) -> Option<Self> {
        let record: serde_json::Value = serde_json::from_str(data).ok()?;
        let stamp = |field: &str| {
            time::OffsetDateTime::parse(
                record[field].as_str()?,
                &time::format_description::well_known::Rfc3339,
            )
            .ok()
        };
        let ms = |d: time::Duration| d.as_seconds_f64() * 1000.0;
        let (submitted, started, finished) = (
            stamp("submitted_at")?,
            stamp("started_at")?,
            stamp("finished_at")?,
        );
        let model_call = record["slow"]["inference_ms"].as_f64()?;
        Some(Self {
            to_start: ms(started - submitted),
            model_call,
            worker_rest: ms(finished - started) - model_call,
            to_event: ms(at - finished),
        })
    }

    /// The mean of each span.
    pub fn mean(all: &[Self]) -> Option<Self> {
        let n = all.len() as f64;
        (!all.is_empty()).then(|| Self {
            to_start: round3(all.iter().map(|s| s.to_start).sum::<f64>() / n),
            model_call: round3(all.iter().map(|s| s.model_call).sum::<f64>() / n),
            worker_rest: round3(all.iter().map(|s| s.worker_rest).sum::<f64>() / n),
            to_event: round3(all.iter().map(|s| s.to_event).sum::<f64>() / n),
        })
    }
}

/// Where the time of one `/predict` goes at concurrency 1, from the services' own histograms.
pub fn fast(w: &mut String, r: &Results) {
    let Some(p) = r.point("chelsea", 1) else {
        return;
    };
    let floor = r.floor.as_ref();
    let ort_floor = floor
        .and_then(|f| f.of(FAST))
        .map_or(0.0, |f| f.latency.mean_ms);
    let prep = floor
        .and_then(|f| f.preprocess.iter().find(|p| p.image == "chelsea"))
        .map_or(0.0, |p| p.latency.mean_ms);
    let http = r.http_floor.as_ref().map_or(0.0, |h| h.mean_ms);
    let rows = [
        (
            "client round trip (the measured latency)",
            p.latency.mean_ms,
            String::new(),
        ),
        (
            "  outside the gateway's handler: HTTP, loopback, client",
            p.latency.mean_ms - p.gateway_ms_mean,
            format!("`GET /healthz` round trip: {http:.3} ms"),
        ),
        (
            "  everything but ONNX Runtime",
            p.latency.mean_ms - p.ort_batch_ms_mean,
            String::new(),
        ),
        (
            "  inside the gateway, to the response head",
            p.gateway_ms_mean,
            String::new(),
        ),
        (
            "    beyond the model call: body, JetStream (concurrent with the call), the KV update after it",
            p.gateway_ms_mean - p.model_call_ms_mean,
            String::new(),
        ),
        (
            "    the model call (gRPC, decode, preprocessing, inference)",
            p.model_call_ms_mean,
            String::new(),
        ),
        (
            "      beyond ONNX Runtime: gRPC, decode, preprocessing, queueing",
            p.model_call_ms_mean - p.ort_batch_ms_mean,
            String::new(),
        ),
        (
            "        decode + preprocessing in the model server",
            p.preprocess_ms_mean,
            format!("in-process, one thread, nothing else running: {prep:.2} ms"),
        ),
        (
            "        waiting in the model's queue",
            p.queue_ms_mean,
            String::new(),
        ),
        (
            "        the rest: gRPC both ways, thread hand-offs, the reply's top-k",
            p.model_call_ms_mean - p.ort_batch_ms_mean - p.preprocess_ms_mean - p.queue_ms_mean,
            String::new(),
        ),
        (
            "      ONNX Runtime in the model server",
            p.ort_batch_ms_mean,
            format!("in-process floor: {ort_floor:.2} ms"),
        ),
    ];
    let _ = writeln!(
        w,
        "\nWhere the time of one request goes (chelsea, concurrency 1, means from the services' own histograms):\n\n\
         | span | mean ms | compare with |\n|---|---|---|"
    );
    for (span, ms, compare) in rows {
        let _ = writeln!(
            w,
            "| {} | {ms:.2} | {compare} |",
            span.replace("  ", "&nbsp;&nbsp;")
        );
    }
}

/// Where the time of one slow answer goes at light load, from the jobs' final records.
pub fn slow(w: &mut String, r: &Results) {
    for light in r.slow_answer.iter().filter(|j| j.load.starts_with("light")) {
        if let Some(spans) = light.spans {
            slow_spans(w, r, light, spans);
        }
    }
}

fn slow_spans(w: &mut String, r: &Results, light: &JobsRun, spans: JobSpans) {
    let floor = r
        .floor
        .as_ref()
        .and_then(|f| f.of(SLOW))
        .map_or(0.0, |f| f.latency.mean_ms);
    let rows = [
        (
            "submission -> the worker marks it `running` (publish, delivery, a KV read and write)",
            spans.to_start,
            String::new(),
        ),
        (
            "`running` -> the result",
            spans.model_call + spans.worker_rest,
            String::new(),
        ),
        (
            "&nbsp;&nbsp;the slow model call, which starts with the marking (gRPC, decode, preprocessing, queueing, inference)",
            spans.model_call,
            format!("in-process ONNX Runtime alone, nothing else running: {floor:.2} ms"),
        ),
        (
            "the result -> its event at the client (KV write, the gateway's watch, SSE)",
            spans.to_event,
            String::new(),
        ),
    ];
    let _ = writeln!(
        w,
        "\nWhere the time of one slow answer goes ({}: means from each job's timestamps{}):\n\n\
         | span | mean ms | compare with |\n|---|---|---|",
        light.load,
        if light.fast_model == "null" {
            ""
        } else {
            "; the fast model runs on the same cores during the first part of the model call"
        }
    );
    for (span, ms, compare) in rows {
        let _ = writeln!(w, "| {span} | {ms:.2} | {compare} |");
    }
    let _ = writeln!(
        w,
        "| total | {:.2} | measured mean: {:.2} ms |",
        spans.to_start + spans.model_call + spans.worker_rest + spans.to_event,
        light.latency.mean_ms
    );
}
