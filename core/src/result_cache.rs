//! The result cache: both answers for an image, by the SHA-256 of its bytes, in the results
//! bucket (`tandem_results`, TTL `TANDEM_RESULT_CACHE_TTL_SECS`; 0 turns it off).
//!
//! An entry names the models that answered, with their digests (`Prediction::model_digest`):
//! it is used only while the model server reports the same digests, so a changed model (new
//! weights, new preprocessing) never serves an old answer. The gateway reads entries; the
//! slow-workers write them. Concurrent identical jobs run the slow model once: the first worker
//! to start one marks the entry `running` (a create, so only one wins) and the others wait for
//! it to be `complete` (or take over when it stays `running` too long: that worker died).

use std::time::Duration;

use async_nats::jetstream::kv;
use bytes::Bytes;
use futures::StreamExt as _;
use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};
use time::OffsetDateTime;

use crate::{
    job::{JobId, Prediction},
    store::StoreError,
};

/// One image's entry.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "state", rename_all = "lowercase")]
pub enum CacheEntry {
    /// A worker is running the slow model on this image for `job`.
    Running {
        job: JobId,
        #[serde(with = "time::serde::rfc3339")]
        since: OffsetDateTime,
    },
    /// The slow answer, and the fast one when the job had it by then (the slow model can
    /// answer before the gateway has stored the fast answer).
    Complete {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        fast: Option<Prediction>,
        slow: Prediction,
    },
}

/// What a worker starting a job with this image should do.
#[derive(Debug, Clone, PartialEq)]
pub enum Begin {
    /// Run the slow model: this job holds the entry now.
    Run,
    /// Another job is running it since `since`: wait for its answer.
    Wait { job: JobId, since: OffsetDateTime },
    /// The answers are there (the caller checks they are still the models' own).
    Found {
        fast: Option<Prediction>,
        slow: Prediction,
    },
}

/// The results bucket; cheap to clone.
#[derive(Debug, Clone)]
pub struct ResultCache {
    kv: kv::Store,
}

/// The key of an image: the SHA-256 of its bytes, as lowercase hex.
pub fn image_key(image: &[u8]) -> String {
    let digest = Sha256::digest(image);
    digest.iter().map(|b| format!("{b:02x}")).collect()
}

fn unavailable(e: impl std::fmt::Display) -> StoreError {
    StoreError::Unavailable(format!("result cache: {e}"))
}

fn encode(entry: &CacheEntry) -> Bytes {
    Bytes::from(serde_json::to_vec(entry).unwrap_or_default())
}

impl ResultCache {
    pub fn new(kv: kv::Store) -> Self {
        Self { kv }
    }

    /// The entry and its revision, if any (a corrupt entry counts as none).
    pub async fn get(&self, key: &str) -> Result<Option<(CacheEntry, u64)>, StoreError> {
        let entry = self.kv.entry(key).await.map_err(unavailable)?;
        Ok(entry
            .filter(|e| e.operation == kv::Operation::Put)
            .and_then(|e| Some((serde_json::from_slice(&e.value).ok()?, e.revision))))
    }

    /// The answers for `key` (the fast one may be missing), if there are any.
    pub async fn answers(
        &self,
        key: &str,
    ) -> Result<Option<(Option<Prediction>, Prediction)>, StoreError> {
        Ok(match self.get(key).await? {
            Some((CacheEntry::Complete { fast, slow }, _)) => Some((fast, slow)),
            _ => None,
        })
    }

    /// Claims the entry for `job` unless another job holds it (running for less than
    /// `stale_after`) or it is complete. A complete entry the caller finds outdated is
    /// replaced with [`take_over`](Self::take_over).
    pub async fn begin(
        &self,
        key: &str,
        job: JobId,
        stale_after: Duration,
    ) -> Result<Begin, StoreError> {
        let running = CacheEntry::Running {
            job,
            since: OffsetDateTime::now_utc(),
        };
        loop {
            match self.kv.create(key, encode(&running)).await {
                Ok(_) => return Ok(Begin::Run),
                Err(e) if e.kind() == kv::CreateErrorKind::AlreadyExists => {}
                Err(e) => return Err(unavailable(e)),
            }
            let Some((entry, revision)) = self.get(key).await? else {
                continue; // gone in between (expired): create again
            };
            match entry {
                CacheEntry::Complete { fast, slow } => return Ok(Begin::Found { fast, slow }),
                CacheEntry::Running { job: holder, .. } if holder == job => return Ok(Begin::Run),
                CacheEntry::Running { job: holder, since } => {
                    let age = OffsetDateTime::now_utc() - since;
                    if age < stale_after && age > -time::Duration::minutes(5) {
                        return Ok(Begin::Wait { job: holder, since });
                    }
                    if self.take_over(key, job, revision).await? {
                        return Ok(Begin::Run);
                    }
                }
            }
        }
    }

    /// Marks the entry as running for `job`, if it is still at `revision`.
    pub async fn take_over(
        &self,
        key: &str,
        job: JobId,
        revision: u64,
    ) -> Result<bool, StoreError> {
        let running = CacheEntry::Running {
            job,
            since: OffsetDateTime::now_utc(),
        };
        match self.kv.update(key, encode(&running), revision).await {
            Ok(_) => Ok(true),
            Err(e) if e.kind() == kv::UpdateErrorKind::WrongLastRevision => Ok(false),
            Err(e) => Err(unavailable(e)),
        }
    }

    /// Stores the answers.
    pub async fn complete(
        &self,
        key: &str,
        fast: Option<&Prediction>,
        slow: &Prediction,
    ) -> Result<(), StoreError> {
        let entry = CacheEntry::Complete {
            fast: fast.cloned(),
            slow: slow.clone(),
        };
        self.kv
            .put(key, encode(&entry))
            .await
            .map_err(unavailable)?;
        Ok(())
    }

    /// Gives up the entry `job` holds (its model call failed), so that the next job runs it.
    pub async fn release(&self, key: &str, job: JobId) -> Result<(), StoreError> {
        if let Some((CacheEntry::Running { job: holder, .. }, revision)) = self.get(key).await?
            && holder == job
        {
            // A newer revision means someone else wrote: leave it.
            let _ = self.kv.delete_expect_revision(key, Some(revision)).await;
        }
        Ok(())
    }

    /// Waits up to `limit` for the entry to be complete.
    pub async fn wait_complete(
        &self,
        key: &str,
        limit: Duration,
    ) -> Result<Option<(Option<Prediction>, Prediction)>, StoreError> {
        let mut changes = self.kv.watch_with_history(key).await.map_err(unavailable)?;
        let waited = tokio::time::timeout(limit, async {
            while let Some(Ok(entry)) = changes.next().await {
                if entry.operation != kv::Operation::Put {
                    return None; // released: the caller runs it
                }
                if let Ok(CacheEntry::Complete { fast, slow }) =
                    serde_json::from_slice::<CacheEntry>(&entry.value)
                {
                    return Some((fast, slow));
                }
            }
            None
        })
        .await;
        Ok(waited.ok().flatten())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_the_sha256_of_the_bytes() {
        assert_eq!(
            image_key(b"abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }

    #[test]
    fn entries_read_back() {
        let running = CacheEntry::Running {
            job: JobId::new(),
            since: OffsetDateTime::from_unix_timestamp(1_700_000_000).unwrap(),
        };
        let text = serde_json::to_string(&running).unwrap();
        assert!(text.contains(r#""state":"running""#), "{text}");
        assert_eq!(serde_json::from_str::<CacheEntry>(&text).unwrap(), running);
    }
}
