//! `GET /healthz` (the process is alive) and `GET /readyz` (it can do its work).

use axum::{Json, extract::State, http::StatusCode};
use serde_json::{Value, json};

use crate::state::AppState;

/// Alive: the process answers HTTP.
#[utoipa::path(get, path = "/healthz", tag = "meta",
    responses((status = 200, description = "Alive")))]
pub async fn healthz() -> Json<Value> {
    Json(json!({ "status": "ok" }))
}

/// Ready: NATS connected, stream and buckets set up, the fast model loaded.
#[utoipa::path(get, path = "/readyz", tag = "meta",
    responses(
        (status = 200, description = "Ready", body = crate::openapi::ReadyReply),
        (status = 503, description = "Not ready; the checks say why", body = crate::openapi::ReadyReply),
    ))]
pub async fn readyz(State(state): State<AppState>) -> (StatusCode, Json<Value>) {
    let nats = state.queue.connected();
    let jetstream = state.queue.parts().is_some();
    let fast_model = state.model.model_ready(&state.config.fast_model).await;
    let ready = nats && jetstream && fast_model;
    let status = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (
        status,
        Json(json!({
            "ready": ready,
            "checks": {
                "nats_connected": nats,
                "jetstream_ready": jetstream,
                "fast_model_ready": fast_model,
            }
        })),
    )
}
