//! An Open Inference Protocol (KServe v2) gRPC model server for ONNX image classifiers.
//!
//! It serves every model of a model repository folder on ONNX Runtime, takes either encoded
//! images (BYTES, decoded and preprocessed here) or prepared FP32 tensors, batches concurrent
//! requests per model, and implements Triton's classification extension.
//!
//! Layout:
//! - `config`: [`ModelServerConfig`], the binary's settings from the environment;
//! - `repository`: the model repository, each model's `config.toml` (read and checked in
//!   `repository/config_file.rs`) and labels;
//! - `runtime`: finding and loading the ONNX Runtime library, once per process;
//! - `digest`: each model's identity digest, reported to clients as `model_digest`;
//! - `registry`: the served models by name, readiness, background loading;
//! - `runner`: one thread per model owning its session (created, checked and run in
//!   `runner/session.rs`), with dynamic batching;
//! - `decode`: encoded bytes to RGB8, with the pixel limit checked before decoding, EXIF
//!   orientation applied, JPEGs at the smallest DCT scale the model needs (`decode/jpeg.rs`);
//! - `decode_cache`: [`decode_cache::DecodeCache`], the cache of recently decoded images, so
//!   the fast and slow requests for one image decode it once;
//! - `preprocess`: crop, resize, scale and lay out into the input tensor;
//! - `classify`: softmax and top-k as `score:index:label` strings;
//! - `request`: reading a `ModelInferRequest`, writing the response;
//! - `service`: the gRPC service;
//! - `drain`: stopping the gRPC server within the shutdown grace period;
//! - `error`: [`ModelError`] and its one conversion to `tonic::Status`.
//!
//! [`run`] serves on a listener until a shutdown future resolves.

pub mod classify;
pub mod config;
pub mod decode;
pub mod decode_cache;
pub mod digest;
pub mod drain;
pub mod error;
pub mod preprocess;
pub mod registry;
pub mod repository;
pub mod request;
pub mod runner;
pub mod runtime;
pub mod scheduler;
pub mod service;

use std::{future::Future, path::PathBuf, sync::Arc};

use anyhow::Context;
use tandem_core::shutdown::Shutdown;
use tandem_proto::{GrpcInferenceServiceServer, MAX_MESSAGE_BYTES};
use tokio::{sync::oneshot, task::JoinHandle};
use tonic::transport::{Server, server::TcpIncoming};

pub use config::ModelServerConfig;
pub use error::ModelError;

/// Serves the models of `config.model_repository` on `listener` until `shutdown` resolves.
///
/// The repository's configuration is read and validated first (errors are returned at once),
/// then the server answers while ONNX Runtime and the models load in the background:
/// ServerLive is true from the start, ServerReady and ModelReady once the models are loaded.
/// A model that fails to load stops the server with that error. After `shutdown`, requests in
/// flight get `config.shutdown_grace` to finish; connections still open then are closed.
pub async fn run(
    listener: tokio::net::TcpListener,
    config: ModelServerConfig,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    run_with_ops(listener, None, config, shutdown).await
}

/// Ready when every model is loaded.
#[derive(Clone)]
struct ModelsReady(Arc<registry::Registry>);

impl tandem_core::ops::Readiness for ModelsReady {
    async fn checks(&self) -> Vec<tandem_core::ops::Check> {
        vec![tandem_core::ops::Check::gating(
            "models_loaded",
            self.0.is_ready(),
        )]
    }
}

/// [`run`], also serving `/metrics`, `/healthz` and `/readyz` (ready once every model is
/// loaded) on `ops` (the binary binds `TANDEM_MODEL_SERVER_METRICS_ADDR`).
pub async fn run_with_ops(
    listener: tokio::net::TcpListener,
    ops: Option<tokio::net::TcpListener>,
    config: ModelServerConfig,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    tandem_core::metrics::init();
    let shutdown = tandem_core::shutdown::shared(shutdown);
    let dylib = runtime::resolve_dylib(config.ort_dylib_path.as_deref())?;
    let specs = repository::load_repository(&config.model_repository)?;
    let registry = Arc::new(registry::Registry::new(specs, config.inference_threads));
    let _ops = ops
        .map(|ops| {
            tandem_core::ops::spawn(
                "model server",
                ops,
                ModelsReady(registry.clone()),
                shutdown.clone(),
            )
        })
        .transpose()?;
    let addr = listener
        .local_addr()
        .context("the listener has no address")?;
    tracing::info!(
        %addr,
        repository = %config.model_repository.display(),
        models = ?registry.names(),
        "model server listening; loading models"
    );
    let loading = load_in_background(registry.clone(), dylib);
    let (failed_tx, failed) = oneshot::channel();
    let stop = tandem_core::shutdown::shared(stop_signal(shutdown, loading, failed_tx));
    serve_grpc(listener, registry, &config, stop)
        .await
        .context("the gRPC server failed")?;
    if let Ok(error) = failed.await {
        return Err(error.context("loading the models failed"));
    }
    tracing::info!("model server stopped");
    Ok(())
}

/// Loads ONNX Runtime and every model on a task of its own.
fn load_in_background(
    registry: Arc<registry::Registry>,
    dylib: PathBuf,
) -> JoinHandle<anyhow::Result<()>> {
    tokio::spawn(async move {
        let started = std::time::Instant::now();
        registry.load_all(dylib).await?;
        tracing::info!(
            ms = started.elapsed().as_millis(),
            "all models loaded; ready"
        );
        anyhow::Ok(())
    })
}

/// Resolves when the server must stop: on `shutdown`, or once `loading` has failed (its error
/// sent on `failed`).
async fn stop_signal(
    shutdown: Shutdown,
    loading: JoinHandle<anyhow::Result<()>>,
    failed: oneshot::Sender<anyhow::Error>,
) {
    tokio::pin!(shutdown);
    tokio::select! {
        () = &mut shutdown => return,
        loaded = loading => {
            let error = match loaded {
                Ok(Ok(())) => None,
                Ok(Err(e)) => Some(e),
                Err(e) => Some(anyhow::anyhow!("model loading panicked: {e}")),
            };
            if let Some(error) = error {
                let _ = failed.send(error);
                return;
            }
        }
    }
    shutdown.await;
}

/// The gRPC service on `listener` until `stop`, then draining for at most the grace period.
async fn serve_grpc(
    listener: tokio::net::TcpListener,
    registry: Arc<registry::Registry>,
    config: &ModelServerConfig,
    stop: Shutdown,
) -> Result<(), tonic::transport::Error> {
    // Whole photos in one window: HTTP/2's default 64 KiB would cost a round trip of window
    // updates every 64 KiB of a multi-megabyte image.
    const GRPC_WINDOW_BYTES: u32 = 16 * 1024 * 1024;
    let service = GrpcInferenceServiceServer::new(service::InferenceService::new(
        registry,
        config.max_image_pixels,
        config.decoded_cache_bytes,
    ))
    .max_decoding_message_size(MAX_MESSAGE_BYTES)
    .max_encoding_message_size(MAX_MESSAGE_BYTES);
    let incoming = TcpIncoming::from(listener).with_nodelay(Some(true));
    drain::serve(incoming, stop, config.shutdown_grace, |incoming, stop| {
        Server::builder()
            .initial_stream_window_size(Some(GRPC_WINDOW_BYTES))
            .initial_connection_window_size(Some(GRPC_WINDOW_BYTES))
            .add_service(service)
            .serve_with_incoming_shutdown(incoming, stop)
    })
    .await
}
