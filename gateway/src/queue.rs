//! The gateway's side of JetStream: storing jobs and reaching the job records.
//!
//! The gateway starts even when NATS is away (the fast path does not need it): a background task
//! connects and creates the stream and buckets, retrying until it succeeds. Until then, and
//! whenever a publish is not acknowledged in time, submissions fail with a clear 503.

use std::{sync::Arc, time::Duration};

use async_nats::jetstream::{
    self,
    object_store::{ObjectMetadata, ObjectStore},
};
use bytes::Bytes;
use tandem_core::{
    job::{JobId, JobRecord},
    nats::{self as contract, NatsSettings},
    result_cache::ResultCache,
    retry,
    slow_job::{ImageRef, SlowJob},
    store::{JobStore, Versioned},
};
use time::OffsetDateTime;
use tokio::sync::OnceCell;

/// The JetStream side of the gateway, available once the stream and buckets exist: the
/// context (to publish), the job records and the big-image store.
#[derive(Clone)]
pub struct JetStream {
    pub js: jetstream::Context,
    pub store: JobStore,
    pub images: ObjectStore,
    /// The result cache, when `TANDEM_RESULT_CACHE_TTL_SECS` turns it on.
    pub results: Option<ResultCache>,
}

impl std::fmt::Debug for JetStream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JetStream").finish_non_exhaustive()
    }
}

/// Why a job was not stored.
#[derive(Debug, thiserror::Error)]
pub enum SubmitError {
    /// With when to retry (see `progress`).
    #[error("the job queue is full")]
    Full(Duration),
    #[error("the job queue is unavailable: {0}")]
    Unavailable(String),
}

/// A job to store: what its record and its message carry.
#[derive(Debug, Clone)]
pub struct NewJob {
    pub id: JobId,
    pub image: Bytes,
    pub submitted_at: OffsetDateTime,
    /// `deadline_ms` after submission.
    pub deadline_at: Option<OffsetDateTime>,
    /// With the result cache on: the image's key in it.
    pub image_sha256: Option<String>,
}

impl NewJob {
    /// The record a new job starts with.
    pub fn record(&self) -> JobRecord {
        let mut record = JobRecord::queued(self.id, self.submitted_at);
        record.deadline_at = self.deadline_at;
        record
    }
}

/// A stored job.
#[derive(Debug)]
pub struct Submitted {
    /// The record as this submission stored it (`None` if it found one there already, or could
    /// not store it).
    pub record: Option<Versioned>,
    /// The job message's sequence in the jobs stream.
    pub stream_seq: u64,
}

/// The NATS connection and, once set up, the JetStream side.
#[derive(Debug, Clone)]
pub struct Queue {
    pub client: async_nats::Client,
    /// Where queued jobs stand, and the drain rate.
    pub progress: crate::progress::QueueProgress,
    jetstream: Arc<OnceCell<JetStream>>,
    publish_timeout: Duration,
}

/// JetStream's error code for a stream over its limits with `DiscardPolicy::New`.
const STREAM_STORE_FAILED: u64 = 10077;
/// Room left in a message for headers when deciding whether an image fits inline.
const HEADER_ROOM: usize = 8 * 1024;

impl Queue {
    /// Connects (in the background if NATS is away) and starts the set-up task.
    pub async fn start(settings: &NatsSettings, publish_timeout: Duration) -> anyhow::Result<Self> {
        let client = contract::connect(settings, "tandem-gateway").await?;
        let queue = Self {
            client: client.clone(),
            progress: Default::default(),
            jetstream: Arc::new(OnceCell::new()),
            publish_timeout,
        };
        let cell = queue.jetstream.clone();
        let settings = settings.clone();
        let progress = queue.progress.clone();
        tokio::spawn(async move {
            let js = jetstream::new(client);
            let ready = retry::until_ok("JetStream set-up", || set_up(&js, &settings)).await;
            progress.attach(ready.js.clone());
            let _ = cell.set(ready);
            tracing::info!("JetStream stream and buckets ready");
        });
        Ok(queue)
    }

    /// The JetStream side, if set up.
    pub fn jetstream(&self) -> Option<&JetStream> {
        self.jetstream.get()
    }

