//! Audits: a sample of the jobs `escalate=auto` did not escalate (`TANDEM_ESCALATE_AUDIT_RATE`)
//! run through the slow model in the background, to measure while serving what skipping
//! costs. The job stays as it was (the fast answer final); its record gains `audit`, the slow
//! answer, and `tandem_escalation_audits_total` counts whether the two agree.
//!
//! Audits come second: one waits while any escalated job runs on this worker, so the slow
//! path's real work never queues behind them (nor behind the audit stream, which is its own).

use std::{
    sync::{Arc, atomic::Ordering},
    time::Duration,
};

use async_nats::jetstream::{AckKind, Message};
use tandem_core::slow_job::SlowJob;

use crate::job::{JobContext, Outcome, ack, forget_image, keep_alive, load_image, run_model};

/// How often an audit waiting for a free worker looks again.
const YIELD_POLL: Duration = Duration::from_millis(50);

/// Runs one audit job to the end.
#[tracing::instrument(name = "audit.process", skip_all, fields(job_id))]
pub async fn process(ctx: Arc<JobContext>, msg: Message) -> Outcome {
    let Ok(job) = SlowJob::from_message(msg.headers.as_ref(), msg.payload.clone()) else {
        ack(&msg, AckKind::Term).await;
        return Outcome::Failed;
    };
    tracing::Span::current().record("job_id", tracing::field::display(job.id));
    keep_alive(&ctx, &msg, async {
        while ctx.running.load(Ordering::Relaxed) > 0 {
            tokio::time::sleep(YIELD_POLL).await;
        }
    })
    .await;
    let delivered = msg.info().map(|i| i.delivered).unwrap_or(1);
    let result = match load_image(&ctx, &job).await {
        Ok(image) => run_model(&ctx, &msg, image).await,
        Err(e) => Err(e),
    };
    let audit = match result {
        Ok(audit) => audit,
        Err(e) if e.is_transient() && delivered < ctx.config.nats.max_deliver => {
            ack(&msg, AckKind::Nak(Some(ctx.config.retry_delay(delivered)))).await;
            return Outcome::Retrying;
        }
        Err(e) => {
            tracing::warn!(error = %e, "audit not run");
            ack(&msg, AckKind::Term).await;
            forget_image(&ctx, &job).await;
            return Outcome::Failed;
        }
    };
    let stored = ctx
        .store
        .update(job.id, |r| {
            let first = r.audit.is_none();
            if first {
                r.audit = Some(audit.clone());
            }
            first
        })
        .await;
    match stored {
        Ok(stored) => {
            let agrees = stored
                .and_then(|s| s.record.fast)
                .map(|fast| fast.label == audit.label);
            if let Some(agrees) = agrees {
                metrics::counter!("tandem_escalation_audits_total",
                    "agree" => if agrees { "true" } else { "false" })
                .increment(1);
            }
            metrics::histogram!("tandem_worker_audit_inference_seconds")
                .record(audit.inference_ms / 1000.0);
            ack(&msg, AckKind::Ack).await;
            forget_image(&ctx, &job).await;
            Outcome::Succeeded
        }
        Err(e) => {
            tracing::warn!(error = %e, "audit not stored; retrying");
            ack(&msg, AckKind::Nak(Some(ctx.config.retry_delay(delivered)))).await;
            Outcome::Retrying
        }
    }
}
