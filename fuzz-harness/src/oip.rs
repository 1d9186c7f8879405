//! `oip_request`: the model server's Open Inference Protocol request checks and response.

use tandem_model_server::{
    error::ModelError,
    preprocess::Layout,
    repository::ModelSpec,
    request::{self, IMAGE_INPUT, Input},
};
use tandem_proto::{
    ClassScore, ModelInferRequest, decode_raw_bytes,
    model_infer_request::{InferInputTensor, InferRequestedOutputTensor},
};

use crate::{Outcome, Reader, variant};

/// The model `oip_request` sends requests to: 2x2 input (NHWC when `nhwc`), three classes,
/// `max_batch_size` 4.
pub fn oip_spec(nhwc: bool) -> ModelSpec {
    let mut spec = ModelSpec::parse(
        std::path::Path::new("m/config.toml"),
        "m",
        "input_tensor = \"input\"\noutput_tensor = \"logits\"\nwidth = 2\nheight = 2\n\
         scaling = { scale = 1.0, offset = 0.0 }\nmax_batch_size = 4\n",
    )
    .expect("the fuzz model's configuration is valid");
    if nhwc {
        spec.preprocess.layout = Layout::Nhwc;
    }
    spec.labels = vec!["cat".into(), "dog".into(), "cup".into()];
    spec
}

/// Names an input may have: the image input, the model's tensor, anything else.
pub const INPUT_NAMES: [&str; 4] = [IMAGE_INPUT, "input", "other", ""];
/// Datatypes an input may have.
pub const DATATYPES: [&str; 4] = ["BYTES", "FP32", "UINT8", ""];
/// Names a requested output may have.
pub const OUTPUT_NAMES: [&str; 2] = ["logits", "other"];

/// The model server's OIP request handling (`request::plan`, then `request::response` on
/// scores taken from the input). The request is built from the bytes (see [`Reader`] methods'
/// order below: flags, inputs, raw contents, outputs, parameters, scores). A plan must be
/// consistent with the model; a refusal must be `INVALID_ARGUMENT`; the response must have the
/// planned shape.
pub fn oip_request(data: &[u8]) -> Outcome {
    let mut input = Reader(data);
    let spec = oip_spec(input.u8() & 1 != 0);
    let mut request = ModelInferRequest {
        model_name: spec.name.clone(),
        id: "fuzz".into(),
        ..Default::default()
    };
    for _ in 0..input.u8() % 3 {
        let tensor = InferInputTensor {
            name: INPUT_NAMES[usize::from(input.u8()) % INPUT_NAMES.len()].into(),
            datatype: DATATYPES[usize::from(input.u8()) % DATATYPES.len()].into(),
            shape: (0..input.u8() % 6).map(|_| input.dimension()).collect(),
            contents: input.contents(),
            ..Default::default()
        };
        request.inputs.push(tensor);
    }
    for _ in 0..input.u8() % 3 {
        request.raw_input_contents.push(input.chunk());
    }
    for _ in 0..input.u8() % 3 {
        let output = InferRequestedOutputTensor {
            name: OUTPUT_NAMES[usize::from(input.u8()) % OUTPUT_NAMES.len()].into(),
            parameters: input.parameters(),
        };
        request.outputs.push(output);
    }
    request.parameters = input.parameters();
    let sent = request.clone();

    let plan = match request::plan(&mut request, &spec) {
        Ok(plan) => plan,
        Err(error) => {
            let _ = error.to_string();
            assert!(
                matches!(
                    error,
                    ModelError::Inputs(_)
                        | ModelError::Datatype(_)
                        | ModelError::Shape(_)
                        | ModelError::ByteCount(_)
                        | ModelError::Parameter(_)
                        | ModelError::BatchTooLarge { .. }
                ),
                "planning failed with {error:?}, not INVALID_ARGUMENT"
            );
            return Err(variant(&error));
        }
    };
    assert!((1..=spec.max_batch_size).contains(&plan.batch), "{plan:?}");
    match &plan.input {
        Input::Images(images) => assert_eq!(images.len(), plan.batch),
        Input::Tensor(values) => {
            assert_eq!(values.len(), plan.batch * spec.preprocess.image_len());
        }
    }
    let classes = spec.num_classes();
    let scores = input.rest();
    let output: Vec<f32> = (0..plan.batch * classes)
        .map(|i| match scores.get(i * 4..i * 4 + 4) {
            Some(b) => f32::from_le_bytes([b[0], b[1], b[2], b[3]]),
            None => 0.0,
        })
        .collect();
    let response = request::response(&sent, &spec, plan.batch, plan.classification, &output);
    assert_eq!(response.id, sent.id);
    let [tensor] = response.outputs.as_slice() else {
        panic!("{} outputs in the response", response.outputs.len());
    };
    let [raw] = response.raw_output_contents.as_slice() else {
        panic!("{} raw outputs", response.raw_output_contents.len());
    };
    let columns = match plan.classification {
        None => {
            assert_eq!(tensor.datatype, "FP32");
            assert_eq!(raw.len(), plan.batch * classes * 4);
            classes
        }
        Some(k) => {
            let columns = k.min(classes);
            assert_eq!(tensor.datatype, "BYTES");
            let elements = decode_raw_bytes(raw).expect("the response's BYTES do not decode");
            assert_eq!(elements.len(), plan.batch * columns);
            for element in elements {
                let text = std::str::from_utf8(element).expect("a class string is not UTF-8");
                let score = ClassScore::parse(text).expect("a class string does not parse");
                assert!(score.index < classes, "{text}");
            }
            columns
        }
    };
    assert_eq!(tensor.shape, [plan.batch as i64, columns as i64]);
    Ok(())
}
