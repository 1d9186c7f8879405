//! Every way a request can fail, and the one place where a failure becomes a gRPC status.
//!
//! Handlers return [`ModelError`]; the conversion to [`tonic::Status`] below picks the code and
//! makes sure internal details (paths, ONNX Runtime messages) go to the log, not to the client.

use tonic::{Code, Status};

/// A request-level failure. Messages say what was wrong and what was expected.
#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    /// The request names a model this server does not serve.
    #[error("unknown model {name:?}; available models: {available}")]
    UnknownModel { name: String, available: String },

    /// The request names a version the model does not have.
    #[error("model {model:?} has no version {version:?}; available versions: [\"1\"]")]
    UnknownVersion { model: String, version: String },

    /// The model is known but its session is still loading.
    #[error("model {0:?} is still loading; retry when ServerReady/ModelReady is true")]
    NotReady(String),

    /// The model's queue is full.
    #[error("model {0:?} has too many queued requests; retry later")]
    Overloaded(String),

    /// Zero inputs, several inputs, or an input with an unknown name.
    #[error("{0}")]
    Inputs(String),

    /// An input or output with the wrong datatype.
    #[error("{0}")]
    Datatype(String),

    /// An input with the wrong shape.
    #[error("{0}")]
    Shape(String),

    /// Tensor data whose size does not match the declared shape.
    #[error("{0}")]
    ByteCount(String),

    /// A malformed request parameter or requested output.
    #[error("{0}")]
    Parameter(String),

    /// More images than the model's `max_batch_size`.
    #[error("batch of {got} is over model {model:?}'s max_batch_size of {max}; split the request")]
    BatchTooLarge {
        model: String,
        got: usize,
        max: usize,
    },

    /// An encoded image that is not an image, or is corrupt.
    #[error("image {index} could not be decoded: {reason}")]
    Undecodable { index: usize, reason: String },

    /// An encoded image whose data ends early.
    #[error("image {index} is truncated: {reason}")]
    Truncated { index: usize, reason: String },

    /// An image whose header claims more pixels than allowed (checked before decoding).
    #[error(
        "image {index} is {width}x{height} ({pixels} pixels), over the limit of {max} pixels; send a smaller image"
    )]
    TooLarge {
        index: usize,
        width: u32,
        height: u32,
        pixels: u64,
        max: u64,
    },

    /// A server-side failure. The detail is logged; the client sees a generic message.
    #[error("internal error: {0}")]
    Internal(String),
}

impl ModelError {
    /// An internal error from anything displayable.
    pub fn internal(detail: impl std::fmt::Display) -> Self {
        Self::Internal(detail.to_string())
    }

    /// The gRPC code this error maps to.
    pub fn code(&self) -> Code {
        match self {
            Self::UnknownModel { .. } | Self::UnknownVersion { .. } => Code::NotFound,
            Self::NotReady(_) => Code::Unavailable,
            Self::Overloaded(_) => Code::ResourceExhausted,
            Self::Internal(_) => Code::Internal,
            Self::Inputs(_)
            | Self::Datatype(_)
            | Self::Shape(_)
            | Self::ByteCount(_)
            | Self::Parameter(_)
            | Self::BatchTooLarge { .. }
            | Self::Undecodable { .. }
            | Self::Truncated { .. }
            | Self::TooLarge { .. } => Code::InvalidArgument,
        }
    }
}

impl From<ModelError> for Status {
    fn from(error: ModelError) -> Self {
        match error {
            ModelError::Internal(detail) => {
                tracing::error!(%detail, "internal error while serving a request");
                Status::internal("internal error in the model server; see its log")
            }
            other => {
                tracing::debug!(error = %other, "request refused");
                Status::new(other.code(), other.to_string())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn internal_errors_do_not_leak_details() {
        let status = Status::from(ModelError::internal("/secret/path: onnxruntime said no"));
        assert_eq!(status.code(), Code::Internal);
        assert!(!status.message().contains("secret"), "{}", status.message());
    }

    #[test]
    fn client_errors_keep_their_message() {
        let status = Status::from(ModelError::Undecodable {
            index: 1,
            reason: "not an image".into(),
        });
        assert_eq!(status.code(), Code::InvalidArgument);
        assert_eq!(
            status.message(),
            "image 1 could not be decoded: not an image"
        );
        let status = Status::from(ModelError::UnknownModel {
            name: "x".into(),
            available: "a, b".into(),
        });
        assert_eq!(status.code(), Code::NotFound);
        assert!(status.message().contains("\"x\"") && status.message().contains("a, b"));
    }
}
