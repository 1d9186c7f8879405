//! `JobStore`: job records in the KV bucket, written with compare-and-set.
//!
//! Gateway and workers both change records (fast result, running, results, cancel). Every change
//! is a read-modify-write on the key's revision, retried on conflict, so no writer silently
//! overwrites another's change and a redelivered job cannot replace a final result. A writer
//! that holds a version already (the one it wrote last, or one its watcher saw) starts from it
//! and skips the read; when another writer was first, the compare-and-set is refused
//! (`tandem_job_store_conflicts_total`) and the change is applied again to a fresh read.

use std::sync::Arc;

use async_nats::jetstream::kv;
use bytes::Bytes;
use uuid::Uuid;

use crate::{
    job::{JobId, JobRecord},
    nats::IDEMPOTENCY_KEY_PREFIX,
    telemetry,
};

/// A record with the KV revision it was read at (also the SSE event id).
#[derive(Debug, Clone, PartialEq)]
pub struct Versioned {
    pub record: JobRecord,
    pub revision: u64,
}

/// Failures talking to the bucket.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("job store unavailable: {0}")]
    Unavailable(String),
    #[error("job record {0} is not valid JSON: {1}")]
    Corrupt(String, String),
}

/// Result of claiming an idempotency key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Claim {
    /// The key was new and now maps to the given job.
    New(JobId),
    /// The key already mapped to this job.
    Existing(JobId),
}

/// Job records, keyed by job id, in the `tandem_jobs` bucket.
///
/// Cheap to clone: a `kv::Store` carries the stream's whole info (kilobytes, with its strings),
/// and every open event stream holds a `JobStore`.
#[derive(Debug, Clone)]
pub struct JobStore {
    kv: Arc<kv::Store>,
}

fn unavailable(e: impl std::fmt::Display) -> StoreError {
    StoreError::Unavailable(e.to_string())
}

impl JobStore {
    pub fn new(kv: kv::Store) -> Self {
        Self { kv: Arc::new(kv) }
    }

    /// The bucket itself (for watchers).
    pub fn kv(&self) -> &kv::Store {
        &self.kv
    }

    /// Decodes a bucket entry; `None` for deletes, purges and non-job keys.
    pub fn decode(entry: &kv::Entry) -> Option<Result<Versioned, StoreError>> {
        if entry.operation != kv::Operation::Put || entry.key.starts_with(IDEMPOTENCY_KEY_PREFIX) {
            return None;
        }
        Some(
            serde_json::from_slice(&entry.value)
                .map(|record| Versioned {
                    record,
                    revision: entry.revision,
                })
                .map_err(|e| StoreError::Corrupt(entry.key.clone(), e.to_string())),
        )
    }

    fn encode(record: &JobRecord) -> Bytes {
        // Compact, not pretty: every version is stored, sent to each gateway's watcher and read
        // back, and indentation made each one a third bigger (`nats kv get ... | jq` shows it
        // laid out). Serialising a plain struct of strings and numbers cannot fail.
        Bytes::from(serde_json::to_vec(record).unwrap_or_default())
    }

    /// Stores a new record; returns it as stored, or `Ok(None)` if one already exists under
    /// that id.
    #[tracing::instrument(name = "kv.create", skip_all, fields(job_id = %record.id))]
    pub async fn create(&self, record: &JobRecord) -> Result<Option<Versioned>, StoreError> {
        let mut record = record.clone();
        record.traceparent = telemetry::traceparent(&tracing::Span::current());
        match self
            .kv
            .create(record.id.to_string(), Self::encode(&record))
            .await
        {
            Ok(revision) => Ok(Some(Versioned { record, revision })),
            Err(e) if e.kind() == kv::CreateErrorKind::AlreadyExists => Ok(None),
            Err(e) => Err(unavailable(e)),
        }
    }

    /// The current record, if any.
    pub async fn get(&self, id: JobId) -> Result<Option<Versioned>, StoreError> {
        match self.kv.entry(id.to_string()).await.map_err(unavailable)? {
            Some(entry) => Self::decode(&entry).transpose(),
            None => Ok(None),
        }
    }

    /// Applies `change` with compare-and-set, re-reading and retrying on conflict.
    ///
    /// `change` returns `false` to leave the record as it is (for example, already final). The
    /// result is the record as stored afterwards, or `None` when there is no record.
    pub async fn update(
        &self,
        id: JobId,
        change: impl FnMut(&mut JobRecord) -> bool,
    ) -> Result<Option<Versioned>, StoreError> {
        self.update_from(id, None, change).await
    }

