//! The Open Inference Protocol gRPC service: health, metadata and inference.

use std::sync::Arc;

use bytes::Bytes;
use tandem_proto::{
    GrpcInferenceService, ModelInferRequest, ModelInferResponse, ModelMetadataRequest,
    ModelMetadataResponse, ModelReadyRequest, ModelReadyResponse, ServerLiveRequest,
    ServerLiveResponse, ServerMetadataRequest, ServerMetadataResponse, ServerReadyRequest,
    ServerReadyResponse, model_metadata_response::TensorMetadata,
};
use tokio::sync::Semaphore;
use tonic::{Request, Response, Status};
use tracing::Instrument as _;

use crate::{
    decode_cache::DecodeCache,
    error::ModelError,
    registry::{Registry, VERSION},
    repository::ModelSpec,
    request::{self, IMAGE_INPUT, Input},
};

/// The name `ServerMetadata` reports.
pub const SERVER_NAME: &str = "tandem-model-server";

/// Serves the models of a [`Registry`].
#[derive(Debug, Clone)]
pub struct InferenceService {
    registry: Arc<Registry>,
    max_image_pixels: u64,
    /// Bounds how many images are decoded at once (each may take `max_image_pixels * 3` bytes).
    decoding: Arc<Semaphore>,
    /// One decode per image per process (the fast and the slow request bring the same image).
    decode_cache: Arc<DecodeCache>,
}

impl InferenceService {
    /// A service over `registry`, refusing images of more than `max_image_pixels`, keeping up
    /// to `decoded_cache_bytes` of decoded images for the other model's request.
    pub fn new(registry: Arc<Registry>, max_image_pixels: u64, decoded_cache_bytes: usize) -> Self {
        let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
        Self {
            registry,
            max_image_pixels,
            decoding: Arc::new(Semaphore::new(cores * 2)),
            decode_cache: Arc::new(DecodeCache::new(decoded_cache_bytes)),
        }
    }

    /// Decodes and prepares every image on the blocking pool, images in parallel, into one
    /// batch tensor. The first failing image (by index) is the error.
    #[tracing::instrument(name = "preprocess", skip_all, fields(images = images.len()))]
    async fn prepare(
        &self,
        spec: &Arc<ModelSpec>,
        images: Vec<Bytes>,
    ) -> Result<Vec<f32>, ModelError> {
        let count = images.len();
        let started = std::time::Instant::now();
        let tasks = images.into_iter().enumerate().map(|(index, encoded)| {
            let spec = spec.clone();
            let decoding = self.decoding.clone();
            let max_pixels = self.max_image_pixels;
            async move {
                let permit = decoding
                    .acquire_owned()
                    .await
                    .map_err(ModelError::internal)?;
                let cache = self.decode_cache.clone();
                tokio::task::spawn_blocking(move || {
                    // Held until the work is done, even if the request is cancelled meanwhile.
                    let _permit = permit;
                    let image = cache.decode(&encoded, index, max_pixels, &spec.preprocess)?;
                    spec.preprocess.prepare_decoded(&image)
                })
                .await
                .map_err(|e| ModelError::internal(format!("preprocessing panicked: {e}")))?
            }
        });
        let mut prepared = futures::future::join_all(tasks).await.into_iter();
        // The first image's tensor becomes the batch's: for one image (most requests) it is
        // the whole batch, not copied (600 KB for a 224 x 224 model).
        let mut tensor = prepared.next().transpose()?.unwrap_or_default();
        tensor.reserve_exact(count.saturating_sub(1) * spec.preprocess.image_len());
        for image in prepared {
            tensor.extend(image?);
        }
        metrics::histogram!("tandem_model_preprocess_duration_seconds", "model" => spec.name.clone())
            .record(started.elapsed().as_secs_f64());
        Ok(tensor)
    }

    /// ModelInfer, with errors still typed.
    async fn infer(
        &self,
        mut request: ModelInferRequest,
    ) -> Result<ModelInferResponse, ModelError> {
        let model = self
            .registry
            .get(&request.model_name, &request.model_version)?;
        let spec = &model.spec;
        let request::Plan {
            input,
            batch,
            classification,
        } = request::plan(&mut request, spec)?;
        let runner = model.runner()?;
        let tensor = match input {
            Input::Tensor(values) => values,
            Input::Images(images) => self.prepare(spec, images).await?,
        };
        let output = runner
            .infer(tensor, batch)
            .instrument(tracing::info_span!("run", images = batch))
            .await?;
        tracing::debug!(images = batch, "inferred");
        Ok(request::response(
            &request,
            spec,
            batch,
            classification,
            &output,
        ))
    }
}

#[tonic::async_trait]
impl GrpcInferenceService for InferenceService {
    async fn server_live(
        &self,
        _: Request<ServerLiveRequest>,
    ) -> Result<Response<ServerLiveResponse>, Status> {
        Ok(Response::new(ServerLiveResponse { live: true }))
    }

    async fn server_ready(
        &self,
        _: Request<ServerReadyRequest>,
    ) -> Result<Response<ServerReadyResponse>, Status> {
        Ok(Response::new(ServerReadyResponse {
            ready: self.registry.is_ready(),
        }))
    }

