use std::path::Path;

use tandem_proto::{
    ClassScore, InferTensorContents, decode_raw_bytes, int64_parameter,
    model_infer_request::InferRequestedOutputTensor,
};

use super::*;

/// A 2x2 NCHW model with three classes and max_batch_size 2.
fn spec() -> ModelSpec {
    let mut spec = ModelSpec::parse(
        Path::new("m/config.toml"),
        "m",
        r#"
input_tensor = "input"
output_tensor = "logits"
width = 2
height = 2
scaling = { scale = 1.0, offset = 0.0 }
max_batch_size = 2
"#,
    )
    .unwrap();
    spec.labels = vec!["cat".into(), "dog".into(), "cup".into()];
    spec
}

fn input(name: &str, datatype: &str, shape: &[i64]) -> InferInputTensor {
    InferInputTensor {
        name: name.into(),
        datatype: datatype.into(),
        shape: shape.to_vec(),
        ..Default::default()
    }
}

fn request(inputs: Vec<InferInputTensor>) -> ModelInferRequest {
    ModelInferRequest {
        model_name: "m".into(),
        id: "req-1".into(),
        inputs,
        ..Default::default()
    }
}

fn images(elements: &[&'static [u8]]) -> InferInputTensor {
    let mut input = input(IMAGE_INPUT, "BYTES", &[elements.len() as i64]);
    input.contents = Some(InferTensorContents {
        bytes_contents: elements.iter().map(|e| Bytes::from_static(e)).collect(),
        ..Default::default()
    });
    input
}

fn plan_of(mut request: ModelInferRequest) -> Result<Plan, ModelError> {
    plan(&mut request, &spec())
}

#[test]
fn bytes_come_from_contents_or_raw_contents() {
    let plan = plan_of(request(vec![images(&[b"a", b"bc"])])).unwrap();
    assert_eq!(plan.batch, 2);
    assert!(matches!(&plan.input, Input::Images(v) if v == &[&b"a"[..], b"bc"]));

    let mut raw = request(vec![input(IMAGE_INPUT, "BYTES", &[2, 1])]);
    raw.raw_input_contents = vec![Bytes::from(encode_raw_bytes([&b"a"[..], b"bc"]))];
    let plan = plan_of(raw).unwrap();
    assert!(matches!(&plan.input, Input::Images(v) if v == &[&b"a"[..], b"bc"]));
}

#[test]
fn fp32_comes_from_contents_or_little_endian_raw_contents() {
    let values: Vec<f32> = (0..24).map(|i| i as f32).collect();
    let mut tensor = input("input", "FP32", &[2, 3, 2, 2]);
    tensor.contents = Some(InferTensorContents {
        fp32_contents: values.clone(),
        ..Default::default()
    });
    let plan = plan_of(request(vec![tensor])).unwrap();
    assert_eq!(plan.batch, 2);
    assert!(matches!(&plan.input, Input::Tensor(v) if v == &values));

    let mut raw = request(vec![input("input", "FP32", &[2, 3, 2, 2])]);
    raw.raw_input_contents = vec![Bytes::from(
        values
            .iter()
            .flat_map(|v| v.to_le_bytes())
            .collect::<Vec<u8>>(),
    )];
    let plan = plan_of(raw).unwrap();
    assert!(matches!(&plan.input, Input::Tensor(v) if v == &values));
}

fn refused(request: ModelInferRequest) -> String {
    let err = plan_of(request).unwrap_err();
    assert_eq!(err.code(), tonic::Code::InvalidArgument, "{err}");
    err.to_string()
}

#[test]
fn zero_several_or_unknown_inputs_are_refused() {
    assert!(refused(request(vec![])).starts_with("0 inputs sent"));
    let two = refused(request(vec![images(&[b"a"]), images(&[b"b"])]));
    assert!(
        two.contains("2 inputs") && two.contains("\"image\""),
        "{two}"
    );
    let unknown = refused(request(vec![input("pixels", "FP32", &[1, 3, 2, 2])]));
    assert!(unknown.contains("unknown input \"pixels\""), "{unknown}");
}

#[test]
fn wrong_datatypes_shapes_and_counts_are_refused() {
    let dtype = refused(request(vec![input("input", "FP16", &[1, 3, 2, 2])]));
    assert!(
        dtype.contains("FP16") && dtype.contains("expected FP32"),
        "{dtype}"
    );
    let dtype = refused(request(vec![input(IMAGE_INPUT, "FP32", &[1])]));
    assert!(dtype.contains("expected BYTES"), "{dtype}");

    let shape = refused(request(vec![input("input", "FP32", &[1, 3, 4, 4])]));
    assert!(
        shape.contains("[1, 3, 4, 4]") && shape.contains("[-1, 3, 2, 2]"),
        "{shape}"
    );
    let shape = refused(request(vec![input("input", "FP32", &[0, 3, 2, 2])]));
    assert!(shape.contains("N >= 1"), "{shape}");
    let shape = refused(request(vec![input(IMAGE_INPUT, "BYTES", &[1, 2])]));
    assert!(shape.contains("[N] or [N, 1]"), "{shape}");

    let mut few = input("input", "FP32", &[1, 3, 2, 2]);
    few.contents = Some(InferTensorContents {
        fp32_contents: vec![0.0; 11],
        ..Default::default()
    });
    let count = refused(request(vec![few]));
    assert!(
        count.contains("11 values") && count.contains("needs 12"),
        "{count}"
    );

    let mut raw = request(vec![input("input", "FP32", &[1, 3, 2, 2])]);
    raw.raw_input_contents = vec![Bytes::from(vec![0u8; 47])];
    assert!(refused(raw).contains("47 bytes"));

    let mut bad = images(&[b"a"]);
    bad.shape = vec![2];
    assert!(refused(request(vec![bad])).contains("but 1 elements"));

    let mut raw = request(vec![input(IMAGE_INPUT, "BYTES", &[1])]);
    raw.raw_input_contents = vec![Bytes::from_static(&[9, 0, 0, 0, b'x'])];
    assert!(refused(raw).contains("4-byte little-endian length"));
}

#[test]
fn batches_over_the_maximum_are_refused() {
    let err = refused(request(vec![images(&[b"a", b"b", b"c"])]));
    assert!(
        err.contains("batch of 3") && err.contains("max_batch_size of 2"),
        "{err}"
    );
}

#[test]
fn classification_comes_from_the_output_or_the_request() {
    let mut on_output = request(vec![images(&[b"a"])]);
    on_output.outputs = vec![InferRequestedOutputTensor {
        name: "logits".into(),
        parameters: [(CLASSIFICATION_PARAMETER.to_owned(), int64_parameter(2))].into(),
    }];
    assert_eq!(plan_of(on_output).unwrap().classification, Some(2));

    let mut on_request = request(vec![images(&[b"a"])]);
    on_request.parameters = [(CLASSIFICATION_PARAMETER.to_owned(), int64_parameter(1))].into();
    assert_eq!(plan_of(on_request).unwrap().classification, Some(1));

    assert_eq!(
        plan_of(request(vec![images(&[b"a"])]))
            .unwrap()
            .classification,
        None
    );

    let mut zero = request(vec![images(&[b"a"])]);
    zero.parameters = [(CLASSIFICATION_PARAMETER.to_owned(), int64_parameter(0))].into();
    assert!(refused(zero).contains("at least 1"));

    let mut unknown = request(vec![images(&[b"a"])]);
    unknown.outputs = vec![InferRequestedOutputTensor {
        name: "probs".into(),
        ..Default::default()
    }];
    assert!(refused(unknown).contains("unknown output \"probs\""));
}

#[test]
fn responses_carry_raw_fp32_or_classification_strings() {
    let spec = spec();
    let request = request(vec![]);
    let output = [0.0, 3f32.ln(), -1000.0, 5.0, 1.0, 2.0];

    let raw = response(&request, &spec, 2, None, &output);
    assert_eq!((raw.id.as_str(), raw.model_name.as_str()), ("req-1", "m"));
    assert_eq!(raw.outputs[0].datatype, "FP32");
    assert_eq!(raw.outputs[0].shape, [2, 3]);
    let floats: Vec<f32> = raw.raw_output_contents[0]
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes(b.try_into().unwrap()))
        .collect();
    assert_eq!(floats, output);

    let classified = response(&request, &spec, 2, Some(5), &output);
    assert_eq!(classified.outputs[0].datatype, "BYTES");
    assert_eq!(
        classified.outputs[0].shape,
        [2, 3],
        "k is capped at the classes"
    );
    let strings: Vec<String> = decode_raw_bytes(&classified.raw_output_contents[0])
        .unwrap()
        .into_iter()
        .map(|s| String::from_utf8(s.to_vec()).unwrap())
        .collect();
    assert_eq!(strings.len(), 6);
    let scores: Vec<ClassScore> = strings
        .iter()
        .map(|s| ClassScore::parse(s).unwrap())
        .collect();
    let first: Vec<(usize, &str)> = scores[..3]
        .iter()
        .map(|s| (s.index, s.label.as_str()))
        .collect();
    assert_eq!(first, [(1, "dog"), (0, "cat"), (2, "cup")], "{strings:?}");
    assert!((scores[0].score - 0.75).abs() < 1e-6 && (scores[1].score - 0.25).abs() < 1e-6);
    assert_eq!(
        (scores[3].index, scores[4].index, scores[5].index),
        (0, 2, 1)
    );
}
