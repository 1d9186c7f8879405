//! The NATS contract: every stream, subject, consumer, bucket and header Tandem uses, in one place.
//!
//! `nats/README.md` documents the same names for people using the `nats` CLI; keep the two in
//! step. Services call [`ensure_jobs_stream`], [`ensure_worker_consumer`], [`ensure_jobs_bucket`]
//! and [`ensure_images_bucket`] at start: they create what is missing and update what exists, so
//! a restart with new limits applies them and two services starting together do not fight.

use std::time::Duration;

use async_nats::jetstream::{self, consumer, kv, object_store, stream};

use crate::config::Env;

mod connection;
mod credentials;

pub use connection::{NatsConnectError, connect};
pub use credentials::{NatsAuth, NatsTls, Secret};

/// The work-queue stream holding submitted slow jobs (`nats stream info TANDEM_JOBS`).
pub const JOBS_STREAM: &str = "TANDEM_JOBS";
/// The subject a job is published on.
pub const JOBS_SUBJECT: &str = "tandem.jobs.slow";
/// The durable pull consumer every slow-worker shares (`nats consumer info TANDEM_JOBS slow-workers`).
pub const WORKER_CONSUMER: &str = "slow-workers";
/// The KV bucket of job records, key = job id (`nats kv get tandem_jobs <id>`).
pub const JOBS_BUCKET: &str = "tandem_jobs";
/// Key prefix, in the jobs bucket, of idempotency keys (value: the job id they map to).
pub const IDEMPOTENCY_KEY_PREFIX: &str = "idem.";
/// The object store for images too big to travel inline in a job message.
pub const IMAGES_BUCKET: &str = "tandem_images";
/// The work-queue stream of webhook events waiting to be delivered (`nats stream info
/// TANDEM_WEBHOOKS`); one message per (job, event), de-duplicated by `Nats-Msg-Id`.
pub const WEBHOOKS_STREAM: &str = "TANDEM_WEBHOOKS";
/// The subject a webhook event is published on.
pub const WEBHOOKS_SUBJECT: &str = "tandem.webhooks.deliveries";
/// The durable pull consumer every gateway with webhooks on shares.
pub const WEBHOOK_CONSUMER: &str = "webhook-senders";
/// The work-queue stream of audit jobs: a sample of the jobs `escalate=auto` did not escalate,
/// run through the slow model in the background to measure what skipping costs
/// (`TANDEM_ESCALATE_AUDIT_RATE`). Best effort: when it is full, a job goes unaudited.
pub const AUDITS_STREAM: &str = "TANDEM_AUDITS";
/// The subject an audit job is published on (the message is a job message, as on
/// [`JOBS_SUBJECT`]).
pub const AUDITS_SUBJECT: &str = "tandem.jobs.audit";
/// The slow-workers' durable consumer of audit jobs, served only while no escalated job runs.
pub const AUDIT_CONSUMER: &str = "slow-workers-audit";
/// The KV bucket of cached answers, key = SHA-256 of the image bytes (hex): the fast and slow
/// answers with the identities of the models that gave them (`TANDEM_RESULT_CACHE_TTL_SECS`).
pub const RESULTS_BUCKET: &str = "tandem_results";
/// Audit jobs waiting at most; past it new audits are dropped (counted).
const AUDITS_MAX_JOBS: i64 = 10_000;

/// Message headers of a job message.
pub mod headers {
    /// JetStream's de-duplication id: always the job id.
    pub const MSG_ID: &str = "Nats-Msg-Id";
    /// The job id.
    pub const JOB_ID: &str = "Tandem-Job-Id";
    /// When the gateway accepted the job (RFC 3339).
    pub const SUBMITTED_AT: &str = "Tandem-Submitted-At";
    /// Present when the image is in the object store instead of the payload: the object's name.
    pub const IMAGE_OBJECT: &str = "Tandem-Image-Object";
    /// W3C trace context of the request that submitted the job.
    pub const TRACEPARENT: &str = crate::telemetry::TRACEPARENT;
    /// A webhook message's event (`fast`, `completed`, `changed`); its `Nats-Msg-Id` is
    /// `<job id>-<event>`, its `Tandem-Job-Id` the job.
    pub const WEBHOOK_EVENT: &str = "Tandem-Webhook-Event";
    /// When the slow answer stops being wanted (RFC 3339; `deadline_ms`): a worker that
    /// receives the job later ends it `expired` without running the model.
    pub const DEADLINE: &str = "Tandem-Deadline";
    /// With the result cache on: the SHA-256 of the image (hex), the job's key in the results
    /// bucket.
    pub const IMAGE_SHA256: &str = "Tandem-Image-Sha256";
}

