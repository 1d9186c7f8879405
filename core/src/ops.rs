//! The ops endpoints of every service: `/healthz`, `/readyz` and `/metrics`, the one readiness
//! report behind each `/readyz`, and the listener that serves them beside a service's own port.
//!
//! The gateway answers these routes on its API port; the slow-worker and the model server on a
//! port of their own ([`spawn`]). All three build their `/readyz` from [`Check`]s through
//! [`ReadyReply`], so the shape and the rule (ready when every gating check passes) are the same.

use std::{collections::BTreeMap, future::Future, sync::Arc, time::Duration};

use axum::{
    Json, Router,
    extract::State,
    http::StatusCode,
    response::{IntoResponse, Response},
    routing::get,
};
use serde::{Deserialize, Serialize};
use tokio::net::TcpListener;
use tokio_util::task::AbortOnDropHandle;

use crate::{metrics, nats as contract, shutdown::Shutdown};

/// One thing a service needs (or reports) to do its work.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Check {
    pub name: &'static str,
    pub ok: bool,
    /// Whether a failing check makes the service not ready; one that does not is only
    /// reported (the gateway's view of the workers' consumer, say).
    pub gating: bool,
}

impl Check {
    /// A check that readiness needs.
    pub fn gating(name: &'static str, ok: bool) -> Self {
        Self {
            name,
            ok,
            gating: true,
        }
    }

    /// A check that is reported but does not decide readiness.
    pub fn reported(name: &'static str, ok: bool) -> Self {
        Self {
            name,
            ok,
            gating: false,
        }
    }
}

/// Something that can say whether its service is ready.
pub trait Readiness: Send + Sync + 'static {
    fn checks(&self) -> impl Future<Output = Vec<Check>> + Send;
}

impl<R: Readiness> Readiness for Arc<R> {
    fn checks(&self) -> impl Future<Output = Vec<Check>> + Send {
        (**self).checks()
    }
}

/// `GET /readyz`: 200 when ready, 503 when not, with every check by name.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ReadyReply {
    /// Every gating check passes.
    pub ready: bool,
    /// Each check by name; the service's documentation says which ones gate.
    pub checks: BTreeMap<String, bool>,
}

impl ReadyReply {
    pub fn from_checks(checks: &[Check]) -> Self {
        Self {
            ready: checks.iter().all(|c| c.ok || !c.gating),
            checks: checks.iter().map(|c| (c.name.to_owned(), c.ok)).collect(),
        }
    }
}

impl IntoResponse for ReadyReply {
    fn into_response(self) -> Response {
        let status = if self.ready {
            StatusCode::OK
        } else {
            StatusCode::SERVICE_UNAVAILABLE
        };
        (status, Json(self)).into_response()
    }
}

/// `GET /healthz`: the process answers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct HealthReply {
    /// Always `"ok"`.
    pub status: String,
}

/// The `/healthz` handler.
pub async fn healthz() -> Json<HealthReply> {
    Json(HealthReply {
        status: "ok".into(),
    })
}

/// The `/readyz` handler, for any router whose state is a [`Readiness`].
pub async fn readyz<R: Readiness + Clone>(State(readiness): State<R>) -> ReadyReply {
    ReadyReply::from_checks(&readiness.checks().await)
}

/// The ops routes on their own: `/metrics`, `/healthz`, `/readyz`.
pub fn router<R: Readiness + Clone>(readiness: R) -> Router {
    Router::new()
        .route("/metrics", get(metrics::metrics_route))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz::<R>))
        .with_state(readiness)
}

/// Serves [`router`] on `listener` in a task of its own until `shutdown` resolves, then lets
/// open requests finish. The task is aborted if the handle is dropped first (the service
/// stopped early, with an error).
pub fn spawn<R: Readiness + Clone>(
    service: &'static str,
    listener: TcpListener,
    readiness: R,
    shutdown: Shutdown,
) -> std::io::Result<AbortOnDropHandle<()>> {
    metrics::init();
    let addr = listener.local_addr()?;
    tracing::info!(%addr, "{service} ops listener (/metrics, /healthz, /readyz)");
    let app = router(readiness);
    Ok(AbortOnDropHandle::new(tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, app)
            .with_graceful_shutdown(shutdown)
            .await
        {
            tracing::warn!(error = %e, "ops listener failed");
        }
    })))
}

/// Which parts of the NATS contract exist right now (one JetStream API call each, all within
/// a second; all false when NATS does not answer). Set-up once is not enough: a stream can be
/// deleted, or lost with its server.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct JetStreamPresence {
    pub stream: bool,
    pub consumer: bool,
    pub bucket: bool,
}

impl JetStreamPresence {
    pub async fn check(js: &async_nats::jetstream::Context) -> Self {
        let check = async {
            let stream = js.get_stream(contract::JOBS_STREAM).await.ok();
            let consumer = match &stream {
                Some(stream) => stream
                    .consumer_info(contract::WORKER_CONSUMER)
                    .await
                    .is_ok(),
                None => false,
            };
            let bucket = js.get_key_value(contract::JOBS_BUCKET).await.is_ok();
            Self {
                stream: stream.is_some(),
                consumer,
                bucket,
            }
        };
        tokio::time::timeout(Duration::from_secs(1), check)
            .await
            .unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_gating_checks_decide_readiness() {
        let reply = ReadyReply::from_checks(&[
            Check::gating("nats_connected", true),
            Check::reported("consumer_present", false),
        ]);
        assert!(reply.ready);
        assert!(!reply.checks["consumer_present"]);

        let reply = ReadyReply::from_checks(&[
            Check::gating("nats_connected", false),
            Check::reported("consumer_present", true),
        ]);
        assert!(!reply.ready);
    }
}
