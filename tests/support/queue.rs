//! What JetStream says of the job queue now: the suites' one way to read it.

use async_nats::jetstream::{self, consumer};
use tandem_core::nats::{JOBS_STREAM, WORKER_CONSUMER};

/// The workers' durable consumer (`num_pending`: jobs not yet handed out, `num_ack_pending`:
/// jobs a worker holds); `None` when NATS, the stream or the consumer does not answer.
pub async fn worker_consumer(js: &jetstream::Context) -> Option<consumer::Info> {
    let stream = js.get_stream(JOBS_STREAM).await.ok()?;
    stream.consumer_info(WORKER_CONSUMER).await.ok()
}

/// Jobs stored in the work-queue stream (waiting, or held by a worker); `None` when NATS or
/// the stream does not answer.
pub async fn stored_jobs(js: &jetstream::Context) -> Option<u64> {
    let mut stream = js.get_stream(JOBS_STREAM).await.ok()?;
    Some(stream.info().await.ok()?.state.messages)
}