/// Where NATS is, how to reach it, and the limits and timings of the NATS side, shared by the
/// gateway and the workers. `Debug` shows no secret (passwords in the URL included).
#[derive(Clone)]
pub struct NatsSettings {
    /// `TANDEM_NATS_URL` (default `nats://127.0.0.1:4222`); several servers comma-separated
    /// (see [`NatsSettings::servers`]).
    pub url: String,
    /// `TANDEM_NATS_USER`/`_PASSWORD`, `_TOKEN`, `_NKEY_SEED(_FILE)` or `_CREDS_FILE`.
    pub auth: NatsAuth,
    /// `TANDEM_NATS_TLS_*`.
    pub tls: NatsTls,
    /// `TANDEM_NATS_REPLICAS`: stream and bucket replicas (1; 3 on a cluster).
    pub replicas: usize,
    /// `TANDEM_QUEUE_MAX_JOBS`: jobs waiting at most; past it submissions get 429.
    pub queue_max_jobs: i64,
    /// `TANDEM_QUEUE_MAX_BYTES`: bytes waiting at most (images included); past it 429.
    pub queue_max_bytes: i64,
    /// `TANDEM_DUPLICATE_WINDOW_SECS`: how long JetStream remembers message ids for de-duplication.
    pub duplicate_window: Duration,
    /// `TANDEM_ACK_WAIT_MS`: a job not acknowledged (nor progressed) within this is redelivered.
    pub ack_wait: Duration,
    /// `TANDEM_MAX_DELIVER`: deliveries of one job at most; then it ends `failed`.
    pub max_deliver: i64,
    /// `TANDEM_JOB_TTL_SECS`: how long job records (and stored images) are kept.
    pub job_ttl: Duration,
    /// `TANDEM_RESULT_CACHE_TTL_SECS` (default 0: off): how long cached answers are kept.
    pub result_cache_ttl: Duration,
}

impl std::fmt::Debug for NatsSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NatsSettings")
            .field("url", &self.redacted_url())
            .field("auth", &self.auth)
            .field("tls", &self.tls)
            .field("replicas", &self.replicas)
            .field("queue_max_jobs", &self.queue_max_jobs)
            .field("queue_max_bytes", &self.queue_max_bytes)
            .field("duplicate_window", &self.duplicate_window)
            .field("ack_wait", &self.ack_wait)
            .field("max_deliver", &self.max_deliver)
            .field("job_ttl", &self.job_ttl)
            .field("result_cache_ttl", &self.result_cache_ttl)
            .finish()
    }
}

impl NatsSettings {
    /// Reads the settings, recording bad values in `env`.
    pub fn from_env(env: &mut Env) -> Self {
        let settings = Self {
            url: env.string("TANDEM_NATS_URL", "nats://127.0.0.1:4222"),
            auth: NatsAuth::from_env(env),
            tls: NatsTls::from_env(env),
            replicas: env.parse("TANDEM_NATS_REPLICAS", 1),
            queue_max_jobs: env.parse("TANDEM_QUEUE_MAX_JOBS", 100_000),
            queue_max_bytes: env.parse("TANDEM_QUEUE_MAX_BYTES", 2 * 1024 * 1024 * 1024),
            duplicate_window: env.seconds("TANDEM_DUPLICATE_WINDOW_SECS", Duration::from_secs(120)),
            ack_wait: env.millis("TANDEM_ACK_WAIT_MS", Duration::from_secs(30)),
            max_deliver: env.parse("TANDEM_MAX_DELIVER", 8),
            job_ttl: env.seconds("TANDEM_JOB_TTL_SECS", Duration::from_secs(24 * 3600)),
            result_cache_ttl: env.seconds("TANDEM_RESULT_CACHE_TTL_SECS", Duration::ZERO),
        };
        settings.check_servers(env);
        if settings.replicas == 0 || settings.replicas > 5 {
            env.error("TANDEM_NATS_REPLICAS must be between 1 and 5");
        }
        if settings.queue_max_jobs < 1 || settings.queue_max_bytes < 1 {
            env.error("TANDEM_QUEUE_MAX_JOBS and TANDEM_QUEUE_MAX_BYTES must be positive");
        }
        if settings.max_deliver < 1 {
            env.error("TANDEM_MAX_DELIVER must be at least 1");
        }
        if settings.ack_wait < Duration::from_millis(300) {
            env.error("TANDEM_ACK_WAIT_MS must be at least 300");
        }
        if settings.job_ttl < Duration::from_secs(1) {
            env.error("TANDEM_JOB_TTL_SECS must be at least 1");
        }
        settings
    }

