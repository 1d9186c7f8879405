//! The model server, seen by a plain Open Inference Protocol (KServe v2) gRPC client.
//!
//! Every test starts the real server on the vendored `models/` (EfficientNet-Lite0 and Lite2)
//! and talks to it as Triton's clients would: health, metadata, inference with encoded images
//! (BYTES) or prepared tensors (FP32), Triton's classification extension, and bad input, after
//! which the server must still answer good requests.

use tandem_proto::{
    CLASSIFICATION_PARAMETER, ClassScore, InferTensorContents, ModelInferRequest,
    ModelInferResponse, ModelMetadataRequest, ModelReadyRequest, ServerLiveRequest,
    ServerMetadataRequest, ServerReadyRequest, decode_raw_bytes, encode_raw_bytes, int64_parameter,
    model_infer_request::{InferInputTensor, InferRequestedOutputTensor},
};

use crate::support::{model_server::spawn_model_server, photo};

mod refusals;

const LITE0: &str = "efficientnet_lite0";
const LITE2: &str = "efficientnet_lite2";
const EGYPTIAN_CAT: usize = 285;
const ESPRESSO: usize = 967;

type Client = tandem_proto::GrpcInferenceServiceClient<tonic::transport::Channel>;

/// A request with one BYTES input `image` holding `images` in `contents.bytes_contents`,
/// asking for the top `k` classes on the requested output when `k` is given.
fn image_request(model: &str, images: &[Vec<u8>], k: Option<i64>) -> ModelInferRequest {
    ModelInferRequest {
        model_name: model.into(),
        id: "it-1".into(),
        inputs: vec![InferInputTensor {
            name: "image".into(),
            datatype: "BYTES".into(),
            shape: vec![images.len() as i64],
            contents: Some(InferTensorContents {
                bytes_contents: images.iter().map(|i| i.clone().into()).collect(),
                ..Default::default()
            }),
            ..Default::default()
        }],
        outputs: k.map_or_else(Vec::new, |k| {
            vec![InferRequestedOutputTensor {
                name: "logits".into(),
                parameters: [(CLASSIFICATION_PARAMETER.to_owned(), int64_parameter(k))].into(),
            }]
        }),
        ..Default::default()
    }
}

/// A request with the model's FP32 input `input` of shape `shape`.
fn tensor_request(model: &str, shape: &[i64], values: Vec<f32>) -> ModelInferRequest {
    ModelInferRequest {
        model_name: model.into(),
        inputs: vec![InferInputTensor {
            name: "input".into(),
            datatype: "FP32".into(),
            shape: shape.to_vec(),
            contents: Some(InferTensorContents {
                fp32_contents: values,
                ..Default::default()
            }),
            ..Default::default()
        }],
        ..Default::default()
    }
}

/// The classification output: one row of `score:index:label` per image.
fn classes(response: &ModelInferResponse) -> Vec<Vec<ClassScore>> {
    let output = &response.outputs[0];
    assert_eq!(output.datatype, "BYTES");
    let [rows, k] = output.shape[..] else {
        panic!("classification shape {:?}", output.shape)
    };
    let scores: Vec<ClassScore> = decode_raw_bytes(&response.raw_output_contents[0])
        .expect("length-prefixed BYTES")
        .into_iter()
        .map(|s| ClassScore::parse(std::str::from_utf8(s).unwrap()).unwrap())
        .collect();
    assert_eq!(scores.len() as i64, rows * k);
    scores
        .chunks(k as usize)
        .map(<[ClassScore]>::to_vec)
        .collect()
}

/// The raw FP32 output, row after row.
fn floats(response: &ModelInferResponse) -> Vec<f32> {
    assert_eq!(response.outputs[0].datatype, "FP32");
    response.raw_output_contents[0]
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes(b.try_into().unwrap()))
        .collect()
}

fn argmax(row: &[f32]) -> usize {
    (0..row.len())
        .max_by(|&a, &b| row[a].total_cmp(&row[b]))
        .unwrap()
}

async fn infer(client: &mut Client, request: ModelInferRequest) -> ModelInferResponse {
    client.model_infer(request).await.unwrap().into_inner()
}

/// The top class of chelsea.jpg on Lite0: the server still works.
async fn assert_still_serves(client: &mut Client) {
    let response = infer(
        client,
        image_request(LITE0, &[photo("chelsea.jpg")], Some(1)),
    )
    .await;
    assert_eq!(classes(&response)[0][0].label, "Egyptian cat");
}