    /// [`update`](Self::update), starting from `known`, a version the caller already holds
    /// (one round trip instead of two while it is still the newest; re-read if it is not).
    #[tracing::instrument(name = "kv.update", skip_all, fields(job_id = %id))]
    pub async fn update_from(
        &self,
        id: JobId,
        known: Option<Versioned>,
        mut change: impl FnMut(&mut JobRecord) -> bool,
    ) -> Result<Option<Versioned>, StoreError> {
        // Each version names the step that wrote it, so its readers (SSE) join the same trace.
        let traceparent = telemetry::traceparent(&tracing::Span::current());
        let mut known = known.filter(|k| k.record.id == id);
        loop {
            let mut current = match known.take() {
                Some(known) => known,
                None => match self.get(id).await? {
                    Some(current) => current,
                    None => return Ok(None),
                },
            };
            if !change(&mut current.record) {
                return Ok(Some(current));
            }
            current.record.traceparent.clone_from(&traceparent);
            match self
                .kv
                .update(
                    id.to_string(),
                    Self::encode(&current.record),
                    current.revision,
                )
                .await
            {
                Ok(revision) => {
                    current.revision = revision;
                    return Ok(Some(current));
                }
                Err(e) if e.kind() == kv::UpdateErrorKind::WrongLastRevision => {
                    // Another writer was first: read its version and apply `change` to that.
                    metrics::counter!("tandem_job_store_conflicts_total").increment(1);
                    continue;
                }
                Err(e) => return Err(unavailable(e)),
            }
        }
    }

    /// [`update`](Self::update), or, when there is no record, `change` applied to `fresh()`
    /// and stored as a new one. A record created by someone else in between is updated
    /// instead, so `change` is never skipped. The result is the record as stored afterwards.
    pub async fn update_or_create(
        &self,
        id: JobId,
        fresh: impl Fn() -> JobRecord,
        change: impl FnMut(&mut JobRecord) -> bool,
    ) -> Result<Versioned, StoreError> {
        self.update_or_create_from(id, None, fresh, change).await
    }

    /// [`update_or_create`](Self::update_or_create), starting from `known` as
    /// [`update_from`](Self::update_from) does: one round trip while `known` is the newest
    /// version; a conflict re-reads and applies `change` again, so no writer's change is lost.
    pub async fn update_or_create_from(
        &self,
        id: JobId,
        mut known: Option<Versioned>,
        fresh: impl Fn() -> JobRecord,
        mut change: impl FnMut(&mut JobRecord) -> bool,
    ) -> Result<Versioned, StoreError> {
        loop {
            if let Some(stored) = self.update_from(id, known.take(), &mut change).await? {
                return Ok(stored);
            }
            let mut record = fresh();
            // A fresh record refuses nothing that `change` could want; keep it either way.
            let _ = change(&mut record);
            if let Some(created) = self.create(&record).await? {
                return Ok(created);
            }
            // Created by another writer since the update found nothing: update that one.
        }
    }

    /// Ends a job `failed` with `reason`, unless it is already final.
    pub async fn fail(&self, id: JobId, reason: &str) -> Result<Option<Versioned>, StoreError> {
        self.update(id, |record| {
            if !record.advance(crate::job::JobStatus::Failed) {
                return false;
            }
            record.error = Some(reason.to_owned());
            true
        })
        .await
    }

    /// Removes a record (a job whose submission failed half-way).
    pub async fn delete(&self, id: JobId) -> Result<(), StoreError> {
        self.kv.delete(id.to_string()).await.map_err(unavailable)
    }

    /// Maps a client's idempotency key to `candidate`, unless it already maps to a job.
    pub async fn claim_idempotency_key(
        &self,
        key: &str,
        candidate: JobId,
    ) -> Result<Claim, StoreError> {
        // Keys may hold any characters; the bucket's keys may not. A name-based UUID of the key
        // is a fixed-size, KV-safe digest.
        let digest = Uuid::new_v5(&Uuid::NAMESPACE_URL, key.as_bytes());
        let kv_key = format!("{IDEMPOTENCY_KEY_PREFIX}{}", digest.simple());
        loop {
            match self
                .kv
                .create(&kv_key, Bytes::from(candidate.to_string()))
                .await
            {
                Ok(_) => return Ok(Claim::New(candidate)),
                Err(e) if e.kind() == kv::CreateErrorKind::AlreadyExists => {
                    if let Some(existing) = self.kv.get(&kv_key).await.map_err(unavailable)? {
                        let id = std::str::from_utf8(&existing)
                            .ok()
                            .and_then(|s| s.parse().ok())
                            .ok_or_else(|| {
                                StoreError::Corrupt(kv_key.clone(), "not a job id".into())
                            })?;
                        return Ok(Claim::Existing(id));
                    }
                    // Deleted between our create and get: try again.
                }
                Err(e) => return Err(unavailable(e)),
            }
        }
    }
}
