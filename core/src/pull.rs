//! The fetch loop of a durable pull consumer, shared by the slow-workers (jobs) and the
//! gateway's webhook senders (webhook events): pull only as many messages as there are free
//! slots, run each in a task of its own.
//!
//! Fetching exactly the free slots (not the client's default batch of hundreds) keeps messages
//! on the server, where another consumer instance can take them, instead of aging past AckWait
//! in a buffer. After repeated fetch errors (a restarted server can leave a consumer handle
//! stuck) the consumer is re-created, idempotently.

use std::{future::Future, sync::Arc, time::Duration};

use async_nats::jetstream::{Message, consumer::PullConsumer};
use futures::StreamExt as _;
use tokio::{
    sync::{OwnedSemaphorePermit, Semaphore},
    task::JoinSet,
};

/// How long one pull request waits on the server for messages (long poll).
pub const PULL_EXPIRY: Duration = Duration::from_secs(5);
/// Consecutive fetch errors after which the consumer handle is re-created.
const ERRORS_BEFORE_RECREATE: u32 = 3;

/// A pull consumer and how to make it again.
#[derive(Debug)]
pub struct FetchLoop<R> {
    /// What the messages are, for the logs ("jobs", "webhook events").
    pub what: &'static str,
    pub consumer: PullConsumer,
    /// Creates (or updates) the durable consumer: an idempotent `ensure_*` of the contract.
    pub recreate: R,
    /// Messages handled at once.
    pub concurrency: usize,
}

impl<R, Made> FetchLoop<R>
where
    R: FnMut() -> Made,
    Made: Future<Output = Result<PullConsumer, async_nats::Error>>,
{
    /// Runs `handle` on each message, at most `concurrency` at once, until `shutdown`; returns
    /// the tasks still running (the caller drains them, or drops them to abort).
    pub async fn run<T, H, Fut>(
        mut self,
        handle: H,
        shutdown: impl Future<Output = ()> + Clone,
    ) -> JoinSet<T>
    where
        H: Fn(Message) -> Fut,
        Fut: Future<Output = T> + Send + 'static,
        T: Send + 'static,
    {
        let slots = Arc::new(Semaphore::new(self.concurrency));
        let mut running = JoinSet::new();
        let mut errors = 0u32;
        loop {
            // Wait for at least one free slot, then take every free one.
            let first = tokio::select! {
                permit = slots.clone().acquire_owned() => match permit {
                    Ok(permit) => permit,
                    Err(_) => break, // the semaphore is never closed
                },
                () = shutdown.clone() => break,
            };
            let mut permits = vec![first];
            while let Ok(permit) = slots.clone().try_acquire_owned() {
                permits.push(permit);
            }
            let fetched = self.fetch(permits, &handle, &mut running, &mut errors);
            tokio::select! {
                () = fetched => {}
                () = shutdown.clone() => break,
            }
            if errors >= ERRORS_BEFORE_RECREATE {
                tokio::select! {
                    () = self.recover(errors) => {}
                    () = shutdown.clone() => break,
                }
            }
            // Reap finished tasks so the set does not grow.
            while running.try_join_next().is_some() {}
        }
        running
    }

    /// One pull request for as many messages as `permits`; each one received starts at once.
    async fn fetch<T, H, Fut>(
        &self,
        mut permits: Vec<OwnedSemaphorePermit>,
        handle: &H,
        running: &mut JoinSet<T>,
        errors: &mut u32,
    ) where
        H: Fn(Message) -> Fut,
        Fut: Future<Output = T> + Send + 'static,
        T: Send + 'static,
    {
        let batch = self
            .consumer
            .batch()
            .max_messages(permits.len())
            .expires(PULL_EXPIRY)
            .messages()
            .await;
        let mut batch = match batch {
            Ok(batch) => batch,
            Err(e) => {
                *errors += 1;
                tracing::warn!(error = %e, errors, "cannot fetch {}", self.what);
                return pause(*errors).await;
            }
        };
        while let Some(next) = batch.next().await {
            match next {
                Ok(msg) => {
                    *errors = 0;
                    let Some(permit) = permits.pop() else { break };
                    let work = handle(msg);
                    running.spawn(async move {
                        let outcome = work.await;
                        drop(permit);
                        outcome
                    });
                }
                Err(e) => {
                    *errors += 1;
                    tracing::warn!(error = %e, errors, "error while fetching {}", self.what);
                    break;
                }
            }
        }
    }

    /// Backs off, then re-creates the durable consumer.
    async fn recover(&mut self, errors: u32) {
        pause(errors).await;
        match (self.recreate)().await {
            Ok(consumer) => {
                tracing::info!("consumer of {} re-created", self.what);
                self.consumer = consumer;
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot re-create the consumer of {} yet", self.what)
            }
        }
    }
}

/// A pause that grows with the consecutive errors.
async fn pause(errors: u32) {
    tokio::time::sleep(Duration::from_millis(200 * u64::from(errors.min(25)))).await;
}
