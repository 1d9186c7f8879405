//! The KServe v2 / Open Inference Protocol gRPC API (package `inference`), as Rust types.
//!
//! Layout: `proto/grpc_predict_v2.proto` (the wire contract, written from the public
//! specification), `build.rs` (code generation with protox; no system `protoc`), and this file,
//! which re-exports the generated client, server and messages plus a few helpers for the
//! classification extension that both sides of the wire use.

#![allow(missing_debug_implementations, clippy::large_enum_variant)]

/// Generated code for package `inference`.
#[allow(clippy::all, clippy::pedantic)]
pub mod inference {
    tonic::include_proto!("inference");
}

pub use inference::grpc_inference_service_client::GrpcInferenceServiceClient;
pub use inference::grpc_inference_service_server::{
    GrpcInferenceService, GrpcInferenceServiceServer,
};
pub use inference::*;

/// Largest gRPC message either side sends or accepts (64 MiB): room for a batch of
/// 12-megapixel photos. The model server and its clients set it on both directions.
pub const MAX_MESSAGE_BYTES: usize = 64 << 20;

/// Name of Triton's classification parameter on a requested output (`int64`: how many classes).
pub const CLASSIFICATION_PARAMETER: &str = "classification";

/// Name of the string parameter, in a `ModelInferResponse` and (Tandem's extension) a
/// `ModelMetadataResponse`, that holds the model's identity: `sha256:<hex>` of its ONNX file and
/// preprocessing configuration. Answers are cached under it.
pub const MODEL_DIGEST_PARAMETER: &str = "model_digest";

/// An `InferParameter` holding a string.
pub fn string_parameter(value: impl Into<String>) -> InferParameter {
    InferParameter {
        parameter_choice: Some(infer_parameter::ParameterChoice::StringParam(value.into())),
    }
}

/// The string value of `parameters[name]`, if it is one.
pub fn string_parameter_of<'a>(
    parameters: &'a std::collections::HashMap<String, InferParameter>,
    name: &str,
) -> Option<&'a str> {
    match parameters.get(name)?.parameter_choice.as_ref()? {
        infer_parameter::ParameterChoice::StringParam(value) => Some(value),
        _ => None,
    }
}

/// An `InferParameter` holding an `int64`.
pub fn int64_parameter(value: i64) -> InferParameter {
    InferParameter {
        parameter_choice: Some(infer_parameter::ParameterChoice::Int64Param(value)),
    }
}

/// One entry of a classification output: Triton's `"<score>:<index>:<label>"` string.
#[derive(Debug, Clone, PartialEq)]
pub struct ClassScore {
    pub score: f32,
    pub index: usize,
    pub label: String,
}

impl ClassScore {
    /// Formats as Triton does: `score:index:label`.
    pub fn to_wire(&self) -> String {
        format!("{}:{}:{}", self.score, self.index, self.label)
    }

    /// Parses `score:index[:label]`; the label may itself contain `:`.
    pub fn parse(text: &str) -> Option<Self> {
        let mut parts = text.splitn(3, ':');
        let score = parts.next()?.parse().ok()?;
        let index = parts.next()?.parse().ok()?;
        let label = parts.next().unwrap_or_default().to_owned();
        Some(Self {
            score,
            index,
            label,
        })
    }
}

/// Encodes elements as one raw BYTES tensor: each a 4-byte little-endian length, then the bytes.
pub fn encode_raw_bytes<'a>(elements: impl IntoIterator<Item = &'a [u8]>) -> Vec<u8> {
    let mut out = Vec::new();
    for element in elements {
        let len = u32::try_from(element.len()).unwrap_or(u32::MAX);
        out.extend_from_slice(&len.to_le_bytes());
        out.extend_from_slice(element);
    }
    out
}

/// Splits a raw BYTES tensor into its elements; `None` when the length prefixes do not add up.
pub fn decode_raw_bytes(mut raw: &[u8]) -> Option<Vec<&[u8]>> {
    let mut elements = Vec::new();
    while !raw.is_empty() {
        let (len, rest) = raw.split_first_chunk::<4>()?;
        let len = u32::from_le_bytes(*len) as usize;
        if rest.len() < len {
            return None;
        }
        let (element, rest) = rest.split_at(len);
        elements.push(element);
        raw = rest;
    }
    Some(elements)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn class_score_round_trips_labels_with_colons() {
        let score = ClassScore {
            score: 0.5,
            index: 7,
            label: "a:b".into(),
        };
        assert_eq!(ClassScore::parse(&score.to_wire()), Some(score));
        assert_eq!(ClassScore::parse("nonsense"), None);
    }

    #[test]
    fn raw_bytes_round_trip_and_reject_short_input() {
        let raw = encode_raw_bytes([b"ab".as_slice(), b"".as_slice(), b"xyz".as_slice()]);
        assert_eq!(
            decode_raw_bytes(&raw),
            Some(vec![b"ab".as_slice(), b"", b"xyz"])
        );
        assert_eq!(decode_raw_bytes(&raw[..raw.len() - 1]), None);
        assert_eq!(decode_raw_bytes(&[1, 0]), None);
    }
}
