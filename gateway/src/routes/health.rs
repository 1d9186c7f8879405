//! `GET /healthz` (the process is alive) and `GET /readyz` (it can do its work), answered by the
//! shared ops handlers (`tandem_core::ops`) with the gateway's own checks.

use tandem_core::ops::{Check, JetStreamPresence, Readiness};

use crate::state::AppState;

/// Alive: the process answers HTTP.
#[utoipa::path(get, path = "/healthz", tag = "meta",
    responses((status = 200, description = "Alive", body = tandem_core::ops::HealthReply)))]
pub async fn healthz() -> axum::Json<tandem_core::ops::HealthReply> {
    tandem_core::ops::healthz().await
}

/// Ready: NATS connected; the jobs stream and the records bucket present; the fast model
/// loaded. `consumer_present` (the workers' durable consumer) is reported but does not gate:
/// without workers, jobs wait durably in the stream and the fast path still works.
#[utoipa::path(get, path = "/readyz", tag = "meta",
    responses(
        (status = 200, description = "Ready. Checks: `nats_connected`, `jetstream_ready`, `stream_present`, `consumer_present` (reported only), `bucket_present`, `fast_model_ready`", body = tandem_core::ops::ReadyReply),
        (status = 503, description = "Not ready; the checks say why", body = tandem_core::ops::ReadyReply),
    ))]
pub async fn readyz(state: axum::extract::State<AppState>) -> tandem_core::ops::ReadyReply {
    tandem_core::ops::readyz(state).await
}

impl Readiness for AppState {
    async fn checks(&self) -> Vec<Check> {
        let jetstream = self.queue.jetstream();
        let present = async {
            match jetstream {
                Some(jetstream) => JetStreamPresence::check(&jetstream.js).await,
                None => JetStreamPresence::default(),
            }
        };
        let (fast_model, present) =
            tokio::join!(self.model.model_ready(&self.config.fast_model), present);
        vec![
            Check::gating("nats_connected", self.queue.connected()),
            Check::gating("jetstream_ready", jetstream.is_some()),
            Check::gating("stream_present", present.stream),
            Check::reported("consumer_present", present.consumer),
            Check::gating("bucket_present", present.bucket),
            Check::gating("fast_model_ready", fast_model),
        ]
    }
}