    /// The JetStream side, or the 503 that says it is not there yet.
    pub fn jetstream_or_unavailable(&self) -> Result<&JetStream, crate::error::ApiError> {
        self.jetstream()
            .ok_or(crate::error::ApiError::queue_unavailable())
    }

    /// Waits until the JetStream side is set up.
    pub async fn wait_for_jetstream(&self) -> &JetStream {
        loop {
            if let Some(jetstream) = self.jetstream.get() {
                return jetstream;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Whether the connection is up right now.
    pub fn connected(&self) -> bool {
        self.client.connection_state() == async_nats::connection::State::Connected
    }

    /// Stores a `queued` record and publishes the job; returns once JetStream acknowledged it,
    /// so a client never holds the id of a job that was not stored.
    /// The message carries this span's `traceparent`: the worker's span is its child.
    #[tracing::instrument(name = "jobs.publish", skip_all, fields(
        job_id = %job.id,
        otel.kind = "producer",
        messaging.system = "nats",
        messaging.destination.name = contract::JOBS_SUBJECT,
    ))]
    pub async fn submit(&self, job: NewJob) -> Result<Submitted, SubmitError> {
        let traceparent = tandem_core::telemetry::traceparent(&tracing::Span::current());
        let jetstream = self
            .jetstream()
            .ok_or_else(|| SubmitError::Unavailable("not connected to JetStream yet".into()))?;
        let id = job.id;
        let mut attempt = tokio::time::timeout(
            self.publish_timeout,
            self.store_and_publish(jetstream, job, traceparent),
        )
        .await
        .unwrap_or_else(|_| {
            Err(SubmitError::Unavailable(format!(
                "JetStream did not acknowledge within {:?}",
                self.publish_timeout
            )))
        });
        if let Err(SubmitError::Full(after)) = &mut attempt {
            *after = self.progress.retry_after(*after);
        }
        if attempt.is_err() {
            // Best effort: a record without a stored job must not linger as `queued`.
            let store = jetstream.store.clone();
            tokio::spawn(async move {
                let _ = tokio::time::timeout(Duration::from_secs(2), store.delete(id)).await;
            });
        }
        attempt
    }

    async fn store_and_publish(
        &self,
        jetstream: &JetStream,
        new: NewJob,
        traceparent: Option<String>,
    ) -> Result<Submitted, SubmitError> {
        // The record and the job go out together, one round trip instead of two. The record's
        // message is sent first on the same connection, so it is almost always stored first;
        // when it is not, the worker creates the record (see slow-worker's `mark_running`) and
        // this create finds it there, which is as good.
        let record = new.record();
        let job = async {
            let job = self.message(jetstream, new, traceparent).await?;
            publish(jetstream, contract::JOBS_SUBJECT, &job).await
        };
        let (created, published) = tokio::join!(jetstream.store.create(&record), job);
        let stream_seq = published?;
        let record = match created {
            Ok(created) => created,
            Err(e) => {
                // The job is stored, which is what the client is promised; the worker creates
                // the record when it starts the job. Failing here would have the client submit
                // it twice.
                tracing::warn!(error = %e, "job record not created; the worker will create it");
                None
            }
        };
        Ok(Submitted { record, stream_seq })
    }

    /// Stores the record of a job that does not go to the slow model (final at once).
    pub async fn store_final(&self, record: &JobRecord) -> Result<Versioned, SubmitError> {
        let jetstream = self
            .jetstream()
            .ok_or_else(|| SubmitError::Unavailable("not connected to JetStream yet".into()))?;
        let created = tokio::time::timeout(self.publish_timeout, jetstream.store.create(record))
            .await
            .map_err(|_| SubmitError::Unavailable("JetStream did not answer in time".into()))?
            .map_err(|e| SubmitError::Unavailable(e.to_string()))?;
        match created {
            Some(stored) => Ok(stored),
            // An idempotent retry's first attempt stored it already.
            None => jetstream
                .store
                .get(record.id)
                .await
                .ok()
                .flatten()
                .ok_or_else(|| SubmitError::Unavailable("job record vanished".into())),
        }
    }

