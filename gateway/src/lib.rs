//! Tandem's gateway: the HTTP API in front of the fast model, the job queue and the results.
//!
//! Layout:
//! - `config`: `GatewayConfig`, from the environment;
//! - `auth`: the optional API keys on the job routes;
//! - `error`: `ApiError`, the one mapping of failures to HTTP;
//! - `image_input`: request formats to checked image bytes (header-only size check);
//! - `job_options`: a submission's `escalate` and `deadline_ms`;
//! - `escalation`: which jobs go on to the slow model (thresholds, brownout, audit sample);
//! - `result_cache`: answers for an image seen before (lookup, checked against the models);
//! - `deadline`: jobs that end `expired` when their deadline passes;
//! - `queue`: JetStream: storing jobs, reaching job records;
//! - `hub`: one KV watcher fanned out to SSE streams (and `Prefer: wait` waits);
//! - `progress`: where queued jobs stand, the drain rate (consumer info, sampled on demand);
//! - `prefer`: the `Prefer` header (RFC 7240); `waiting`: `Prefer: wait=N`;
//! - `routes`: the handlers (`page`, `predict`, `jobs`, `health`);
//! - `replies`: every JSON reply, typed (the OpenAPI document is generated from them);
//! - `openapi`: the OpenAPI document generated from the handlers' annotations and replies;
//! - `state`: `AppState`;
//! - `serve`: connections (header-read and stalled-write timeouts, the drain);
//! - `webhook`: webhook requests checked (no SSRF), signed and delivered from JetStream.
//!
//! [`run`] serves on a bound listener until the shutdown future resolves, then drains.

pub mod auth;
pub mod config;
pub mod deadline;
pub mod error;
pub mod escalation;
pub mod hub;
pub mod image_input;
pub mod job_options;
pub mod openapi;
pub mod prefer;
pub mod progress;
pub mod queue;
pub mod replies;
pub mod result_cache;
pub mod routes;
pub mod serve;
pub mod state;
pub mod waiting;
pub mod webhook;

use std::{future::Future, sync::Arc};

use axum::{
    Router,
    middleware::{from_fn, from_fn_with_state},
    routing::{delete, get, post},
};
use tandem_core::model_client::ModelClient;
use tokio::net::TcpListener;
use tower_http::trace::TraceLayer;

pub use config::GatewayConfig;
pub use state::AppState;

/// The routes (the HTTP contract: see the README's API section).
pub fn router(state: AppState) -> Router {
    // Always open: the page and its files, health, metrics, this API's description.
    let open = Router::new()
        .route("/", get(routes::page::index))
        .route("/assets/{file}", get(routes::page::page_asset))
        .route("/samples/{file}", get(routes::page::sample))
        .route("/healthz", get(routes::health::healthz))
        .route("/readyz", get(routes::health::readyz))
        .route("/openapi.json", get(openapi::serve))
        .route("/metrics", get(routes::metrics::metrics));
    // A submit key, when keys are configured (see `auth`).
    let submit = Router::new()
        .route("/predict", post(routes::predict::predict))
        .route("/job/{id}", delete(routes::jobs::cancel_job))
        .route_layer(from_fn_with_state(state.clone(), auth::require_submit));
    // A read or submit key, when keys are configured.
    let read = Router::new()
        .route("/job/{id}", get(routes::jobs::get_job))
        .route("/job/{id}/events", get(routes::jobs::job_events))
        .route_layer(from_fn_with_state(state.clone(), auth::require_read));
    open.merge(submit)
        .merge(read)
        .fallback(|| async { error::ApiError::NotFound })
        .layer(from_fn(routes::metrics::track))
        .layer(from_fn(error::json_errors))
        .layer(
            TraceLayer::new_for_http()
                .make_span_with(routes::metrics::request_span)
                .on_request(())
                .on_response(routes::metrics::record_status)
                .on_failure(()),
        )
        .with_state(state)
}

/// Serves the gateway on `listener` until `shutdown` resolves, then drains open requests for at
/// most the configured grace period and flushes the NATS connection.
pub async fn run(
    listener: TcpListener,
    config: GatewayConfig,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    tandem_core::metrics::init();
    let model = ModelClient::new(&config.model_server_url, config.fast_timeout)?;
    let queue = queue::Queue::start(&config.nats, config.publish_timeout).await?;
    let hub = hub::JobHub::default();
    let watcher = tokio::spawn(hub.clone().run_watcher(queue.clone()));
    let monitor = tokio::spawn(queue.progress.clone().run());
    let (begin_drain, draining) = tokio::sync::watch::channel(false);
    let shutdown = async move {
        shutdown.await;
        let _ = begin_drain.send(true);
    };
    // Webhook deliveries: a task on the shared durable consumer, when webhooks are on.
    let webhooks = config.webhooks.enabled().then(|| {
        tokio::spawn(webhook::deliver::run(
            queue.clone(),
            Arc::new(config.webhooks.clone()),
            config.nats.clone(),
        ))
    });
    let limits = serve::Limits {
        header_read_timeout: config.header_read_timeout,
        stalled_write_timeout: config.stalled_write_timeout,
        grace: config.shutdown_grace,
    };
    log_access_control(&config.api_keys);
    let state = AppState {
        escalation: escalation::Escalation::new(config.escalation.clone()),
        config: Arc::new(config),
        model,
        queue: queue.clone(),
        hub,
        draining,
    };
    tracing::info!(addr = %listener.local_addr()?, "gateway listening");

    serve::serve(listener, router(state), limits, shutdown).await;
    watcher.abort();
    monitor.abort();
    // Deliveries in flight stay unacknowledged: JetStream redelivers them to a gateway.
    if let Some(webhooks) = webhooks {
        webhooks.abort();
    }
    // Open SSE streams hold no job state: dropping them is safe; flush what was published.
    let _ = tokio::time::timeout(limits.grace, queue.client.flush()).await;
    tracing::info!("gateway stopped");
    Ok(())
}

/// Says at start whether the job routes need keys (never the keys themselves).
fn log_access_control(keys: &auth::ApiKeys) {
    if keys.enabled() {
        let (submit_keys, read_keys) = keys.counts();
        tracing::info!(
            submit_keys,
            read_keys,
            "API keys required on POST /predict, GET/DELETE /job/<id> and /job/<id>/events"
        );
    } else {
        tracing::warn!(
            "no API keys configured (TANDEM_API_KEYS_SUBMIT, TANDEM_API_KEYS_READ): \
             anyone who can reach the gateway may submit and read jobs"
        );
    }
}
