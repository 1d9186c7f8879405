//! `TestApp`: the whole service on loopback ports, as a client sees it.
//!
//! A fresh nats-server per test (isolation), the gateway and slow-workers in process (or a
//! worker as a real process, for SIGKILL tests), and the model server shared by every test
//! unless a test needs its own (loading models once keeps the suite fast on 2 cores).

use std::{
    future::Future,
    process::{Child, Command, Stdio},
    sync::OnceLock,
};
use tandem_core::config::FromEnv as _;

use tandem_core::config::Env;
use tokio::sync::oneshot;

use super::{
    gateway::Gateway,
    model_server::{ModelServerHandle, spawn_model_server},
    nats::NatsServer,
};

/// The model server every test may share, on its own runtime so it outlives each test's.
pub fn shared_model_server_url() -> String {
    static URL: OnceLock<String> = OnceLock::new();
    URL.get_or_init(|| {
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .expect("runtime");
            runtime.block_on(async move {
                let handle = spawn_model_server().await;
                tx.send(handle.url()).expect("send url");
                // Keep serving until the test process exits.
                std::future::pending::<()>().await;
                drop(handle);
            });
        });
        rx.recv().expect("shared model server started")
    })
    .clone()
}

/// A task stopped by sending on a oneshot; stopped on drop.
pub struct Stoppable {
    stop: Option<oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<anyhow::Result<()>>>,
}

impl Stoppable {
    pub fn spawn<F, Fut>(run: F) -> Self
    where
        F: FnOnce(std::pin::Pin<Box<dyn Future<Output = ()> + Send>>) -> Fut,
        Fut: Future<Output = anyhow::Result<()>> + Send + 'static,
    {
        let (tx, rx) = oneshot::channel::<()>();
        let shutdown = Box::pin(async move {
            let _ = rx.await;
        });
        Self {
            stop: Some(tx),
            task: Some(tokio::spawn(run(shutdown))),
        }
    }

    /// Signals shutdown and waits for the task to end.
    pub async fn stop(mut self) -> anyhow::Result<()> {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        match self.task.take() {
            Some(task) => task.await?,
            None => Ok(()),
        }
    }
}

impl Drop for Stoppable {
    fn drop(&mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
    }
}

/// A slow-worker process; SIGKILLed on drop so a failing test leaves nothing behind.
pub struct WorkerProcess(pub Child);