    /// Queues a skipped job for the audit (best effort: a full or unreachable audit stream
    /// leaves the job unaudited, counted in `tandem_escalation_audits_dropped_total`).
    pub async fn submit_audit(&self, new: NewJob) {
        let Some(jetstream) = self.jetstream() else {
            return;
        };
        let traceparent = tandem_core::telemetry::traceparent(&tracing::Span::current());
        let published = tokio::time::timeout(self.publish_timeout, async {
            let job = self.message(jetstream, new, traceparent).await?;
            publish(jetstream, contract::AUDITS_SUBJECT, &job).await
        })
        .await;
        if !matches!(published, Ok(Ok(_))) {
            tracing::debug!("audit job not queued");
            metrics::counter!("tandem_escalation_audits_dropped_total").increment(1);
        }
    }

    /// The job message, its image inline or in the object store.
    async fn message(
        &self,
        jetstream: &JetStream,
        new: NewJob,
        traceparent: Option<String>,
    ) -> Result<SlowJob, SubmitError> {
        Ok(SlowJob {
            id: new.id,
            image: self.place_image(jetstream, new.id, new.image).await?,
            submitted_at: new.submitted_at,
            traceparent,
            deadline_at: new.deadline_at,
            image_sha256: new.image_sha256,
        })
    }

    /// The image inline in the message, or, when it does not fit in one, in the object store.
    async fn place_image(
        &self,
        jetstream: &JetStream,
        id: JobId,
        image: Bytes,
    ) -> Result<ImageRef, SubmitError> {
        let max_payload = match self.client.server_info().max_payload {
            0 => 1024 * 1024,
            n => n,
        };
        if image.len() + HEADER_ROOM <= max_payload {
            return Ok(ImageRef::Inline(image));
        }
        let name = id.to_string();
        // Chunks as large as a message may be (they carry no headers; the object store's
        // default is 128 KiB): a 5 MB photo is then 5 stored messages, not 40, each published
        // and acknowledged in turn.
        let meta = ObjectMetadata {
            name: name.clone(),
            chunk_size: Some(max_payload),
            ..Default::default()
        };
        jetstream
            .images
            .put(meta, &mut image.as_ref())
            .await
            .map_err(|e| SubmitError::Unavailable(e.to_string()))?;
        Ok(ImageRef::Object(name))
    }
}

/// Publishes `job` and waits for JetStream to store it; returns its stream sequence (the first
/// publish's, for a duplicate).
async fn publish(
    jetstream: &JetStream,
    subject: &'static str,
    job: &SlowJob,
) -> Result<u64, SubmitError> {
    let unavailable = |e: &dyn std::fmt::Display| SubmitError::Unavailable(e.to_string());
    let (headers, payload) = job.to_message();
    let ack = jetstream
        .js
        .publish_with_headers(subject, headers, payload)
        .await
        .map_err(|e| unavailable(&e))?;
    ack.await.map(|ack| ack.sequence).map_err(|e| {
        if is_stream_full(&e) {
            SubmitError::Full(crate::error::QUEUE_FULL_RETRY_AFTER)
        } else {
            unavailable(&e)
        }
    })
}

async fn set_up(
    js: &jetstream::Context,
    settings: &NatsSettings,
) -> Result<JetStream, async_nats::Error> {
    contract::ensure_jobs_stream(js, settings).await?;
    // Where this gateway emits webhook events (`fast`, cancels); empty while none are used.
    contract::ensure_webhooks_stream(js, settings).await?;
    let kv = contract::ensure_jobs_bucket(js, settings).await?;
    let images = contract::ensure_images_bucket(js, settings).await?;
    // Where skipped jobs go to be audited (empty while no audit rate is set).
    contract::ensure_audits_stream(js, settings).await?;
    let results = contract::ensure_results_bucket(js, settings).await?;
    Ok(JetStream {
        js: js.clone(),
        store: JobStore::new(kv),
        images,
        results: results.map(ResultCache::new),
    })
}

/// A stream at its limits answers the publish with JetStream's own error code; nothing else
/// (a message's wording can change between server versions) decides it.
fn is_stream_full(e: &jetstream::context::PublishError) -> bool {
    use std::error::Error as _;
    e.source()
        .and_then(|s| s.downcast_ref::<jetstream::Error>())
        .is_some_and(|js_error| js_error.error_code().0 == STREAM_STORE_FAILED)
}
