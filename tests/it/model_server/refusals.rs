//! What the model server refuses, and how: each bad request gets a status code and a message
//! saying what was wrong and what was expected, and the server keeps serving afterwards. A bad
//! model repository stops the server with an error naming the file and the field.

use std::time::Duration;
use tandem_core::config::FromEnv as _;
use tandem_proto::{InferTensorContents, ModelInferRequest, ModelMetadataRequest};

use tandem_model_server::ModelServerConfig;
use tonic::Code;

use super::{LITE0, LITE2, assert_still_serves, image_request, tensor_request};
use crate::support::{model_server::spawn_model_server, photo, png_claiming, workspace_root};

/// Sends a bad request: it must be refused with `code`, a message containing each of `needles`,
/// and the server must keep serving.
async fn assert_refused(request: ModelInferRequest, code: Code, needles: &[&str]) {
    let server = spawn_model_server().await;
    let mut client = server.client().await;
    let status = client.model_infer(request).await.unwrap_err();
    assert_eq!(status.code(), code, "{status:?}");
    for needle in needles {
        assert!(
            status.message().contains(needle),
            "{needle:?} not in {:?}",
            status.message()
        );
    }
    assert_still_serves(&mut client).await;
}

#[tokio::test]
async fn unknown_model_is_not_found_and_lists_the_models() {
    let server = spawn_model_server().await;
    let mut client = server.client().await;
    let status = client
        .model_metadata(ModelMetadataRequest {
            name: "resnet".into(),
            version: String::new(),
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::NotFound);
    assert!(status.message().contains("\"resnet\""), "{status:?}");
    assert!(
        status.message().contains(LITE0) && status.message().contains(LITE2),
        "{status:?}"
    );
    assert_refused(
        image_request("resnet", &[photo("chelsea.jpg")], Some(1)),
        Code::NotFound,
        &["\"resnet\"", LITE0, LITE2],
    )
    .await;
}

#[tokio::test]
async fn not_an_image_is_invalid() {
    let request = image_request(LITE0, &[b"GIF? no, plain text".to_vec()], Some(1));
    assert_refused(
        request,
        Code::InvalidArgument,
        &[
            "image 0 could not be decoded",
            "not a recognised image format",
        ],
    )
    .await;
}

#[tokio::test]
async fn a_truncated_jpeg_is_invalid() {
    let jpeg = photo("chelsea.jpg");
    let images = [photo("coffee.jpg"), jpeg[..jpeg.len() / 2].to_vec()];
    assert_refused(
        image_request(LITE0, &images, Some(1)),
        Code::InvalidArgument,
        &["image 1 is truncated"],
    )
    .await;
}

#[tokio::test]
async fn empty_bytes_are_invalid() {
    assert_refused(
        image_request(LITE0, &[Vec::new()], Some(1)),
        Code::InvalidArgument,
        &["image 0", "empty"],
    )
    .await;
}

#[tokio::test]
async fn a_png_claiming_50000_by_50000_is_refused_unread() {
    // 65 bytes whose header claims 50000 x 50000 RGB pixels (7.5 GB decoded).
    let request = image_request(LITE0, &[png_claiming(50_000, 50_000)], Some(1));
    assert_refused(
        request,
        Code::InvalidArgument,
        &[
            "image 0 is 50000x50000",
            "over the limit of 40000000 pixels",
        ],
    )
    .await;
}

#[tokio::test]
async fn a_wrong_tensor_shape_is_invalid() {
    let request = tensor_request(LITE0, &[1, 3, 260, 260], vec![0.0; 3 * 260 * 260]);
    assert_refused(
        request,
        Code::InvalidArgument,
        &["[1, 3, 260, 260]", "[-1, 3, 224, 224]"],
    )
    .await;
}

#[tokio::test]
async fn a_wrong_datatype_is_invalid() {
    let mut request = tensor_request(LITE0, &[1, 3, 224, 224], Vec::new());
    request.inputs[0].datatype = "INT64".into();
    request.inputs[0].contents = Some(InferTensorContents {
        int64_contents: vec![0; 3 * 224 * 224],
        ..Default::default()
    });
    assert_refused(
        request,
        Code::InvalidArgument,
        &["\"INT64\"", "expected FP32"],
    )
    .await;
}

#[tokio::test]
async fn a_wrong_element_count_is_invalid() {
    let request = tensor_request(LITE0, &[1, 3, 224, 224], vec![0.0; 1000]);
    assert_refused(
        request,
        Code::InvalidArgument,
        &["1000 values", "needs 150528"],
    )
    .await;
}

#[tokio::test]
async fn zero_or_two_inputs_are_invalid() {
    let mut none = image_request(LITE0, &[], None);
    none.inputs.clear();
    assert_refused(
        none,
        Code::InvalidArgument,
        &["0 inputs", "exactly one input"],
    )
    .await;
    let mut two = image_request(LITE0, &[photo("chelsea.jpg")], None);
    two.inputs.push(two.inputs[0].clone());
    assert_refused(two, Code::InvalidArgument, &["2 inputs"]).await;
}

#[tokio::test]
async fn a_batch_over_the_maximum_is_invalid() {
    let images = vec![photo("coffee.jpg"); 9];
    assert_refused(
        image_request(LITE0, &images, Some(1)),
        Code::InvalidArgument,
        &["batch of 9", "max_batch_size of 8"],
    )
    .await;
}

/// A repository holding a copy of Lite0 whose `config.toml` is `config`.
fn repository_with(config: &str) -> tempfile::TempDir {
    let root = tempfile::tempdir().unwrap();
    let vendored = workspace_root().join("models/efficientnet_lite0");
    let dir = root.path().join("broken");
    std::fs::create_dir(&dir).unwrap();
    std::os::unix::fs::symlink(vendored.join("model.onnx"), dir.join("model.onnx")).unwrap();
    std::fs::copy(vendored.join("labels.txt"), dir.join("labels.txt")).unwrap();
    std::fs::write(dir.join("config.toml"), config).unwrap();
    root
}

/// Runs the server on `repository` and returns its error (it must stop by itself).
async fn run_error(repository: &std::path::Path) -> String {
    let mut config = ModelServerConfig::from_env().unwrap();
    config.model_repository = repository.to_path_buf();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let run = tandem_model_server::run(listener, config, std::future::pending());
    let result = tokio::time::timeout(Duration::from_secs(120), run)
        .await
        .expect("the server stops by itself");
    format!("{:#}", result.unwrap_err())
}

const LITE0_CONFIG: &str = r#"
input_tensor = "input"
output_tensor = "logits"
width = 224
height = 224
scaling = { scale = 0.0078125, offset = -0.9921875 }
"#;

#[tokio::test]
async fn a_bad_config_toml_stops_the_server_at_start_naming_file_and_field() {
    let repository = repository_with(&LITE0_CONFIG.replace("width = 224", "width = 0"));
    let error = run_error(repository.path()).await;
    assert!(error.contains("broken/config.toml"), "{error}");
    assert!(error.contains("field `width`"), "{error}");
}

#[tokio::test]
async fn a_config_that_does_not_match_the_onnx_file_stops_the_server() {
    let repository = repository_with(&LITE0_CONFIG.replace("\"input\"", "\"pixels\""));
    let error = run_error(repository.path()).await;
    assert!(error.contains("field `input_tensor`"), "{error}");
    assert!(
        error.contains("\"pixels\"") && error.contains("its input: input"),
        "{error}"
    );

    let repository = repository_with(&LITE0_CONFIG.replace("224", "256"));
    let error = run_error(repository.path()).await;
    assert!(error.contains("`width`/`height`/`layout`"), "{error}");
}
