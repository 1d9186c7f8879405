//! The real model server on the vendored `models/`, on a random loopback port.
//!
//! ONNX Runtime is found as the binary finds it: `ORT_DYLIB_PATH`, else
//! `.tandem/lib/libonnxruntime.so*` in the working directory (the workspace root) or above.

use std::{
    net::SocketAddr,
    time::{Duration, Instant},
};
use tandem_core::config::FromEnv as _;

use tandem_model_server::ModelServerConfig;
use tandem_proto::{GrpcInferenceServiceClient, ServerReadyRequest};
use tokio::{sync::oneshot, task::JoinHandle};
use tonic::transport::Channel;

use super::workspace_root;

/// How long models may take to load before a test gives up.
const READY_TIMEOUT: Duration = Duration::from_secs(120);

/// A running model server; stopped when dropped.
pub struct ModelServerHandle {
    addr: SocketAddr,
    shutdown: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<anyhow::Result<()>>>,
}

impl ModelServerHandle {
    /// `http://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The listening address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// A new client connected to the server.
    pub async fn client(&self) -> GrpcInferenceServiceClient<Channel> {
        GrpcInferenceServiceClient::connect(self.url())
            .await
            .unwrap_or_else(|e| panic!("cannot connect to the model server at {}: {e}", self.url()))
            .max_decoding_message_size(tandem_proto::MAX_MESSAGE_BYTES)
            .max_encoding_message_size(tandem_proto::MAX_MESSAGE_BYTES)
    }

    /// Stops the server and waits for it to finish.
    pub async fn stop(mut self) -> anyhow::Result<()> {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        match self.task.take() {
            Some(task) => task.await?,
            None => Ok(()),
        }
    }
}

impl Drop for ModelServerHandle {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
    }
}

/// Starts the model server on the repository's `models/` and waits until ServerReady.
pub async fn spawn_model_server() -> ModelServerHandle {
    spawn_model_server_with(|_| {}).await
}

/// Starts the model server on `addr` (to bring one back on the port it had).
pub async fn spawn_model_server_at(addr: SocketAddr) -> ModelServerHandle {
    spawn_model_server_with(|config| config.addr = addr).await
}

/// Like [`spawn_model_server`], after `adjust` has changed the configuration.
pub async fn spawn_model_server_with(
    adjust: impl FnOnce(&mut ModelServerConfig),
) -> ModelServerHandle {
    let mut config = ModelServerConfig::from_env().expect("model server configuration");
    config.model_repository = workspace_root().join("models");
    config.addr = SocketAddr::from(([127, 0, 0, 1], 0));
    adjust(&mut config);
    let listener = tokio::net::TcpListener::bind(config.addr).await.unwrap();
    let addr = listener.local_addr().unwrap();
    config.addr = addr;
    let (tx, rx) = oneshot::channel::<()>();
    let task = tokio::spawn(tandem_model_server::run(listener, config, async {
        let _ = rx.await;
    }));
    let mut handle = ModelServerHandle {
        addr,
        shutdown: Some(tx),
        task: Some(task),
    };
    handle.wait_ready().await;
    handle
}

impl ModelServerHandle {
    async fn wait_ready(&mut self) {
        let started = Instant::now();
        loop {
            if self.task.as_ref().is_some_and(JoinHandle::is_finished) {
                let result = self.task.take().unwrap().await;
                panic!("the model server stopped before it was ready: {result:?}");
            }
            if let Ok(mut client) = GrpcInferenceServiceClient::connect(self.url()).await
                && let Ok(ready) = client.server_ready(ServerReadyRequest {}).await
                && ready.into_inner().ready
            {
                return;
            }
            assert!(
                started.elapsed() < READY_TIMEOUT,
                "the model server at {} was not ready after {READY_TIMEOUT:?}",
                self.url()
            );
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }
}
