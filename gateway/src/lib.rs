//! Tandem's gateway: the HTTP API in front of the fast model, the job queue and the results.
//!
//! Layout:
//! - `config`: `GatewayConfig`, from the environment;
//! - `error`: `ApiError`, the one mapping of failures to HTTP;
//! - `image_input`: request formats to checked image bytes (header-only size check);
//! - `queue`: JetStream: storing jobs, reaching job records;
//! - `hub`: one KV watcher fanned out to SSE streams;
//! - `routes`: the handlers (`page`, `predict`, `jobs`, `health`);
//! - `openapi`: the OpenAPI document generated from the handlers' annotations;
//! - `state`: `AppState`.
//!
//! [`run`] serves on a bound listener until the shutdown future resolves, then drains.

pub mod config;
pub mod error;
pub mod hub;
pub mod image_input;
pub mod openapi;
pub mod queue;
pub mod routes;
pub mod state;

use std::{future::Future, sync::Arc};

use axum::{
    Router,
    routing::{get, post},
};
use tandem_core::model_client::ModelClient;
use tokio::net::TcpListener;

pub use config::GatewayConfig;
pub use state::AppState;

/// The routes (the HTTP contract: see the README's API section).
pub fn router(state: AppState) -> Router {
    Router::new()
        .route("/", get(routes::page::index))
        .route("/assets/{file}", get(routes::page::page_asset))
        .route("/samples/{file}", get(routes::page::sample))
        .route("/predict", post(routes::predict::predict))
        .route(
            "/job/{id}",
            get(routes::jobs::get_job).delete(routes::jobs::cancel_job),
        )
        .route("/job/{id}/events", get(routes::jobs::job_events))
        .route("/healthz", get(routes::health::healthz))
        .route("/readyz", get(routes::health::readyz))
        .route("/openapi.json", get(openapi::serve))
        .route("/metrics", get(routes::metrics::metrics))
        .fallback(|| async { error::ApiError::NotFound })
        .layer(axum::middleware::from_fn(routes::metrics::track))
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
    let grace = config.shutdown_grace;
    let state = AppState {
        config: Arc::new(config),
        model,
        queue: queue.clone(),
        hub,
    };
    tracing::info!(addr = %listener.local_addr()?, "gateway listening");

    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let server = axum::serve(listener, router(state)).with_graceful_shutdown(async move {
        shutdown.await;
        let _ = stop_tx.send(true);
    });
    let mut stopped = stop_rx.clone();
    tokio::select! {
        result = server => result?,
        () = async {
            let _ = stopped.wait_for(|s| *s).await;
            tokio::time::sleep(grace).await;
        } => tracing::warn!(?grace, "drain took too long; closing open connections"),
    }
    watcher.abort();
    // Open SSE streams hold no job state: dropping them is safe; flush what was published.
    let _ = tokio::time::timeout(grace, queue.client.flush()).await;
    tracing::info!("gateway stopped");
    Ok(())
}
