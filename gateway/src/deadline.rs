//! Deadlines (`deadline_ms`): a job whose slow answer is not there when its deadline passes
//! ends `expired`, with the fast answer as its label.
//!
//! Three writers make it so, each with the same compare-and-set (so a result stored first
//! wins): the gateway that accepted the job, with a timer; any gateway that reads the record
//! after the deadline (`GET /job/<id>`, an event stream), should that one have stopped; and the
//! worker that receives the job after its deadline, which then skips it.

use tandem_core::{
    job::{JobId, JobRecord},
    store::Versioned,
};
use time::OffsetDateTime;

use crate::queue::Queue;

/// Expires the job at its deadline unless it is final by then (a task of its own).
pub fn schedule(queue: &Queue, record: &JobRecord) {
    let Some(deadline) = record.deadline_at else {
        return;
    };
    if record.status.is_terminal() {
        return;
    }
    let (queue, id) = (queue.clone(), record.id);
    tokio::spawn(async move {
        let left = deadline - OffsetDateTime::now_utc();
        if left.is_positive() {
            tokio::time::sleep(left.unsigned_abs()).await;
        }
        expire(&queue, id).await;
    });
}

/// `current`, expired first if its deadline has passed and it is not final.
pub async fn expire_if_due(queue: &Queue, current: Versioned) -> Versioned {
    let record = &current.record;
    if record.status.is_terminal() || !record.past_deadline(OffsetDateTime::now_utc()) {
        return current;
    }
    expire(queue, record.id).await.unwrap_or(current)
}

/// Ends the job `expired` if it is past its deadline and not final; emits its webhook events.
async fn expire(queue: &Queue, id: JobId) -> Option<Versioned> {
    let jetstream = queue.jetstream()?;
    let mut expired_here = false;
    let stored = jetstream
        .store
        .update(id, |r| {
            expired_here = r.past_deadline(OffsetDateTime::now_utc()) && r.expire();
            expired_here
        })
        .await;
    match stored {
        Ok(Some(stored)) => {
            if expired_here {
                metrics::counter!("tandem_jobs_expired_total").increment(1);
                tandem_core::webhook::emit_logged(&jetstream.js, &stored.record).await;
            }
            Some(stored)
        }
        Ok(None) => None,
        Err(e) => {
            tracing::warn!(error = %e, job_id = %id, "could not expire the job");
            None
        }
    }
}