impl WorkerProcess {
    /// SIGKILL, and reap.
    pub fn kill(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl Drop for WorkerProcess {
    fn drop(&mut self) {
        self.kill();
    }
}

/// What to start.
pub struct AppOptions {
    /// In-process slow-workers.
    pub workers: usize,
    /// Settings for every service (e.g. `TANDEM_QUEUE_MAX_JOBS`).
    pub env: Vec<(String, String)>,
    /// A model server of the test's own (to stop and restart it); else the shared one.
    pub own_model_server: bool,
}

impl Default for AppOptions {
    fn default() -> Self {
        Self {
            workers: 1,
            env: Vec::new(),
            own_model_server: false,
        }
    }
}

/// The running service.
pub struct TestApp {
    pub nats: NatsServer,
    pub model_server: Option<ModelServerHandle>,
    pub model_server_url: String,
    pub gateway: Stoppable,
    pub workers: Vec<Stoppable>,
    /// `http://127.0.0.1:PORT` of each in-process worker's ops listener (`/metrics`,
    /// `/healthz`, `/readyz`), in the order of `workers`.
    pub worker_ops: Vec<String>,
    /// The gateway's HTTP API (`app.url(..)`, `app.job(..)`, ... through `Deref`).
    pub gateway_api: Gateway,
    env: Vec<(String, String)>,
}

/// Starts nats-server, the gateway and one slow-worker.
pub async fn spawn_app() -> TestApp {
    spawn_app_with(AppOptions::default()).await
}

/// Starts the service as `options` says, and waits until the gateway is ready.
pub async fn spawn_app_with(options: AppOptions) -> TestApp {
    let nats = NatsServer::start();
    let (model_server, model_server_url) = if options.own_model_server {
        let handle = spawn_model_server().await;
        let url = handle.url();
        (Some(handle), url)
    } else {
        (None, shared_model_server_url())
    };
    let mut env = vec![
        ("TANDEM_NATS_URL".to_owned(), nats.url()),
        (
            "TANDEM_MODEL_SERVER_URL".to_owned(),
            model_server_url.clone(),
        ),
        // Short timings so redelivery and retry tests finish quickly.
        ("TANDEM_ACK_WAIT_MS".to_owned(), "2000".to_owned()),
        ("TANDEM_RETRY_BASE_MS".to_owned(), "200".to_owned()),
        ("TANDEM_RETRY_MAX_MS".to_owned(), "1000".to_owned()),
        ("TANDEM_SHUTDOWN_GRACE_SECS".to_owned(), "2".to_owned()),
    ];
    env.extend(options.env);

    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let config = tandem_gateway::GatewayConfig::from_source(Env::from_pairs(env.clone())).unwrap();
    let gateway = Stoppable::spawn(move |shutdown| tandem_gateway::run(listener, config, shutdown));

    let mut app = TestApp {
        nats,
        model_server,
        model_server_url,
        gateway,
        workers: Vec::new(),
        worker_ops: Vec::new(),
        gateway_api: Gateway::new(&base, reqwest::Client::new()),
        env,
    };
    for _ in 0..options.workers {
        app.add_worker();
    }
    app.wait_ready().await;
    app
}

impl TestApp {
    /// Starts one more in-process slow-worker, with its ops listener on a random port.
    pub fn add_worker(&mut self) {
        let config = self.worker_config();
        let ops = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        ops.set_nonblocking(true).unwrap();
        let ops = tokio::net::TcpListener::from_std(ops).unwrap();
        self.worker_ops
            .push(format!("http://{}", ops.local_addr().unwrap()));
        self.workers.push(Stoppable::spawn(move |shutdown| {
            Box::pin(tandem_slow_worker::run_with_ops(
                config,
                Some(ops),
                shutdown,
            ))
        }));
    }

    /// [`add_worker`](Self::add_worker), with some settings of its own (e.g. another
    /// `TANDEM_MODEL_SERVER_URL` or `TANDEM_SLOW_MODEL`).
    pub fn add_worker_with(&mut self, settings: &[(&str, &str)]) {
        let saved = self.env.clone();
        self.env.extend(
            settings
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned())),
        );
        self.add_worker();
        self.env = saved;
    }

    fn worker_config(&self) -> tandem_slow_worker::WorkerConfig {
        tandem_slow_worker::WorkerConfig::from_source(Env::from_pairs(self.env.clone())).unwrap()
    }

    /// Stops the in-process gateway as SIGTERM would (drain for `TANDEM_SHUTDOWN_GRACE_SECS`,
    /// then close what is still open, SSE streams included), and starts a new one on the same
    /// port. Returns once the old one has stopped, without waiting for the new one to be ready.
    pub async fn restart_gateway(&mut self) {
        let addr: std::net::SocketAddr = self
            .gateway_api
            .base
            .trim_start_matches("http://")
            .parse()
            .expect("the gateway's base URL is http://IP:PORT");
        let old = std::mem::replace(
            &mut self.gateway,
            Stoppable::spawn(|_| std::future::ready(Ok(()))),
        );
        old.stop().await.expect("the gateway stops cleanly");
        // The old listener is closed; the port may linger for a moment.
        let started = std::time::Instant::now();
        let listener = loop {
            match tokio::net::TcpListener::bind(addr).await {
                Ok(listener) => break listener,
                Err(e) => {
                    assert!(
                        started.elapsed() < std::time::Duration::from_secs(10),
                        "cannot bind {addr} again: {e}"
                    );
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                }
            }
        };
        let config =
            tandem_gateway::GatewayConfig::from_source(Env::from_pairs(self.env.clone())).unwrap();
        self.gateway =
            Stoppable::spawn(move |shutdown| tandem_gateway::run(listener, config, shutdown));
    }

    /// Starts a slow-worker as its own process (the real binary), for tests that SIGKILL it.
    pub fn spawn_worker_process(&self) -> WorkerProcess {
        let binary = super::process::service_binary("tandem-slow-worker");
        Command::new(binary)
            .envs(self.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .env("RUST_LOG", "warn")
            .env("TANDEM_WORKER_HTTP_ADDR", "127.0.0.1:0")
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .map(WorkerProcess)
            .expect("worker process")
    }
}

impl std::ops::Deref for TestApp {
    type Target = Gateway;

    fn deref(&self) -> &Gateway {
        &self.gateway_api
    }
}
