//! The worker's life: set up, wait for the slow model, run the fetch loop on the jobs
//! (`tandem_core::pull`: only as many jobs pulled as there are free slots), drain on shutdown.

use std::{
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use async_nats::jetstream::{self, consumer::PullConsumer};
use tandem_core::{
    model_client::ModelClient,
    nats as contract,
    ops::{Check, JetStreamPresence, Readiness},
    pull::FetchLoop,
    result_cache::ResultCache,
    retry,
    store::JobStore,
};
use tokio::task::JoinSet;

use crate::{
    config::WorkerConfig,
    job::{self, JobContext},
};

/// Runs a slow-worker until `shutdown` resolves; running jobs then get the grace period to finish.
pub async fn run(
    config: WorkerConfig,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    run_with_ops(config, None, shutdown).await
}

/// What the worker's `/readyz` checks: all of it gates.
#[derive(Debug)]
struct WorkerReadiness {
    client: async_nats::Client,
    set_up: AtomicBool,
    model: ModelClient,
    slow_model: String,
}

impl WorkerReadiness {
    fn new(client: &async_nats::Client, model: &ModelClient, config: &WorkerConfig) -> Self {
        Self {
            client: client.clone(),
            set_up: AtomicBool::new(false),
            model: model.clone(),
            slow_model: config.slow_model.clone(),
        }
    }
}

impl Readiness for WorkerReadiness {
    async fn checks(&self) -> Vec<Check> {
        let nats = self.client.connection_state() == async_nats::connection::State::Connected;
        let js = jetstream::new(self.client.clone());
        let (slow_model, present) = tokio::join!(
            self.model.model_ready(&self.slow_model),
            JetStreamPresence::check(&js),
        );
        vec![
            Check::gating("nats_connected", nats),
            Check::gating("jetstream_ready", self.set_up.load(Ordering::Relaxed)),
            Check::gating("stream_present", present.stream),
            Check::gating("consumer_present", present.consumer),
            Check::gating("bucket_present", present.bucket),
            Check::gating("slow_model_ready", slow_model),
        ]
    }
}

/// [`run`], also serving `/metrics`, `/healthz` and `/readyz` on `ops` (the binary binds
/// `TANDEM_WORKER_HTTP_ADDR`) until the same shutdown.
pub async fn run_with_ops(
    config: WorkerConfig,
    ops: Option<tokio::net::TcpListener>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    tandem_core::metrics::init();
    let shutdown = tandem_core::shutdown::shared(shutdown);
    let client = contract::connect(&config.nats, "tandem-slow-worker").await?;
    let js = jetstream::new(client.clone());
    let model = ModelClient::new(&config.model_server_url, config.model_timeout)?;
    let readiness = Arc::new(WorkerReadiness::new(&client, &model, &config));
    let _ops = ops
        .map(|ops| tandem_core::ops::spawn("worker", ops, readiness.clone(), shutdown.clone()))
        .transpose()?;

    let parts = tokio::select! {
        parts = set_up_then_wait(&js, &config, &readiness, &model) => parts,
        () = shutdown.clone() => return Ok(()),
    };
    let (jobs, audits) = (parts.jobs, parts.audits);
    let ctx = Arc::new(JobContext {
        config: config.clone(),
        model,
        store: parts.store,
        images: parts.images,
        js: js.clone(),
        cache: parts.cache,
        running: Default::default(),
        started: std::time::Instant::now(),
        last_reconnect_ms: Default::default(),
    });
    let audits = (config.audit_concurrency > 0).then(|| {
        let run = run_audits(audits, js.clone(), ctx.clone(), shutdown.clone());
        tokio_util::task::AbortOnDropHandle::new(tokio::spawn(run))
    });
    let advisories = tokio_util::task::AbortOnDropHandle::new(tokio::spawn(crate::advisory::run(
        client.clone(),
        js.clone(),
        ctx.clone(),
    )));
    tracing::info!(
        model = %config.slow_model,
        concurrency = config.concurrency,
        "slow-worker consuming {}",
        contract::JOBS_STREAM
    );
    let running = FetchLoop {
        what: "jobs",
        consumer: jobs,
        recreate: || contract::ensure_worker_consumer(&js, &config.nats),
        concurrency: config.concurrency,
    }
    .run(
        |msg| {
            // Boxed: a job's future carries its records (kilobytes).
            Box::pin(job::process(ctx.clone(), msg))
        },
        shutdown,
    )
    .await;
    drop(advisories);
    // Audits in flight are not acknowledged: they are redelivered (no job depends on them).
    drop(audits);
    drain(running, config.shutdown_grace, client).await;
    Ok(())
}

/// Sets up JetStream, then waits for the slow model: fetching before it is loaded would only
/// spend a delivery on a retry.
async fn set_up_then_wait(
    js: &jetstream::Context,
    config: &WorkerConfig,
    readiness: &WorkerReadiness,
    model: &ModelClient,
) -> Parts {
    let parts = Box::pin(set_up(js, config)).await;
    readiness.set_up.store(true, Ordering::Relaxed);
    wait_for_model(model, &config.slow_model).await;
    parts
}

/// The audit jobs' fetch loop, until shutdown.
async fn run_audits(
    consumer: PullConsumer,
    js: jetstream::Context,
    ctx: Arc<JobContext>,
    shutdown: tandem_core::shutdown::Shutdown,
) {
    let settings = ctx.config.nats.clone();
    let running = FetchLoop {
        what: "audit jobs",
        consumer,
        recreate: || contract::ensure_audit_consumer(&js, &settings),
        concurrency: ctx.config.audit_concurrency,
    }
    .run(
        |msg| Box::pin(crate::audit::process(ctx.clone(), msg)),
        shutdown,
    )
    .await;
    drop(running);
}

/// What the worker uses on JetStream.
struct Parts {
    jobs: PullConsumer,
    audits: PullConsumer,
    store: JobStore,
    images: jetstream::object_store::ObjectStore,
    cache: Option<ResultCache>,
}

/// Creates (or updates) the streams, consumers and buckets, retrying until NATS is there.
async fn set_up(js: &jetstream::Context, config: &WorkerConfig) -> Parts {
    retry::until_ok("JetStream set-up", || async {
        let jobs = Box::pin(contract::ensure_worker_consumer(js, &config.nats)).await?;
        let audits = Box::pin(contract::ensure_audit_consumer(js, &config.nats)).await?;
        let kv = Box::pin(contract::ensure_jobs_bucket(js, &config.nats)).await?;
        let images = Box::pin(contract::ensure_images_bucket(js, &config.nats)).await?;
        let cache = Box::pin(contract::ensure_results_bucket(js, &config.nats)).await?;
        // Where finished jobs' webhook events go.
        contract::ensure_webhooks_stream(js, &config.nats).await?;
        Ok::<_, async_nats::Error>(Parts {
            jobs,
            audits,
            store: JobStore::new(kv),
            images,
            cache: cache.map(ResultCache::new),
        })
    })
    .await
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

/// Lets running jobs finish for at most `grace`, then leaves the rest for redelivery.
async fn drain(mut running: JoinSet<job::Outcome>, grace: Duration, client: async_nats::Client) {
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
}
