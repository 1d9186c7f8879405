//! The job store's compare-and-set from a version the writer already holds (the worker writes
//! its result from the revision of its own `running` mark, without reading first): one write
//! while that version is the newest; when another writer was first (the gateway's fast answer,
//! a cancel), the write is refused, the record read again and the change applied to it, so no
//! writer's change is lost and a final state is kept.

use tandem_core::{
    job::{JobId, JobRecord, JobStatus},
    nats as contract,
    store::{JobStore, Versioned},
};
use time::OffsetDateTime;

use crate::support::nats::NatsServer;

async fn store(nats: &NatsServer) -> JobStore {
    let js = async_nats::jetstream::new(async_nats::connect(nats.url()).await.unwrap());
    let settings = contract::NatsSettings::with_url(nats.url());
    JobStore::new(contract::ensure_jobs_bucket(&js, &settings).await.unwrap())
}

/// A `running` record, as a worker's mark leaves it.
async fn running(store: &JobStore) -> Versioned {
    let id = JobId::new();
    let mut record = JobRecord::queued(id, OffsetDateTime::now_utc());
    assert!(record.advance(JobStatus::Running));
    store.create(&record).await.unwrap().unwrap()
}

fn fresh(id: JobId) -> impl Fn() -> JobRecord {
    move || JobRecord::queued(id, OffsetDateTime::now_utc())
}

/// What the worker does with its result: `succeeded`, unless the record is final already.
fn succeed(r: &mut JobRecord) -> bool {
    let done = r.advance(JobStatus::Succeeded);
    if done {
        r.error = None;
    }
    done
}

#[tokio::test]
async fn a_result_written_from_the_newest_version_takes_one_write() {
    let nats = NatsServer::start();
    let store = store(&nats).await;
    let marked = running(&store).await;
    let id = marked.record.id;
    let stored = store
        .update_or_create_from(id, Some(marked.clone()), fresh(id), succeed)
        .await
        .unwrap();
    assert_eq!(stored.record.status, JobStatus::Succeeded);
    // Nothing else writes the bucket: the result is the next revision, with no other between.
    assert_eq!(stored.revision, marked.revision + 1);
    assert_eq!(store.get(id).await.unwrap().unwrap(), stored);
}

#[tokio::test]
async fn a_change_by_another_writer_since_is_kept_and_the_result_added_to_it() {
    let nats = NatsServer::start();
    let store = store(&nats).await;
    let marked = running(&store).await;
    let id = marked.record.id;
    // The gateway adds its fast answer's note after the worker's mark.
    let theirs = store
        .update(id, |r| {
            r.error = Some("the other writer's change".into());
            true
        })
        .await
        .unwrap()
        .unwrap();
    let stored = store
        .update_or_create_from(id, Some(marked), fresh(id), |r| {
            let done = r.advance(JobStatus::Succeeded);
            if done {
                r.attempts = 1;
            }
            done
        })
        .await
        .unwrap();
    assert!(stored.revision > theirs.revision);
    assert_eq!(stored.record.status, JobStatus::Succeeded);
    assert_eq!(stored.record.attempts, 1);
    assert_eq!(
        stored.record.error.as_deref(),
        Some("the other writer's change"),
        "the refused write re-read the record instead of overwriting it"
    );
}

#[tokio::test]
async fn a_cancel_since_the_mark_wins_over_the_result() {
    let nats = NatsServer::start();
    let store = store(&nats).await;
    let marked = running(&store).await;
    let id = marked.record.id;
    let cancelled = store
        .update(id, |r| r.advance(JobStatus::Cancelled))
        .await
        .unwrap()
        .unwrap();
    let stored = store
        .update_or_create_from(id, Some(marked), fresh(id), succeed)
        .await
        .unwrap();
    assert_eq!(stored.record.status, JobStatus::Cancelled);
    assert_eq!(stored.revision, cancelled.revision, "nothing written");
    assert_eq!(store.get(id).await.unwrap().unwrap(), cancelled);
}

#[tokio::test]
async fn a_record_deleted_since_the_mark_is_made_again_with_the_result() {
    let nats = NatsServer::start();
    let store = store(&nats).await;
    let marked = running(&store).await;
    let id = marked.record.id;
    store.delete(id).await.unwrap();
    let stored = store
        .update_or_create_from(id, Some(marked), fresh(id), succeed)
        .await
        .unwrap();
    assert_eq!(stored.record.status, JobStatus::Succeeded);
    assert_eq!(store.get(id).await.unwrap().unwrap(), stored);
}
