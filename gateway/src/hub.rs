//! `JobHub`: ONE watcher on the job-records bucket, fanned out in process to SSE streams.
//!
//! Ten thousand open event streams are ten thousand cheap `broadcast` receivers here, not ten
//! thousand JetStream consumers. Subscribers register before they read the current record, so
//! no change slips between the read and the watch; receivers drop anything not newer than what
//! they already sent (the KV revision orders changes). When the watch breaks (NATS restarted,
//! the stream stalled) it is re-created with backoff and every watched key is re-read, so
//! streams resume without losing the change that happened while it was down.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex, OnceLock},
};

use async_nats::jetstream::kv;
use futures::StreamExt as _;
use tandem_core::{
    job::JobId,
    retry,
    store::{JobStore, Versioned},
};
use tokio::sync::broadcast;

use crate::queue::Queue;

/// Per-job buffer: a reader this far behind is resynchronised from the store.
const CHANNEL_CAPACITY: usize = 16;

type Senders = Arc<Mutex<HashMap<JobId, broadcast::Sender<Arc<Change>>>>>;

/// One version of a job's record, with its JSON view rendered once for all its streams (ten
/// thousand streams on one job share one rendering, not ten thousand), and only if a stream
/// wants it (`POST /predict` subscribes too, for the revision alone).
#[derive(Debug)]
pub struct Change {
    pub update: Versioned,
    view: OnceLock<String>,
}

impl Change {
    pub fn new(update: Versioned) -> Arc<Self> {
        Arc::new(Self {
            update,
            view: OnceLock::new(),
        })
    }

    /// `GET /job/<id>`'s body for this version: the event's data.
    pub fn view(&self) -> &str {
        self.view.get_or_init(|| {
            // A struct of strings and numbers always serialises.
            serde_json::to_string(&crate::replies::JobView::new(&self.update.record))
                .unwrap_or_default()
        })
    }
}

/// The fan-out of record changes to in-process subscribers.
#[derive(Debug, Clone, Default)]
pub struct JobHub {
    senders: Senders,
}

/// A live subscription to one job's changes; unregisters on drop.
#[derive(Debug)]
pub struct Subscription {
    pub receiver: broadcast::Receiver<Arc<Change>>,
    id: JobId,
    senders: Senders,
}

impl Drop for Subscription {
    fn drop(&mut self) {
        let mut senders = self.senders.lock().unwrap_or_else(|e| e.into_inner());
        // Our receiver still counts until this function returns.
        if senders
            .get(&self.id)
            .is_some_and(|tx| tx.receiver_count() <= 1)
        {
            senders.remove(&self.id);
        }
    }
}

impl JobHub {
    /// Registers interest in `id`.
    pub fn subscribe(&self, id: JobId) -> Subscription {
        let mut senders = self.senders.lock().unwrap_or_else(|e| e.into_inner());
        let receiver = senders
            .entry(id)
            .or_insert_with(|| broadcast::channel(CHANNEL_CAPACITY).0)
            .subscribe();
        Subscription {
            receiver,
            id,
            senders: self.senders.clone(),
        }
    }

    fn publish(&self, update: Versioned) {
        if let Some(slow) = &update.record.slow {
            crate::escalation::observe_slow(slow);
        }
        let senders = self.senders.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(tx) = senders.get(&update.record.id) {
            let _ = tx.send(Change::new(update));
        }
    }

    fn watching(&self, key: &str) -> bool {
        let Ok(id) = key.parse::<JobId>() else {
            return false;
        };
        let senders = self.senders.lock().unwrap_or_else(|e| e.into_inner());
        senders.contains_key(&id)
    }

    fn watched(&self) -> Vec<JobId> {
        let senders = self.senders.lock().unwrap_or_else(|e| e.into_inner());
        senders.keys().copied().collect()
    }

    /// Runs the bucket watcher for as long as the gateway runs; re-creates it when it breaks.
    pub async fn run_watcher(self, queue: Queue) {
        let store = queue.wait_for_jetstream().await.store.clone();
        loop {
            let watch = retry::until_ok("watching job records", || store.kv().watch_all()).await;
            // Changes made while no watch was running: re-read what is watched.
            self.resync(&store).await;
            self.forward(watch).await;
            // A watch that breaks as soon as it starts must not spin.
            tokio::time::sleep(retry::FIRST_DELAY).await;
        }
    }

    /// Hands every change the watch sees to the streams that follow it, until the watch breaks.
    async fn forward(&self, mut watch: kv::Watch) {
        while let Some(next) = watch.next().await {
            match next {
                // Records nobody here streams are not even parsed.
                Ok(entry) if !self.watching(&entry.key) => {}
                Ok(entry) => match JobStore::decode(&entry) {
                    Some(Ok(update)) => self.publish(update),
                    Some(Err(e)) => tracing::warn!(error = %e, "skipping bad record"),
                    None => {}
                },
                Err(e) => {
                    tracing::warn!(error = %e, "job watcher failed; restarting");
                    return;
                }
            }
        }
        tracing::warn!("job watcher ended; restarting");
    }

    async fn resync(&self, store: &JobStore) {
        for id in self.watched() {
            if let Ok(Some(current)) = store.get(id).await {
                self.publish(current);
            }
        }
    }
}