    async fn model_ready(
        &self,
        request: Request<ModelReadyRequest>,
    ) -> Result<Response<ModelReadyResponse>, Status> {
        let request = request.into_inner();
        let model = self.registry.get(&request.name, &request.version)?;
        Ok(Response::new(ModelReadyResponse {
            ready: model.is_ready(),
        }))
    }

    async fn server_metadata(
        &self,
        _: Request<ServerMetadataRequest>,
    ) -> Result<Response<ServerMetadataResponse>, Status> {
        Ok(Response::new(ServerMetadataResponse {
            name: SERVER_NAME.to_owned(),
            version: env!("CARGO_PKG_VERSION").to_owned(),
            extensions: vec!["classification".to_owned()],
        }))
    }

    async fn model_metadata(
        &self,
        request: Request<ModelMetadataRequest>,
    ) -> Result<Response<ModelMetadataResponse>, Status> {
        let request = request.into_inner();
        let spec = &self.registry.get(&request.name, &request.version)?.spec;
        let tensor = |name: &str, datatype: &str, shape: Vec<i64>| TensorMetadata {
            name: name.to_owned(),
            datatype: datatype.to_owned(),
            shape,
        };
        let classes = i64::try_from(spec.num_classes()).unwrap_or(i64::MAX);
        Ok(Response::new(ModelMetadataResponse {
            name: spec.name.clone(),
            versions: vec![VERSION.to_owned()],
            platform: "onnxruntime_onnx".to_owned(),
            inputs: vec![
                tensor(&spec.input_tensor, "FP32", spec.input_shape().to_vec()),
                tensor(IMAGE_INPUT, "BYTES", vec![-1]),
            ],
            outputs: vec![tensor(&spec.output_tensor, "FP32", vec![-1, classes])],
            parameters: crate::digest::parameters(spec),
        }))
    }

    async fn model_infer(
        &self,
        request: Request<ModelInferRequest>,
    ) -> Result<Response<ModelInferResponse>, Status> {
        // A server span continuing the caller's trace (W3C `traceparent` in the metadata).
        let span = tracing::info_span!(
            "ModelInfer",
            otel.kind = "server",
            rpc.system = "grpc",
            rpc.service = "inference.GRPCInferenceService",
            rpc.method = "ModelInfer",
            model = %request.get_ref().model_name,
            id = %request.get_ref().id,
        );
        tandem_core::telemetry::set_grpc_parent(&span, request.metadata());
        self.infer(request.into_inner())
            .instrument(span)
            .await
            .map(Response::new)
            .map_err(Status::from)
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;

    /// A service whose one model has not been loaded (as while ONNX Runtime starts).
    fn loading() -> InferenceService {
        let mut spec = ModelSpec::parse(
            Path::new("m/config.toml"),
            "m",
            "input_tensor = \"input\"\noutput_tensor = \"logits\"\nwidth = 2\nheight = 2\n\
             scaling = { scale = 1.0, offset = 0.0 }\n",
        )
        .unwrap();
        spec.labels = vec!["a".into(), "b".into()];
        InferenceService::new(Arc::new(Registry::new(vec![spec], 2)), 100, 0)
    }

    #[tokio::test]
    async fn live_but_not_ready_while_models_load() {
        let service = loading();
        let live = service
            .server_live(Request::new(ServerLiveRequest {}))
            .await;
        assert!(live.unwrap().into_inner().live);
        let ready = service
            .server_ready(Request::new(ServerReadyRequest {}))
            .await;
        assert!(!ready.unwrap().into_inner().ready);
        let model = ModelReadyRequest {
            name: "m".into(),
            version: "1".into(),
        };
        let model_ready = service.model_ready(Request::new(model)).await;
        assert!(!model_ready.unwrap().into_inner().ready);

        // Metadata is known from config.toml already; inference must wait.
        let metadata = ModelMetadataRequest {
            name: "m".into(),
            version: String::new(),
        };
        let metadata = service
            .model_metadata(Request::new(metadata))
            .await
            .unwrap();
        assert_eq!(metadata.into_inner().outputs[0].shape, [-1, 2]);
        let request = ModelInferRequest {
            model_name: "m".into(),
            inputs: vec![tandem_proto::model_infer_request::InferInputTensor {
                name: IMAGE_INPUT.into(),
                datatype: "BYTES".into(),
                shape: vec![1],
                contents: Some(tandem_proto::InferTensorContents {
                    bytes_contents: vec![bytes::Bytes::from_static(b"x")],
                    ..Default::default()
                }),
                ..Default::default()
            }],
            ..Default::default()
        };
        let status = service
            .model_infer(Request::new(request))
            .await
            .unwrap_err();
        assert_eq!(status.code(), tonic::Code::Unavailable, "{status:?}");
    }

    #[tokio::test]
    async fn unknown_models_and_versions_are_not_found() {
        let service = loading();
        let status = service
            .model_ready(Request::new(ModelReadyRequest {
                name: "m".into(),
                version: "2".into(),
            }))
            .await
            .unwrap_err();
        assert_eq!(status.code(), tonic::Code::NotFound);
        assert!(status.message().contains("\"2\""), "{status:?}");
        let status = service
            .model_metadata(Request::new(ModelMetadataRequest {
                name: "x".into(),
                version: String::new(),
            }))
            .await
            .unwrap_err();
        assert_eq!(status.code(), tonic::Code::NotFound);
        assert!(
            status.message().contains("available models: m"),
            "{status:?}"
        );
    }
}
