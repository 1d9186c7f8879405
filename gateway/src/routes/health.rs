//! `GET /healthz` (the process is alive) and `GET /readyz` (it can do its work).

use axum::{Json, extract::State, http::StatusCode};
use serde_json::{Map, Value, json};

use crate::state::AppState;

/// Alive: the process answers HTTP.
#[utoipa::path(get, path = "/healthz", tag = "meta",
    responses((status = 200, description = "Alive")))]
pub async fn healthz() -> Json<Value> {
    Json(json!({ "status": "ok" }))
}

/// Ready: NATS connected; the jobs stream and the records bucket present; the fast model
/// loaded. `consumer_present` (the workers' durable consumer) is reported but does not gate:
/// without workers, jobs wait durably in the stream and the fast path still works.
#[utoipa::path(get, path = "/readyz", tag = "meta",
    responses(
        (status = 200, description = "Ready", body = crate::openapi::ReadyReply),
        (status = 503, description = "Not ready; the checks say why", body = crate::openapi::ReadyReply),
    ))]
pub async fn readyz(State(state): State<AppState>) -> (StatusCode, Json<Value>) {
    let nats = state.queue.connected();
    let parts = state.queue.parts();
    let present = async {
        match parts {
            Some(parts) => Some(tandem_core::metrics::jetstream_checks(&parts.js).await),
            None => None,
        }
    };
    let (fast_model, present) =
        tokio::join!(state.model.model_ready(&state.config.fast_model), present);
    let mut checks = Map::new();
    checks.insert("nats_connected".into(), nats.into());
    checks.insert("jetstream_ready".into(), parts.is_some().into());
    let mut ready = nats && parts.is_some() && fast_model;
    for (name, ok) in present.unwrap_or([
        ("stream_present", false),
        ("consumer_present", false),
        ("bucket_present", false),
    ]) {
        checks.insert(name.into(), ok.into());
        if name != "consumer_present" {
            ready &= ok;
        }
    }
    checks.insert("fast_model_ready".into(), fast_model.into());
    let status = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (
        status,
        Json(json!({ "ready": ready, "checks": Value::Object(checks) })),
    )
}