#[tokio::test]
async fn the_server_is_live_ready_and_describes_itself() {
    let server = spawn_model_server().await;
    let mut client = server.client().await;
    assert!(
        client
            .server_live(ServerLiveRequest {})
            .await
            .unwrap()
            .into_inner()
            .live
    );
    assert!(
        client
            .server_ready(ServerReadyRequest {})
            .await
            .unwrap()
            .into_inner()
            .ready
    );
    for name in [LITE0, LITE2] {
        let ready = client
            .model_ready(ModelReadyRequest {
                name: name.into(),
                version: String::new(),
            })
            .await
            .unwrap()
            .into_inner();
        assert!(ready.ready, "{name}");
    }
    let metadata = client
        .server_metadata(ServerMetadataRequest {})
        .await
        .unwrap()
        .into_inner();
    assert_eq!(metadata.name, "tandem-model-server");
    assert_eq!(metadata.version, env!("CARGO_PKG_VERSION"));
    assert_eq!(metadata.extensions, ["classification"]);
}

#[tokio::test]
async fn model_metadata_gives_names_shapes_and_datatypes() {
    let server = spawn_model_server().await;
    let mut client = server.client().await;
    for (name, side) in [(LITE0, 224), (LITE2, 260)] {
        let metadata = client
            .model_metadata(ModelMetadataRequest {
                name: name.into(),
                version: String::new(),
            })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(metadata.name, name);
        assert_eq!(metadata.versions, ["1"]);
        assert_eq!(metadata.platform, "onnxruntime_onnx");
        let inputs: Vec<(&str, &str, &[i64])> = metadata
            .inputs
            .iter()
            .map(|t| (t.name.as_str(), t.datatype.as_str(), t.shape.as_slice()))
            .collect();
        assert_eq!(
            inputs,
            [
                ("input", "FP32", &[-1, 3, side, side][..]),
                ("image", "BYTES", &[-1][..])
            ]
        );
        assert_eq!(metadata.outputs.len(), 1);
        assert_eq!(metadata.outputs[0].name, "logits");
        assert_eq!(metadata.outputs[0].datatype, "FP32");
        assert_eq!(metadata.outputs[0].shape, [-1, 1000]);
    }
}

#[tokio::test]
async fn chelsea_is_an_egyptian_cat_on_both_models() {
    let server = spawn_model_server().await;
    let mut client = server.client().await;
    for model in [LITE0, LITE2] {
        let response = infer(
            &mut client,
            image_request(model, &[photo("chelsea.jpg")], Some(3)),
        )
        .await;
        assert_eq!(response.model_name, model);
        assert_eq!(response.id, "it-1", "the request id is echoed");
        assert_eq!(response.outputs[0].name, "logits");
        assert_eq!(response.outputs[0].shape, [1, 3]);
        let top = &classes(&response)[0];
        assert_eq!(
            (top[0].index, top[0].label.as_str()),
            (EGYPTIAN_CAT, "Egyptian cat"),
            "{model}: {top:?}"
        );
    }
}

#[tokio::test]
async fn coffee_is_espresso_with_classification_on_the_request() {
    let server = spawn_model_server().await;
    let mut client = server.client().await;
    for model in [LITE0, LITE2] {
        let mut request = image_request(model, &[photo("coffee.jpg")], None);
        request.parameters = [(CLASSIFICATION_PARAMETER.to_owned(), int64_parameter(2))].into();
        let top = &classes(&infer(&mut client, request).await)[0];
        assert_eq!(top.len(), 2);
        assert_eq!(
            (top[0].index, top[0].label.as_str()),
            (ESPRESSO, "espresso"),
            "{model}: {top:?}"
        );
    }
}

#[tokio::test]
async fn images_may_come_in_raw_input_contents() {
    let server = spawn_model_server().await;
    let mut client = server.client().await;
    let mut request = image_request(LITE0, &[], Some(1));
    request.inputs[0].shape = vec![2, 1];
    request.inputs[0].contents = None;
    let (cat, coffee) = (photo("chelsea.jpg"), photo("coffee.jpg"));
    request.raw_input_contents = vec![encode_raw_bytes([cat.as_slice(), coffee.as_slice()]).into()];
    let rows = classes(&infer(&mut client, request).await);
    assert_eq!(rows[0][0].label, "Egyptian cat");
    assert_eq!(rows[1][0].label, "espresso");
}

#[tokio::test]
async fn a_batch_of_two_images_gives_two_rows_in_order() {
    let server = spawn_model_server().await;
    let mut client = server.client().await;
    let images = [photo("coffee.jpg"), photo("chelsea.jpg")];
    let response = infer(&mut client, image_request(LITE2, &images, Some(1))).await;
    assert_eq!(response.outputs[0].shape, [2, 1]);
    let rows = classes(&response);
    assert_eq!(rows[0][0].index, ESPRESSO);
    assert_eq!(rows[1][0].index, EGYPTIAN_CAT);
}