    /// The defaults (what an empty environment gives).
    pub fn with_url(url: impl Into<String>) -> Self {
        let mut env = Env::from_pairs([("TANDEM_NATS_URL", url.into())]);
        Self::from_env(&mut env)
    }
}

/// The jobs stream's configuration.
pub fn jobs_stream_config(settings: &NatsSettings) -> stream::Config {
    stream::Config {
        name: JOBS_STREAM.into(),
        description: Some("Tandem slow jobs waiting for a slow-worker".into()),
        subjects: vec![JOBS_SUBJECT.into()],
        // A job leaves the stream once a worker acknowledges it.
        retention: stream::RetentionPolicy::WorkQueue,
        max_messages: settings.queue_max_jobs,
        max_bytes: settings.queue_max_bytes,
        // Full means full: refuse new jobs (429) rather than drop accepted ones.
        discard: stream::DiscardPolicy::New,
        // A job id is published again only while its record lives (the gateway's publish
        // retry, an `Idempotency-Key` retry): remembering it longer holds memory for nothing.
        duplicate_window: settings.duplicate_window.min(settings.job_ttl),
        storage: stream::StorageType::File,
        num_replicas: settings.replicas,
        ..Default::default()
    }
}

/// The workers' durable consumer's configuration.
pub fn worker_consumer_config(settings: &NatsSettings) -> consumer::pull::Config {
    consumer::pull::Config {
        durable_name: Some(WORKER_CONSUMER.into()),
        description: Some("Tandem slow-workers".into()),
        ack_policy: consumer::AckPolicy::Explicit,
        ack_wait: settings.ack_wait,
        max_deliver: settings.max_deliver,
        max_ack_pending: 1000,
        ..Default::default()
    }
}

/// The webhooks stream's configuration: events wait here until a gateway delivers them (or
/// gives up), for at most the job TTL.
pub fn webhooks_stream_config(settings: &NatsSettings) -> stream::Config {
    stream::Config {
        name: WEBHOOKS_STREAM.into(),
        description: Some("Tandem webhook events waiting for delivery".into()),
        subjects: vec![WEBHOOKS_SUBJECT.into()],
        retention: stream::RetentionPolicy::WorkQueue,
        max_age: settings.job_ttl,
        duplicate_window: settings.duplicate_window.min(settings.job_ttl),
        storage: stream::StorageType::File,
        num_replicas: settings.replicas,
        ..Default::default()
    }
}

/// The webhook senders' durable consumer: a delivery not acknowledged (nor progressed) within
/// `TANDEM_ACK_WAIT_MS` (its gateway died) is redelivered; the senders count attempts and give
/// up themselves (`TANDEM_WEBHOOK_MAX_ATTEMPTS`), so the server does not.
pub fn webhook_consumer_config(settings: &NatsSettings) -> consumer::pull::Config {
    consumer::pull::Config {
        durable_name: Some(WEBHOOK_CONSUMER.into()),
        description: Some("Tandem gateways delivering webhooks".into()),
        ack_policy: consumer::AckPolicy::Explicit,
        ack_wait: settings.ack_wait,
        max_deliver: -1,
        max_ack_pending: 1000,
        ..Default::default()
    }
}

/// Creates or updates the webhooks stream.
pub async fn ensure_webhooks_stream(
    js: &jetstream::Context,
    settings: &NatsSettings,
) -> Result<stream::Stream, async_nats::Error> {
    js.create_or_update_stream(webhooks_stream_config(settings))
        .await?;
    Ok(js.get_stream(WEBHOOKS_STREAM).await?)
}

/// Creates or updates the webhook senders' durable consumer (and its stream).
pub async fn ensure_webhook_consumer(
    js: &jetstream::Context,
    settings: &NatsSettings,
) -> Result<consumer::PullConsumer, async_nats::Error> {
    let stream = ensure_webhooks_stream(js, settings).await?;
    let config = webhook_consumer_config(settings);
    Ok(stream.create_consumer(config).await.map_err(Box::new)?)
}

/// Creates or updates the jobs stream.
pub async fn ensure_jobs_stream(
    js: &jetstream::Context,
    settings: &NatsSettings,
) -> Result<stream::Stream, async_nats::Error> {
    js.create_or_update_stream(jobs_stream_config(settings))
        .await?;
    Ok(js.get_stream(JOBS_STREAM).await?)
}

/// Creates or updates the workers' durable consumer (and its stream).
pub async fn ensure_worker_consumer(
    js: &jetstream::Context,
    settings: &NatsSettings,
) -> Result<consumer::PullConsumer, async_nats::Error> {
    let stream = ensure_jobs_stream(js, settings).await?;
    let config = worker_consumer_config(settings);
    Ok(stream.create_consumer(config).await.map_err(Box::new)?)
}

