//! Stopping the model server: after the shutdown signal it accepts no new connections, and
//! requests in flight get the grace period (`TANDEM_SHUTDOWN_GRACE_SECS`) to finish, no more.
//!
//! The real server (`tandem_model_server::run`) on a repository of one null model, which needs
//! no ONNX Runtime. Its queue delay makes every request a slow one: a request alone waits
//! [`QUEUE_DELAY`] in the model's queue for others to batch with.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::{
    io::Cursor,
    net::SocketAddr,
    path::Path,
    time::{Duration, Instant},
};

use bytes::Bytes;
use tandem_core::config::{Env, FromEnv as _};
use tandem_model_server::ModelServerConfig;
use tandem_proto::{
    GrpcInferenceServiceClient, InferTensorContents, ModelInferRequest, ModelInferResponse,
    ServerReadyRequest, model_infer_request::InferInputTensor,
};
use tokio::{sync::oneshot, task::JoinHandle};
use tonic::transport::Channel;

/// How long each request waits in the model's queue: the longest `max_queue_delay_us` allows.
const QUEUE_DELAY: Duration = Duration::from_secs(1);
/// How long any one wait of these tests may take before it fails.
const PATIENCE: Duration = Duration::from_secs(30);

/// A model server started by a test.
struct Server {
    addr: SocketAddr,
    stop: oneshot::Sender<()>,
    task: JoinHandle<anyhow::Result<()>>,
    _root: tempfile::TempDir,
}

/// Starts the server on a repository holding one null model, `model`, and waits until ready.
async fn start(model: &str, grace: Duration) -> Server {
    let root = tempfile::tempdir().unwrap();
    let repository = root.path().join("models");
    write_slow_null_model(&repository.join(model));
    // Never loaded (null models need no ONNX Runtime), but the server checks that it exists.
    let dylib = root.path().join("libonnxruntime.so");
    std::fs::write(&dylib, b"").unwrap();
    let mut config = ModelServerConfig::from_source(Env::from_pairs([
        ("TANDEM_MODEL_REPOSITORY", repository.to_str().unwrap()),
        ("ORT_DYLIB_PATH", dylib.to_str().unwrap()),
    ]))
    .unwrap();
    config.shutdown_grace = grace;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop, stopped) = oneshot::channel::<()>();
    let task = tokio::spawn(tandem_model_server::run(listener, config, async {
        let _ = stopped.await;
    }));
    let server = Server {
        addr,
        stop,
        task,
        _root: root,
    };
    server.wait_ready().await;
    server
}

fn write_slow_null_model(dir: &Path) {
    std::fs::create_dir_all(dir).unwrap();
    std::fs::write(
        dir.join("config.toml"),
        format!(
            "backend = \"null\"\ninput_tensor = \"input\"\noutput_tensor = \"scores\"\n\
             width = 2\nheight = 2\nscaling = {{ scale = 1.0, offset = 0.0 }}\n\
             max_batch_size = 8\nmax_queue_delay_us = {}\n",
            QUEUE_DELAY.as_micros()
        ),
    )
    .unwrap();
}

impl Server {
    async fn client(&self) -> GrpcInferenceServiceClient<Channel> {
        GrpcInferenceServiceClient::connect(format!("http://{}", self.addr))
            .await
            .unwrap()
    }

    async fn wait_ready(&self) {
        let started = Instant::now();
        loop {
            if let Ok(mut client) =
                GrpcInferenceServiceClient::connect(format!("http://{}", self.addr)).await
                && let Ok(ready) = client.server_ready(ServerReadyRequest {}).await
                && ready.into_inner().ready
            {
                return;
            }
            assert!(!self.task.is_finished(), "the server stopped while loading");
            assert!(started.elapsed() < PATIENCE, "not ready after {PATIENCE:?}");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}

/// One 2 x 2 PNG for `model`, in a call of its own.
fn infer_one_image(
    mut client: GrpcInferenceServiceClient<Channel>,
    model: &str,
) -> JoinHandle<Result<ModelInferResponse, tonic::Status>> {
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
    tokio::spawn(async move { client.model_infer(request).await.map(|r| r.into_inner()) })
}

/// Waits until the server has prepared `model`'s first image (its preprocessing time is
/// recorded): the request is then in the model's queue, [`QUEUE_DELAY`] from done.
async fn wait_until_queued(model: &str) {
    let counted = format!("tandem_model_preprocess_duration_seconds_count{{model=\"{model}\"}} 1");
    let started = Instant::now();
    while !tandem_core::metrics::render()
        .lines()
        .any(|line| line == counted)
    {
        assert!(started.elapsed() < PATIENCE, "no request of {model} queued");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

#[tokio::test]
async fn a_request_that_outlasts_the_grace_period_is_cut_off_and_the_server_returns() {
    let grace = Duration::from_millis(200);
    assert!(grace < QUEUE_DELAY);
    let server = start("cut_off", grace).await;
    let call = infer_one_image(server.client().await, "cut_off");
    wait_until_queued("cut_off").await;

    let stopping = Instant::now();
    server.stop.send(()).unwrap();
    let stopped = tokio::time::timeout(PATIENCE, server.task)
        .await
        .expect("the server returned")
        .unwrap();
    let took = stopping.elapsed();
    stopped.expect("a drain cut short is still a clean stop");
    assert!(took >= grace, "the request had the grace period: {took:?}");

    // The request needed most of QUEUE_DELAY more: without the limit the server would have
    // waited for it, and it would have succeeded.
    let status = call
        .await
        .unwrap()
        .expect_err("the request was cut off with its connection");
    assert!(
        matches!(
            status.code(),
            tonic::Code::Unavailable | tonic::Code::Unknown | tonic::Code::Cancelled
        ),
        "{status:?}"
    );
}

#[tokio::test]
async fn requests_in_flight_at_shutdown_finish_while_new_connections_are_refused() {
    let grace = Duration::from_secs(60);
    let server = start("drained", grace).await;
    let call = infer_one_image(server.client().await, "drained");
    wait_until_queued("drained").await;

    let stopping = Instant::now();
    server.stop.send(()).unwrap();
    while tokio::net::TcpStream::connect(server.addr).await.is_ok() {
        assert!(stopping.elapsed() < PATIENCE, "still accepting connections");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let response = call.await.unwrap().expect("the request in flight finished");
    assert_eq!(response.outputs[0].shape, [1, 1], "one image, one class");
    tokio::time::timeout(PATIENCE, server.task)
        .await
        .expect("the server returned")
        .unwrap()
        .unwrap();
    assert!(
        stopping.elapsed() < grace,
        "the server returned once drained, not at the end of the grace period"
    );
}
