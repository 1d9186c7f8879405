//! Reading a `ModelInferRequest` into a plan, and writing the `ModelInferResponse`.
//!
//! A request has exactly one input: `image` (BYTES, shape `[N]` or `[N, 1]`, one encoded image
//! per element) or the model's own tensor (FP32, exactly `[N, 3, H, W]` or `[N, H, W, 3]`). Data
//! comes from `contents` or from `raw_input_contents[0]` (little-endian FP32; length-prefixed
//! BYTES). The output is FP32 `[N, classes]` in `raw_output_contents`, or, when the int64
//! parameter `classification` = k is set on the requested output or on the request, BYTES
//! `[N, k]` of `score:index:label` strings (Triton's classification extension). Every response
//! carries the model's digest in the string parameter `model_digest` (see `digest`).

use std::collections::HashMap;

use bytes::Bytes;
use tandem_proto::{
    CLASSIFICATION_PARAMETER, InferParameter, ModelInferRequest, ModelInferResponse,
    encode_raw_bytes, infer_parameter::ParameterChoice, model_infer_request::InferInputTensor,
    model_infer_response::InferOutputTensor,
};

use crate::{classify, error::ModelError, registry::VERSION, repository::ModelSpec};

/// Name of the BYTES input that carries encoded images.
pub const IMAGE_INPUT: &str = "image";

/// The request's input data.
#[derive(Debug)]
pub enum Input {
    /// Encoded images, to decode and preprocess.
    Images(Vec<Bytes>),
    /// An already prepared input tensor.
    Tensor(Vec<f32>),
}

/// What to run and what to return.
#[derive(Debug)]
pub struct Plan {
    pub input: Input,
    /// Number of images (N).
    pub batch: usize,
    /// Top-k classes to return instead of the raw output.
    pub classification: Option<usize>,
}

/// Validates a request for `spec`; every problem is an `INVALID_ARGUMENT` saying what was expected.
pub fn plan(request: &mut ModelInferRequest, spec: &ModelSpec) -> Result<Plan, ModelError> {
    let classification = classification(request, spec)?;
    let tensor_shape = spec.input_shape();
    let accepted = format!(
        "model {:?} takes exactly one input: {IMAGE_INPUT:?} (BYTES, shape [N] or [N, 1], encoded images) \
         or {:?} (FP32, shape {tensor_shape:?} with N >= 1 for -1)",
        spec.name, spec.input_tensor
    );
    if request.inputs.len() != 1 {
        return Err(ModelError::Inputs(format!(
            "{} inputs sent; {accepted}",
            request.inputs.len()
        )));
    }
    if request.raw_input_contents.len() > 1 {
        return Err(ModelError::ByteCount(format!(
            "raw_input_contents has {} entries for one input",
            request.raw_input_contents.len()
        )));
    }
    let mut input = request.inputs.remove(0);
    let raw = request.raw_input_contents.pop();
    if raw.is_some() && input.contents.is_some() {
        return Err(ModelError::ByteCount(format!(
            "input {:?} has both contents and raw_input_contents; send the data in one of them",
            input.name
        )));
    }
    let (batch, data) = if input.name == IMAGE_INPUT {
        expect_datatype(&input, "BYTES", "encoded images")?;
        let batch = image_batch(&input.shape)?;
        check_batch(batch, spec)?;
        (
            batch,
            Input::Images(image_elements(&mut input, raw, batch)?),
        )
    } else if input.name == spec.input_tensor {
        expect_datatype(&input, "FP32", "the prepared input tensor")?;
        let batch = tensor_batch(&input.shape, &tensor_shape, &input.name)?;
        check_batch(batch, spec)?;
        let count = batch * spec.preprocess.image_len();
        (batch, Input::Tensor(tensor_values(&mut input, raw, count)?))
    } else {
        return Err(ModelError::Inputs(format!(
            "unknown input {:?}; {accepted}",
            input.name
        )));
    };
    Ok(Plan {
        input: data,
        batch,
        classification,
    })
}

fn expect_datatype(input: &InferInputTensor, datatype: &str, what: &str) -> Result<(), ModelError> {
    if input.datatype == datatype {
        return Ok(());
    }
    Err(ModelError::Datatype(format!(
        "input {:?} has datatype {:?}; expected {datatype} ({what})",
        input.name, input.datatype
    )))
}

fn check_batch(batch: usize, spec: &ModelSpec) -> Result<(), ModelError> {
    if batch > spec.max_batch_size {
        return Err(ModelError::BatchTooLarge {
            model: spec.name.clone(),
            got: batch,
            max: spec.max_batch_size,
        });
    }
    Ok(())
}

fn image_batch(shape: &[i64]) -> Result<usize, ModelError> {
    match shape {
        [n] | [n, 1] if *n >= 1 => Ok(usize::try_from(*n).unwrap_or(usize::MAX)),
        _ => Err(ModelError::Shape(format!(
            "input {IMAGE_INPUT:?} has shape {shape:?}; expected [N] or [N, 1] with N >= 1 images"
        ))),
    }
}

fn tensor_batch(shape: &[i64], expected: &[i64; 4], name: &str) -> Result<usize, ModelError> {
    match shape {
        [n, rest @ ..] if *n >= 1 && rest == &expected[1..] => {
            Ok(usize::try_from(*n).unwrap_or(usize::MAX))
        }
        _ => Err(ModelError::Shape(format!(
            "input {name:?} has shape {shape:?}; expected {expected:?} with N >= 1 for -1"
        ))),
    }
}

