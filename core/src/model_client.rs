//! `ModelClient`: classifies an encoded image on an Open Inference Protocol model server.
//!
//! The gateway (fast model) and the slow-workers (slow model) both call through this client. It
//! sends the image bytes untouched as a BYTES input, so the image is decoded once, in the model
//! server, and asks for the classification extension so only the top k come back.

use std::time::{Duration, Instant};

use bytes::Bytes;
use tandem_proto::{
    ClassScore as WireClassScore, GrpcInferenceServiceClient, InferTensorContents,
    ModelInferRequest, ModelReadyRequest,
    model_infer_request::{InferInputTensor, InferRequestedOutputTensor},
};
use tonic::{Code, transport::Channel};
use tracing::Instrument as _;

use crate::job::{ClassScore, Prediction};

/// Why a classification did not happen.
#[derive(Debug, Clone, thiserror::Error)]
pub enum ClassifyError {
    /// The model server refused this input: retrying cannot help.
    #[error("the model rejected the image: {0}")]
    Rejected(String),
    /// No such model on the server: a configuration error, retrying cannot help.
    #[error("model not found: {0}")]
    ModelNotFound(String),
    /// The server did not answer in time.
    #[error("model server timed out after {0:?}")]
    Timeout(Duration),
    /// The server is down, overloaded or failed: worth retrying.
    #[error("model server unavailable: {0}")]
    Unavailable(String),
}

impl ClassifyError {
    /// Whether a later retry may succeed.
    pub fn is_transient(&self) -> bool {
        matches!(self, Self::Timeout(_) | Self::Unavailable(_))
    }
}

/// A model server URL that is not a valid URI.
#[derive(Debug, Clone, thiserror::Error)]
#[error("invalid model server URL {0}")]
pub struct InvalidUrl(String);

/// A cheap-to-clone client on one reused HTTP/2 channel.
#[derive(Debug, Clone)]
pub struct ModelClient {
    grpc: GrpcInferenceServiceClient<Channel>,
    timeout: Duration,
}

impl ModelClient {
    /// A client for `url` (e.g. `http://127.0.0.1:8001`). Connects lazily and reconnects on its
    /// own, so a model server that starts later, or restarts, is picked up.
    pub fn new(url: &str, timeout: Duration) -> Result<Self, InvalidUrl> {
        let endpoint = Channel::from_shared(url.to_owned())
            .map_err(|e| InvalidUrl(format!("{url:?}: {e}")))?
            .connect_timeout(Duration::from_secs(2))
            .tcp_nodelay(true)
            .http2_keep_alive_interval(Duration::from_secs(30))
            .keep_alive_while_idle(true);
        Ok(Self {
            grpc: GrpcInferenceServiceClient::new(endpoint.connect_lazy())
                .max_decoding_message_size(tandem_proto::MAX_MESSAGE_BYTES)
                .max_encoding_message_size(tandem_proto::MAX_MESSAGE_BYTES),
            timeout,
        })
    }

    /// Whether `model` is loaded and ready.
    pub async fn model_ready(&self, model: &str) -> bool {
        let mut grpc = self.grpc.clone();
        let request = ModelReadyRequest {
            name: model.to_owned(),
            version: String::new(),
        };
        matches!(
            tokio::time::timeout(Duration::from_secs(2), grpc.model_ready(request)).await,
            Ok(Ok(response)) if response.get_ref().ready
        )
    }

    /// The model's identity as the model server reports it now (`None`: not loaded, not
    /// reachable, or a server that does not report one).
    pub async fn model_digest(&self, model: &str) -> Option<String> {
        let mut grpc = self.grpc.clone();
        let request = tandem_proto::ModelMetadataRequest {
            name: model.to_owned(),
            version: String::new(),
        };
        let response = tokio::time::timeout(self.timeout, grpc.model_metadata(request))
            .await
            .ok()?
            .ok()?
            .into_inner();
        tandem_proto::string_parameter_of(
            &response.parameters,
            tandem_proto::MODEL_DIGEST_PARAMETER,
        )
        .map(str::to_owned)
    }

