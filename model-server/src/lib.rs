//! An Open Inference Protocol (KServe v2) gRPC model server for ONNX image classifiers.
//!
//! It serves every model of a model repository folder on ONNX Runtime, takes either encoded
//! images (BYTES, decoded and preprocessed here) or prepared FP32 tensors, batches concurrent
//! requests per model, and implements Triton's classification extension.
//!
//! Layout:
//! - `config`: [`ModelServerConfig`], the binary's settings from the environment;
//! - `repository`: the model repository, each model's `config.toml` and labels;
//! - `runtime`: finding and loading the ONNX Runtime library, once per process;
//! - `registry`: the served models by name, readiness, background loading;
//! - `runner`: one thread per model owning its session, with dynamic batching;
//! - `decode`: encoded bytes to RGB8, with the pixel limit checked before decoding;
//! - `decoded`: recently decoded images, so the fast and slow requests decode once;
//! - `preprocess`: crop, resize, scale and lay out into the input tensor;
//! - `classify`: softmax and top-k as `score:index:label` strings;
//! - `request`: reading a `ModelInferRequest`, writing the response;
//! - `service`: the gRPC service;
//! - `error`: [`ModelError`] and its one conversion to `tonic::Status`.
//!
//! [`run`] serves on a listener until a shutdown future resolves.

pub mod classify;
pub mod config;
pub mod decode;
pub mod decoded;
pub mod error;
pub mod preprocess;
pub mod registry;
pub mod repository;
pub mod request;
pub mod runner;
pub mod runtime;
pub mod service;

use std::{future::Future, sync::Arc};

use anyhow::Context;
use tandem_proto::GrpcInferenceServiceServer;
use tokio::sync::oneshot;
use tonic::transport::{Server, server::TcpIncoming};

pub use config::ModelServerConfig;
pub use error::ModelError;

/// Largest gRPC message accepted or sent: room for a batch of 12-megapixel photos.
pub const MAX_MESSAGE_BYTES: usize = 64 << 20;

/// Serves the models of `config.model_repository` on `listener` until `shutdown` resolves.
///
/// The repository's configuration is read and validated first (errors are returned at once),
/// then the server answers while ONNX Runtime and the models load in the background:
/// ServerLive is true from the start, ServerReady and ModelReady once the models are loaded.
/// A model that fails to load stops the server with that error.
pub async fn run(
    listener: tokio::net::TcpListener,
    config: ModelServerConfig,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    run_with_ops(listener, None, config, shutdown).await
}

/// Ready when every model is loaded.
struct ModelsReady(Arc<registry::Registry>);

impl tandem_core::metrics::Readiness for ModelsReady {
    async fn checks(&self) -> Vec<(&'static str, bool)> {
        vec![("models_loaded", self.0.is_ready())]
    }
}

/// Stops the ops listener when the server stops, however it stops.
struct AbortOnDrop(tokio::task::JoinHandle<std::io::Result<()>>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
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
    let dylib = runtime::resolve_dylib(config.ort_dylib_path.as_deref())?;
    let specs = repository::load_repository(&config.model_repository)?;
    let registry = Arc::new(registry::Registry::new(specs));
    let _ops = match ops {
        Some(ops) => {
            tracing::info!(addr = %ops.local_addr()?, "model server ops listener (/metrics, /healthz, /readyz)");
            Some(AbortOnDrop(tokio::spawn(tandem_core::metrics::serve_ops(
                ops,
                Arc::new(ModelsReady(registry.clone())),
                std::future::pending(),
            ))))
        }
        None => None,
    };
    let addr = listener
        .local_addr()
        .context("the listener has no address")?;
    tracing::info!(
        %addr,
        repository = %config.model_repository.display(),
        models = ?registry.names(),
        "model server listening; loading models"
    );

    let loading = {
        let registry = registry.clone();
        tokio::spawn(async move {
            let started = std::time::Instant::now();
            registry.load_all(dylib).await?;
            tracing::info!(
                ms = started.elapsed().as_millis(),
                "all models loaded; ready"
            );
            anyhow::Ok(())
        })
    };
    let (failed_tx, failed) = oneshot::channel::<anyhow::Error>();
    let stop = async move {
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
                    let _ = failed_tx.send(error);
                    return;
                }
            }
        }
        shutdown.await;
    };

    const GRPC_WINDOW_BYTES: u32 = 16 * 1024 * 1024;
    let service = GrpcInferenceServiceServer::new(service::InferenceService::new(
        registry,
        config.max_image_pixels,
        config.decoded_cache_bytes,
    ))
    .max_decoding_message_size(MAX_MESSAGE_BYTES)
    .max_encoding_message_size(MAX_MESSAGE_BYTES);
    Server::builder()
        // Whole photos in one window: HTTP/2's default 64 KiB would cost a round trip of
        // window updates every 64 KiB of a multi-megabyte image.
        .initial_stream_window_size(Some(GRPC_WINDOW_BYTES))
        .initial_connection_window_size(Some(GRPC_WINDOW_BYTES))
        .add_service(service)
        .serve_with_incoming_shutdown(TcpIncoming::from(listener).with_nodelay(Some(true)), stop)
        .await
        .context("the gRPC server failed")?;
    if let Ok(error) = failed.await {
        return Err(error.context("loading the models failed"));
    }
    tracing::info!("model server stopped");
    Ok(())
}
