//! The fetch loop: pull only as many jobs as there are free slots, run each in its own task.
//!
//! Fetching exactly the free slots (not the client's default batch of hundreds) keeps jobs on
//! the server where another worker can take them, instead of aging past AckWait in a buffer.

use std::{
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use async_nats::jetstream::{self, consumer::PullConsumer};
use futures::StreamExt as _;
use tandem_core::{
    metrics::Readiness, model_client::ModelClient, nats as contract, store::JobStore,
};
use tokio::{sync::Semaphore, task::JoinSet};

use crate::{
    config::WorkerConfig,
    job::{self, JobContext},
};

/// How long one pull request waits on the server for jobs (long poll).
const PULL_EXPIRY: Duration = Duration::from_secs(5);
/// Consecutive fetch errors after which the consumer handle is re-created.
const ERRORS_BEFORE_RECREATE: u32 = 3;

/// Runs a slow-worker until `shutdown` resolves; running jobs then get the grace period to finish.
pub async fn run(
    config: WorkerConfig,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    run_with_ops(config, None, shutdown).await
}

/// What the worker's `/readyz` checks.
#[derive(Debug)]
struct WorkerReadiness {
    client: async_nats::Client,
    set_up: AtomicBool,
    model: ModelClient,
    slow_model: String,
}

impl Readiness for WorkerReadiness {
    async fn checks(&self) -> Vec<(&'static str, bool)> {
        let nats = self.client.connection_state() == async_nats::connection::State::Connected;
        let js = async_nats::jetstream::new(self.client.clone());
        let (slow_model, present) = tokio::join!(
            self.model.model_ready(&self.slow_model),
            tandem_core::metrics::jetstream_checks(&js),
        );
        let mut checks = vec![
            ("nats_connected", nats),
            ("jetstream_ready", self.set_up.load(Ordering::Relaxed)),
        ];
        checks.extend(present);
        checks.push(("slow_model_ready", slow_model));
        checks
    }
}

/// Stops the ops listener when the worker stops, however it stops.
struct AbortOnDrop(tokio::task::JoinHandle<std::io::Result<()>>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// [`run`], also serving `/metrics`, `/healthz` and `/readyz` on `ops` (the binary binds
/// `TANDEM_WORKER_HTTP_ADDR`) while the worker runs.
pub async fn run_with_ops(
    config: WorkerConfig,
    ops: Option<tokio::net::TcpListener>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    tandem_core::metrics::init();
    let client = contract::connect(&config.nats, "tandem-slow-worker").await?;
    let js = jetstream::new(client.clone());
    let model = ModelClient::new(&config.model_server_url, config.model_timeout)?;
    let readiness = Arc::new(WorkerReadiness {
        client: client.clone(),
        set_up: AtomicBool::new(false),
        model: model.clone(),
        slow_model: config.slow_model.clone(),
    });
    let _ops = match ops {
        Some(listener) => {
            tracing::info!(addr = %listener.local_addr()?, "worker ops listener (/metrics, /healthz, /readyz)");
            Some(AbortOnDrop(tokio::spawn(tandem_core::metrics::serve_ops(
                listener,
                readiness.clone(),
                std::future::pending(),
            ))))
        }
        None => None,
    };

    tokio::pin!(shutdown);
    let (consumer, store, images) = tokio::select! {
        parts = set_up(&js, &config) => parts,
        () = &mut shutdown => return Ok(()),
    };
    readiness.set_up.store(true, Ordering::Relaxed);
    // Fetching before the slow model is loaded would only spend a delivery on a retry.
    tokio::select! {
        () = wait_for_model(&model, &config.slow_model) => {}
        () = &mut shutdown => return Ok(()),
    }
    let ctx = Arc::new(JobContext {
        config: config.clone(),
        model,
        store,
        images,
    });
    let advisories = tokio::spawn(crate::advisory::run(
        client.clone(),
        js.clone(),
        ctx.clone(),
    ));
    tracing::info!(
        model = %config.slow_model,
        concurrency = config.concurrency,
        "slow-worker consuming {}",
        contract::JOBS_STREAM
    );

    let slots = Arc::new(Semaphore::new(config.concurrency));
    let mut running = JoinSet::new();
    let mut consumer = consumer;
    let mut errors = 0u32;
    loop {
        // Wait for at least one free slot, then take every free one.
        let first = tokio::select! {
            permit = slots.clone().acquire_owned() => permit?,
            () = &mut shutdown => break,
        };
        let mut permits = vec![first];
        while let Ok(permit) = slots.clone().try_acquire_owned() {
            permits.push(permit);
        }
        let batch = consumer
            .batch()
            .max_messages(permits.len())
            .expires(PULL_EXPIRY)
            .messages()
            .await;
        let mut batch = match batch {
            Ok(batch) => batch,
            Err(e) => {
                errors += 1;
                tracing::warn!(error = %e, errors, "cannot fetch jobs");
                drop(permits);
                consumer = recover(&js, &config, consumer, errors, &mut shutdown).await;
                continue;
            }
        };
        loop {
            let next = tokio::select! {
                next = batch.next() => next,
                () = &mut shutdown => { drop(permits); return drain(running, config.shutdown_grace, client, advisories).await; }
            };
            match next {
                Some(Ok(msg)) => {
                    errors = 0;
                    let Some(permit) = permits.pop() else { break };
                    let ctx = ctx.clone();
                    running.spawn(async move {
                        let outcome = job::process(ctx, msg).await;
                        drop(permit);
                        outcome
                    });
                }
                Some(Err(e)) => {
                    errors += 1;
                    tracing::warn!(error = %e, errors, "error while fetching jobs");
                    break;
                }
                None => break,
            }
        }
        drop(permits);
        if errors >= ERRORS_BEFORE_RECREATE {
            consumer = recover(&js, &config, consumer, errors, &mut shutdown).await;
        }
        // Reap finished tasks so the set does not grow.
        while running.try_join_next().is_some() {}
    }
    drain(running, config.shutdown_grace, client, advisories).await
}

/// Creates (or updates) the stream, consumer and buckets, retrying until NATS is there.
async fn set_up(
    js: &jetstream::Context,
    config: &WorkerConfig,
) -> (PullConsumer, JobStore, jetstream::object_store::ObjectStore) {
    let mut delay = Duration::from_millis(100);
    loop {
        let attempt = async {
            let consumer = contract::ensure_worker_consumer(js, &config.nats).await?;
            let kv = contract::ensure_jobs_bucket(js, &config.nats).await?;
            let images = contract::ensure_images_bucket(js, &config.nats).await?;
            Ok::<_, async_nats::Error>((consumer, JobStore::new(kv), images))
        };
        match attempt.await {
            Ok(parts) => return parts,
            Err(e) => {
                tracing::warn!(error = %e, retry_in = ?delay, "JetStream set-up failed");
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(Duration::from_secs(5));
            }
        }
    }
}

/// Waits until the model server says `name` is ready, saying so every 10 s while it waits
/// (a model still loading, a model server not up yet, or a wrong `TANDEM_SLOW_MODEL`).
async fn wait_for_model(model: &ModelClient, name: &str) {
    let started = tokio::time::Instant::now();
    let mut last_note = started;
    while !model.model_ready(name).await {
        if last_note.elapsed() >= Duration::from_secs(10) {
            last_note = tokio::time::Instant::now();
            tracing::warn!(
                model = name,
                waited = ?started.elapsed(),
                "slow model not ready on the model server; not taking jobs yet"
            );
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// After repeated errors (a restarted server can leave a consumer handle stuck), back off and
/// re-create the durable consumer idempotently.
async fn recover(
    js: &jetstream::Context,
    config: &WorkerConfig,
    current: PullConsumer,
    errors: u32,
    shutdown: &mut (impl Future<Output = ()> + Unpin),
) -> PullConsumer {
    let delay = Duration::from_millis(200 * u64::from(errors.min(25)));
    tokio::select! {
        () = tokio::time::sleep(delay) => {}
        () = shutdown => return current,
    }
    if errors < ERRORS_BEFORE_RECREATE {
        return current;
    }
    match contract::ensure_worker_consumer(js, &config.nats).await {
        Ok(consumer) => {
            tracing::info!("worker consumer re-created");
            consumer
        }
        Err(e) => {
            tracing::warn!(error = %e, "cannot re-create the worker consumer yet");
            current
        }
    }
}

async fn drain(
    mut running: JoinSet<job::Outcome>,
    grace: Duration,
    client: async_nats::Client,
    advisories: tokio::task::JoinHandle<()>,
) -> anyhow::Result<()> {
    advisories.abort();
    while running.try_join_next().is_some() {}
    tracing::info!(jobs = running.len(), "draining running jobs");
    let finished = tokio::time::timeout(grace, async {
        while running.join_next().await.is_some() {}
    })
    .await;
    if finished.is_err() {
        // Unfinished jobs are not acknowledged: JetStream redelivers them to another worker.
        tracing::warn!(
            jobs = running.len(),
            "grace period over; leaving jobs for redelivery"
        );
        running.abort_all();
    }
    let _ = tokio::time::timeout(Duration::from_secs(2), client.drain()).await;
    tracing::info!("slow-worker stopped");
    Ok(())
}