    /// Classifies one encoded image, returning the top `top_k` classes. The call is a client
    /// span of the current trace, and carries it to the model server (W3C `traceparent`).
    pub async fn classify(
        &self,
        model: &str,
        image: Bytes,
        top_k: usize,
        mut metadata: tonic::metadata::MetadataMap,
    ) -> Result<Prediction, ClassifyError> {
        let span = tracing::info_span!(
            "ModelInfer",
            otel.kind = "client",
            rpc.system = "grpc",
            rpc.service = "inference.GRPCInferenceService",
            rpc.method = "ModelInfer",
            model,
        );
        crate::telemetry::inject_grpc(&span, &mut metadata);
        self.call(model, image, top_k, metadata)
            .instrument(span)
            .await
    }

    async fn call(
        &self,
        model: &str,
        image: Bytes,
        top_k: usize,
        metadata: tonic::metadata::MetadataMap,
    ) -> Result<Prediction, ClassifyError> {
        let k = i64::try_from(top_k.max(1)).unwrap_or(1);
        let body = ModelInferRequest {
            model_name: model.to_owned(),
            // Typed contents carry the `Bytes` as they are; the raw form would need one more
            // copy of the image to add its length prefix.
            inputs: vec![InferInputTensor {
                name: "image".into(),
                datatype: "BYTES".into(),
                shape: vec![1],
                contents: Some(InferTensorContents {
                    bytes_contents: vec![image],
                    ..Default::default()
                }),
                ..Default::default()
            }],
            parameters: [(
                tandem_proto::CLASSIFICATION_PARAMETER.to_owned(),
                tandem_proto::int64_parameter(k),
            )]
            .into(),
            outputs: Vec::<InferRequestedOutputTensor>::new(),
            ..Default::default()
        };
        let mut request = tonic::Request::from_parts(metadata, Default::default(), body);
        request.set_timeout(self.timeout);
        let mut grpc = self.grpc.clone();
        let started = Instant::now();
        let response = match tokio::time::timeout(self.timeout, grpc.model_infer(request)).await {
            Err(_) => return Err(ClassifyError::Timeout(self.timeout)),
            Ok(Err(status)) => return Err(status_error(status, self.timeout)),
            Ok(Ok(response)) => response.into_inner(),
        };
        let inference_ms = started.elapsed().as_secs_f64() * 1000.0;
        let top = parse_classification(&response)
            .ok_or_else(|| ClassifyError::Unavailable("malformed classification output".into()))?;
        let best = top
            .first()
            .cloned()
            .ok_or_else(|| ClassifyError::Unavailable("empty classification output".into()))?;
        Ok(Prediction {
            model: model.to_owned(),
            label: best.label,
            score: best.score,
            top_k: top,
            inference_ms,
            model_digest: tandem_proto::string_parameter_of(
                &response.parameters,
                tandem_proto::MODEL_DIGEST_PARAMETER,
            )
            .map(str::to_owned),
        })
    }
}

fn status_error(status: tonic::Status, timeout: Duration) -> ClassifyError {
    let message = status.message().to_owned();
    match status.code() {
        Code::InvalidArgument | Code::OutOfRange | Code::FailedPrecondition => {
            ClassifyError::Rejected(message)
        }
        Code::NotFound => ClassifyError::ModelNotFound(message),
        Code::DeadlineExceeded => ClassifyError::Timeout(timeout),
        _ => ClassifyError::Unavailable(format!("{}: {message}", status.code())),
    }
}

/// The first output's BYTES `score:index:label` entries, raw or typed.
fn parse_classification(response: &tandem_proto::ModelInferResponse) -> Option<Vec<ClassScore>> {
    let entries: Vec<&[u8]> = match response.raw_output_contents.first() {
        Some(raw) => tandem_proto::decode_raw_bytes(raw)?,
        None => response
            .outputs
            .first()?
            .contents
            .as_ref()?
            .bytes_contents
            .iter()
            .map(|b| b.as_ref())
            .collect(),
    };
    entries
        .into_iter()
        .map(|entry| {
            let wire = WireClassScore::parse(std::str::from_utf8(entry).ok()?)?;
            Some(ClassScore {
                label: wire.label,
                score: wire.score,
                index: wire.index,
            })
        })
        .collect()
}
