//! Jobs that ran out of deliveries without a worker recording an outcome (each delivery's worker
//! died, say) would stay `running` for ever. JetStream announces them with a MAX_DELIVERIES
//! advisory; one worker of the queue group records them `failed` and removes the message.

use std::sync::Arc;

use async_nats::jetstream;
use futures::StreamExt as _;
use serde::Deserialize;
use tandem_core::{
    job::JobId,
    nats::{self as contract, headers},
};

use crate::job::{self, JobContext};

#[derive(Deserialize)]
struct MaxDeliveries {
    stream_seq: u64,
    #[serde(default)]
    deliveries: u64,
}

/// Subscribes to the advisory (as a queue group: one worker handles each) until aborted.
pub async fn run(client: async_nats::Client, js: jetstream::Context, ctx: Arc<JobContext>) {
    let subject = format!(
        "$JS.EVENT.ADVISORY.CONSUMER.MAX_DELIVERIES.{}.{}",
        contract::JOBS_STREAM,
        contract::WORKER_CONSUMER
    );
    let mut advisories = match client
        .queue_subscribe(subject, "tandem-slow-workers".into())
        .await
    {
        Ok(subscription) => subscription,
        Err(e) => {
            tracing::warn!(error = %e, "cannot watch max-deliveries advisories");
            return;
        }
    };
    while let Some(message) = advisories.next().await {
        let Ok(advisory) = serde_json::from_slice::<MaxDeliveries>(&message.payload) else {
            continue;
        };
        if let Err(e) = settle(&js, &ctx, &advisory).await {
            tracing::warn!(error = %e, seq = advisory.stream_seq, "cannot settle exhausted job");
        }
    }
}

async fn settle(
    js: &jetstream::Context,
    ctx: &JobContext,
    advisory: &MaxDeliveries,
) -> Result<(), async_nats::Error> {
    let stream = js.get_stream(contract::JOBS_STREAM).await?;
    let message = stream.get_raw_message(advisory.stream_seq).await?;
    let id = message
        .headers
        .get(headers::JOB_ID)
        .and_then(|v| v.as_str().parse::<JobId>().ok());
    if let Some(id) = id {
        let reason = format!(
            "gave up after {} deliveries: no worker finished the job",
            advisory.deliveries
        );
        tracing::warn!(job_id = %id, %reason, "job exhausted its deliveries");
        let _ = job::fail(ctx, id, &reason).await;
    }
    stream.delete_message(advisory.stream_seq).await?;
    Ok(())
}