/// The audit jobs' stream: like the jobs stream, but small and lossy (discard new when full).
pub fn audits_stream_config(settings: &NatsSettings) -> stream::Config {
    stream::Config {
        name: AUDITS_STREAM.into(),
        description: Some("Tandem audit jobs: skipped jobs sampled for the slow model".into()),
        subjects: vec![AUDITS_SUBJECT.into()],
        retention: stream::RetentionPolicy::WorkQueue,
        max_messages: AUDITS_MAX_JOBS,
        max_bytes: (settings.queue_max_bytes / 8).max(1),
        discard: stream::DiscardPolicy::New,
        max_age: settings.job_ttl,
        duplicate_window: settings.duplicate_window.min(settings.job_ttl),
        storage: stream::StorageType::File,
        num_replicas: settings.replicas,
        ..Default::default()
    }
}

/// Creates or updates the audit jobs' stream.
pub async fn ensure_audits_stream(
    js: &jetstream::Context,
    settings: &NatsSettings,
) -> Result<stream::Stream, async_nats::Error> {
    js.create_or_update_stream(audits_stream_config(settings))
        .await?;
    Ok(js.get_stream(AUDITS_STREAM).await?)
}

/// Creates or updates the workers' durable consumer of audit jobs (and its stream).
pub async fn ensure_audit_consumer(
    js: &jetstream::Context,
    settings: &NatsSettings,
) -> Result<consumer::PullConsumer, async_nats::Error> {
    let stream = ensure_audits_stream(js, settings).await?;
    let config = consumer::pull::Config {
        durable_name: Some(AUDIT_CONSUMER.into()),
        description: Some("Tandem slow-workers, auditing skipped jobs".into()),
        ..worker_consumer_config(settings)
    };
    Ok(stream.create_consumer(config).await.map_err(Box::new)?)
}

/// Creates or updates the results bucket (the result cache), when it is on.
pub async fn ensure_results_bucket(
    js: &jetstream::Context,
    settings: &NatsSettings,
) -> Result<Option<kv::Store>, async_nats::Error> {
    if settings.result_cache_ttl.is_zero() {
        return Ok(None);
    }
    let config = kv::Config {
        bucket: RESULTS_BUCKET.into(),
        description: "Tandem cached answers, key = SHA-256 of the image".into(),
        history: 1,
        max_age: settings.result_cache_ttl,
        storage: stream::StorageType::File,
        num_replicas: settings.replicas,
        ..Default::default()
    };
    Ok(Some(js.create_or_update_key_value(config).await?))
}

/// Creates or updates the job-records bucket.
pub async fn ensure_jobs_bucket(
    js: &jetstream::Context,
    settings: &NatsSettings,
) -> Result<kv::Store, async_nats::Error> {
    let config = kv::Config {
        bucket: JOBS_BUCKET.into(),
        description: "Tandem job records, key = job id".into(),
        // A few revisions let a watcher that reconnects see what it missed.
        history: 10,
        max_age: settings.job_ttl,
        storage: stream::StorageType::File,
        num_replicas: settings.replicas,
        ..Default::default()
    };
    let store = js.create_or_update_key_value(config).await?;
    if settings.replicas == 1 {
        return Ok(store);
    }
    // Replicated: reads go to the stream leader. The client creates buckets with "direct get",
    // which lets any replica answer a read, and a lagging one answers with an old revision or
    // "no such key" (nats-server issues 4710, 6557): a worker finishing a job would then find no
    // record to write its result into. Leader reads cost a little latency, nothing else.
    let stream_name = format!("KV_{JOBS_BUCKET}");
    let mut stream = js.get_stream(&stream_name).await?;
    let mut config = stream.info().await?.config.clone();
    if config.allow_direct {
        config.allow_direct = false;
        js.update_stream(config).await?;
    }
    // A handle that knows direct get is off.
    Ok(js.get_key_value(JOBS_BUCKET).await?)
}

/// Creates the images object store (bigger images than a message can carry).
pub async fn ensure_images_bucket(
    js: &jetstream::Context,
    settings: &NatsSettings,
) -> Result<object_store::ObjectStore, async_nats::Error> {
    match js.get_object_store(IMAGES_BUCKET).await {
        Ok(store) => Ok(store),
        Err(_) => Ok(js
            .create_object_store(object_store::Config {
                bucket: IMAGES_BUCKET.into(),
                description: Some("Tandem images too big for a job message".into()),
                max_age: settings.job_ttl,
                storage: stream::StorageType::File,
                num_replicas: settings.replicas,
                ..Default::default()
            })
            .await?),
    }
}

#[cfg(test)]
mod tests;