fn image_elements(
    input: &mut InferInputTensor,
    raw: Option<Bytes>,
    batch: usize,
) -> Result<Vec<Bytes>, ModelError> {
    let (source, elements) = match raw {
        Some(raw) => (
            RAW,
            tandem_proto::decode_raw_bytes(&raw)
                .ok_or_else(|| {
                    ModelError::ByteCount(format!(
                        "{RAW} is not a BYTES tensor: each element must be a 4-byte \
                         little-endian length followed by that many bytes"
                    ))
                })?
                .into_iter()
                .map(|element| raw.slice_ref(element))
                .collect(),
        ),
        None => (
            "contents.bytes_contents",
            input
                .contents
                .take()
                .map(|c| c.bytes_contents)
                .unwrap_or_default(),
        ),
    };
    expect_sent(input, source, elements.len(), batch, "elements")?;
    Ok(elements)
}

fn tensor_values(
    input: &mut InferInputTensor,
    raw: Option<Bytes>,
    count: usize,
) -> Result<Vec<f32>, ModelError> {
    if let Some(raw) = raw {
        expect_sent(input, RAW, raw.len(), count * 4, "bytes")?;
        return Ok(raw
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .collect());
    }
    let values = input
        .contents
        .take()
        .map(|c| c.fp32_contents)
        .unwrap_or_default();
    expect_sent(
        input,
        "contents.fp32_contents",
        values.len(),
        count,
        "values",
    )?;
    Ok(values)
}

/// Where raw input data comes: the one input's entry of `raw_input_contents`.
const RAW: &str = "raw_input_contents[0]";

/// `ByteCount` unless `source` held as much data (`sent` `unit`s) as `input`'s shape needs.
fn expect_sent(
    input: &InferInputTensor,
    source: &str,
    sent: usize,
    needed: usize,
    unit: &str,
) -> Result<(), ModelError> {
    if sent == needed {
        return Ok(());
    }
    Err(ModelError::ByteCount(format!(
        "input {:?} of {} shape {:?} needs {needed} {unit} but {sent} {unit} were sent in {source}",
        input.name, input.datatype, input.shape
    )))
}

/// The `classification` parameter: on the one requested output (Triton) or on the request.
fn classification(
    request: &ModelInferRequest,
    spec: &ModelSpec,
) -> Result<Option<usize>, ModelError> {
    let on_output = match request.outputs.as_slice() {
        [] => None,
        [output] if output.name == spec.output_tensor => {
            classification_parameter(&output.parameters)?
        }
        [output] => {
            return Err(ModelError::Parameter(format!(
                "unknown output {:?} requested; model {:?} has one output, {:?}",
                output.name, spec.name, spec.output_tensor
            )));
        }
        outputs => {
            return Err(ModelError::Parameter(format!(
                "{} outputs requested; model {:?} has one output, {:?}",
                outputs.len(),
                spec.name,
                spec.output_tensor
            )));
        }
    };
    match on_output {
        Some(k) => Ok(Some(k)),
        None => classification_parameter(&request.parameters),
    }
}

fn classification_parameter(
    parameters: &HashMap<String, InferParameter>,
) -> Result<Option<usize>, ModelError> {
    let Some(parameter) = parameters.get(CLASSIFICATION_PARAMETER) else {
        return Ok(None);
    };
    let k = match parameter.parameter_choice {
        Some(ParameterChoice::Int64Param(k)) => u64::try_from(k).ok(),
        Some(ParameterChoice::Uint64Param(k)) => Some(k),
        _ => None,
    };
    match k {
        Some(k) if k >= 1 => Ok(Some(usize::try_from(k).unwrap_or(usize::MAX))),
        _ => Err(ModelError::Parameter(format!(
            "parameter {CLASSIFICATION_PARAMETER:?} must be an int64 of at least 1 \
             (how many classes to return), got {:?}",
            parameter.parameter_choice
        ))),
    }
}

/// The response for `output` (`batch * classes` values).
pub fn response(
    request: &ModelInferRequest,
    spec: &ModelSpec,
    batch: usize,
    classification: Option<usize>,
    output: &[f32],
) -> ModelInferResponse {
    let classes = spec.num_classes();
    let rows = i64::try_from(batch).unwrap_or(i64::MAX);
    let (datatype, columns, raw) = match classification {
        None => (
            "FP32",
            classes,
            output
                .iter()
                .flat_map(|v| v.to_le_bytes())
                .collect::<Vec<u8>>(),
        ),
        Some(k) => {
            let k = k.min(classes);
            let strings =
                classify::classify_rows(output, classes, k, spec.output_kind, &spec.labels);
            (
                "BYTES",
                k,
                encode_raw_bytes(strings.iter().map(|s| s.as_bytes())),
            )
        }
    };
    ModelInferResponse {
        model_name: spec.name.clone(),
        model_version: VERSION.to_owned(),
        id: request.id.clone(),
        parameters: crate::digest::parameters(spec),
        outputs: vec![InferOutputTensor {
            name: spec.output_tensor.clone(),
            datatype: datatype.to_owned(),
            shape: vec![rows, i64::try_from(columns).unwrap_or(i64::MAX)],
            parameters: HashMap::new(),
            contents: None,
        }],
        raw_output_contents: vec![Bytes::from(raw)],
    }
}

#[cfg(test)]
#[path = "request_tests.rs"]
mod tests;