#[tokio::test]
async fn without_classification_the_logits_come_back_raw() {
    let server = spawn_model_server().await;
    let mut client = server.client().await;
    let images = [photo("chelsea.jpg"), photo("coffee.jpg")];
    let response = infer(&mut client, image_request(LITE0, &images, None)).await;
    assert_eq!(response.outputs[0].name, "logits");
    assert_eq!(response.outputs[0].shape, [2, 1000]);
    let logits = floats(&response);
    assert_eq!(logits.len(), 2000);
    assert_eq!(argmax(&logits[..1000]), EGYPTIAN_CAT);
    assert_eq!(argmax(&logits[1000..]), ESPRESSO);
}

#[tokio::test]
async fn classification_gives_k_classes_best_first_with_softmax_scores() {
    let server = spawn_model_server().await;
    let mut client = server.client().await;
    let cat = photo("chelsea.jpg");
    let logits = floats(
        &infer(
            &mut client,
            image_request(LITE0, std::slice::from_ref(&cat), None),
        )
        .await,
    );
    let max = logits.iter().copied().fold(f32::MIN, f32::max);
    let sum: f32 = logits.iter().map(|l| (l - max).exp()).sum();
    let probability = |i: usize| (logits[i] - max).exp() / sum;

    for k in [1, 5, 10] {
        let top = &classes(
            &infer(
                &mut client,
                image_request(LITE0, std::slice::from_ref(&cat), Some(k)),
            )
            .await,
        )[0];
        assert_eq!(top.len(), k as usize);
        for pair in top.windows(2) {
            assert!(pair[0].score >= pair[1].score, "best first: {top:?}");
        }
        for class in top {
            assert!(
                (class.score - probability(class.index)).abs() < 1e-5,
                "{class:?}"
            );
        }
    }
    let top = &classes(&infer(&mut client, image_request(LITE0, &[cat], Some(3))).await)[0];
    let labels: Vec<&str> = top.iter().map(|c| c.label.as_str()).collect();
    assert_eq!(labels, ["Egyptian cat", "tiger cat", "tabby"]);
}

/// The client's own preprocessing, written independently of the server's: the image crate's
/// decoder, crop and triangle (bilinear) resize, then (x - 127) / 128 in NCHW order.
fn client_side_tensor(jpeg: &[u8], side: u32) -> Vec<f32> {
    use image::imageops::{self, FilterType};
    let rgb = image::load_from_memory(jpeg).unwrap().to_rgb8();
    let (w, h) = rgb.dimensions();
    let s = w.min(h);
    let square = imageops::crop_imm(&rgb, (w - s) / 2, (h - s) / 2, s, s).to_image();
    let resized = imageops::resize(&square, side, side, FilterType::Triangle);
    let plane = (side * side) as usize;
    let mut tensor = vec![0.0; 3 * plane];
    for (x, y, pixel) in resized.enumerate_pixels() {
        for c in 0..3 {
            tensor[c * plane + (y * side + x) as usize] = (f32::from(pixel[c]) - 127.0) / 128.0;
        }
    }
    tensor
}

#[tokio::test]
async fn fp32_tensors_prepared_by_the_client_are_accepted() {
    let server = spawn_model_server().await;
    let mut client = server.client().await;
    let tensor = client_side_tensor(&photo("chelsea.jpg"), 224);

    let response = infer(
        &mut client,
        tensor_request(LITE0, &[1, 3, 224, 224], tensor.clone()),
    )
    .await;
    assert_eq!(response.outputs[0].shape, [1, 1000]);
    assert_eq!(argmax(&floats(&response)), EGYPTIAN_CAT);

    // The same tensor as raw little-endian bytes, with classification.
    let mut raw = tensor_request(LITE0, &[1, 3, 224, 224], Vec::new());
    raw.inputs[0].contents = None;
    raw.raw_input_contents = vec![
        tensor
            .iter()
            .flat_map(|v| v.to_le_bytes())
            .collect::<Vec<u8>>()
            .into(),
    ];
    raw.parameters = [(CLASSIFICATION_PARAMETER.to_owned(), int64_parameter(1))].into();
    assert_eq!(
        classes(&infer(&mut client, raw).await)[0][0].label,
        "Egyptian cat"
    );
}

#[tokio::test]
async fn concurrent_requests_each_get_their_own_answer() {
    let server = spawn_model_server().await;
    let client = server.client().await;
    let (cat, coffee) = (photo("chelsea.jpg"), photo("coffee.jpg"));
    let requests = (0..8).map(|i| {
        let mut client = client.clone();
        let (image, want) = if i % 2 == 0 {
            (cat.clone(), EGYPTIAN_CAT)
        } else {
            (coffee.clone(), ESPRESSO)
        };
        async move {
            let mut request = image_request(LITE0, &[image], Some(1));
            request.id = format!("request-{i}");
            let response = infer(&mut client, request).await;
            assert_eq!(response.id, format!("request-{i}"));
            assert_eq!(classes(&response)[0][0].index, want, "request {i}");
        }
    });
    futures::future::join_all(requests).await;
}
