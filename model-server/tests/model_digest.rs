//! The model's digest as clients see it: the real server (`tandem_model_server::run`) on a
//! repository of one null model (no ONNX Runtime needed), over gRPC.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::{
    io::Cursor,
    path::Path,
    time::{Duration, Instant},
};

use bytes::Bytes;
use tandem_core::config::{Env, FromEnv as _};
use tandem_model_server::ModelServerConfig;
use tandem_proto::{
    GrpcInferenceServiceClient, InferTensorContents, MODEL_DIGEST_PARAMETER, ModelInferRequest,
    ModelMetadataRequest, ServerReadyRequest, model_infer_request::InferInputTensor,
    string_parameter_of,
};
use tokio::sync::oneshot;
use tonic::transport::Channel;

const PATIENCE: Duration = Duration::from_secs(30);

/// Serves `repository` until the returned sender is dropped; a client once ready.
async fn serve(repository: &Path) -> (GrpcInferenceServiceClient<Channel>, oneshot::Sender<()>) {
    // Never loaded (null models need no ONNX Runtime), but the server checks that it exists.
    let dylib = repository.join("libonnxruntime.so");
    std::fs::write(&dylib, b"").unwrap();
    let config = ModelServerConfig::from_source(Env::from_pairs([
        ("TANDEM_MODEL_REPOSITORY", repository.to_str().unwrap()),
        ("ORT_DYLIB_PATH", dylib.to_str().unwrap()),
    ]))
    .unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let (stop, stopped) = oneshot::channel::<()>();
    tokio::spawn(tandem_model_server::run(listener, config, async {
        let _ = stopped.await;
    }));
    let started = Instant::now();
    loop {
        if let Ok(mut client) = GrpcInferenceServiceClient::connect(url.clone()).await
            && let Ok(ready) = client.server_ready(ServerReadyRequest {}).await
            && ready.into_inner().ready
        {
            return (client, stop);
        }
        assert!(started.elapsed() < PATIENCE, "not ready after {PATIENCE:?}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

fn write_null_model(dir: &Path) {
    std::fs::create_dir_all(dir).unwrap();
    std::fs::write(
        dir.join("config.toml"),
        "backend = \"null\"\ninput_tensor = \"input\"\noutput_tensor = \"scores\"\n\
         width = 2\nheight = 2\nscaling = { scale = 1.0, offset = 0.0 }\n",
    )
    .unwrap();
}

async fn metadata_digest(client: &mut GrpcInferenceServiceClient<Channel>, model: &str) -> String {
    let metadata = client
        .model_metadata(ModelMetadataRequest {
            name: model.to_owned(),
            version: String::new(),
        })
        .await
        .unwrap()
        .into_inner();
    string_parameter_of(&metadata.parameters, MODEL_DIGEST_PARAMETER)
        .expect("metadata carries the digest")
        .to_owned()
}

async fn infer_digest(client: &mut GrpcInferenceServiceClient<Channel>, model: &str) -> String {
    let image = image::RgbImage::from_pixel(2, 2, image::Rgb([200, 10, 10]));
    let mut png = Cursor::new(Vec::new());
    image.write_to(&mut png, image::ImageFormat::Png).unwrap();
    let request = ModelInferRequest {
        model_name: model.to_owned(),
        inputs: vec![InferInputTensor {
            name: "image".into(),
            datatype: "BYTES".into(),
            shape: vec![1],
            contents: Some(InferTensorContents {
                bytes_contents: vec![Bytes::from(png.into_inner())],
                ..Default::default()
            }),
            ..Default::default()
        }],
        ..Default::default()
    };
    let response = client.model_infer(request).await.unwrap().into_inner();
    string_parameter_of(&response.parameters, MODEL_DIGEST_PARAMETER)
        .expect("the answer carries the digest")
        .to_owned()
}

/// The line of `tandem_model_inferences_total` for `model`, as `/metrics` shows it.
fn inferences(model: &str) -> Option<String> {
    let prefix = format!("tandem_model_inferences_total{{model=\"{model}\"}} ");
    tandem_core::metrics::render()
        .lines()
        .find_map(|line| line.strip_prefix(&prefix).map(str::to_owned))
}

#[tokio::test]
async fn metadata_and_answers_report_one_digest_stable_across_loads() {
    let root = tempfile::tempdir().unwrap();
    write_null_model(&root.path().join("digested"));
    let (mut client, _stop) = serve(root.path()).await;
    let digest = metadata_digest(&mut client, "digested").await;
    assert!(digest.starts_with("sha256:"), "{digest}");
    assert_eq!(
        inferences("digested").as_deref(),
        Some("0"),
        "counted from 0"
    );
    assert_eq!(infer_digest(&mut client, "digested").await, digest);
    assert_eq!(inferences("digested").as_deref(), Some("1"), "one image");

    // A second server on the same files: the same model.
    let (mut again, _stop_again) = serve(root.path()).await;
    assert_eq!(metadata_digest(&mut again, "digested").await, digest);
}
