//! Talking to JetStream about one delivered message: acknowledgements, "still working" while
//! something takes long, and job-store calls retried in place.
//!
//! A store that does not answer (a NATS node restarting, a stream leader being elected, a
//! connection left on a node whose JetStream API does not answer) must not use up the job's
//! deliveries, as a nak would, one per try: the call is retried in place, for up to
//! [`STORE_PATIENCE`], while the message is kept alive. After repeated failures the worker
//! reconnects, to whichever server answers: the compose suite once saw one worker's every
//! record read answer `no responders` for 95 s after a node restart, while the other worker,
//! on another node, was fine, until the job had used its deliveries.

use std::{
    sync::atomic::Ordering,
    time::{Duration, Instant},
};

use async_nats::jetstream::{AckKind, Message};
use tandem_core::store::StoreError;

use crate::job::JobContext;

/// How long a store call is retried in place before the job is handed back (nak).
pub const STORE_PATIENCE: Duration = Duration::from_secs(120);
/// Consecutive store failures after which the connection is re-made (at most every
/// [`RECONNECT_EVERY`]).
const RECONNECT_AFTER: u32 = 3;
const RECONNECT_EVERY: Duration = Duration::from_secs(10);

pub async fn ack(msg: &Message, kind: AckKind) {
    if let Err(e) = msg.ack_with(kind).await {
        tracing::warn!(error = %e, "could not acknowledge message");
    }
}

/// Runs `work`, telling JetStream every third of AckWait that the message is being worked on.
pub async fn keep_alive<T>(ctx: &JobContext, msg: &Message, work: impl Future<Output = T>) -> T {
    tokio::pin!(work);
    let period = (ctx.config.nats.ack_wait / 3).max(Duration::from_millis(100));
    let mut ticker = tokio::time::interval_at(tokio::time::Instant::now() + period, period);
    loop {
        tokio::select! {
            result = &mut work => return result,
            _ = ticker.tick() => ack(msg, AckKind::Progress).await,
        }
    }
}

/// `op`, retried in place while the store is unavailable (see the module's doc).
pub async fn patiently<T, F, Fut>(
    ctx: &JobContext,
    msg: &Message,
    mut op: F,
) -> Result<T, StoreError>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, StoreError>>,
{
    let started = Instant::now();
    let (mut failures, mut delay) = (0u32, Duration::from_millis(100));
    loop {
        let error = match keep_alive(ctx, msg, op()).await {
            Err(e @ StoreError::Unavailable(_)) => e,
            done => return done,
        };
        failures += 1;
        if started.elapsed() + delay >= STORE_PATIENCE {
            return Err(error);
        }
        tracing::warn!(%error, failures, "job store unavailable; retrying in place");
        if failures.is_multiple_of(RECONNECT_AFTER) {
            reconnect(ctx).await;
        }
        keep_alive(ctx, msg, tokio::time::sleep(delay)).await;
        delay = (delay * 2).min(Duration::from_secs(5));
    }
}

/// Re-makes the NATS connection (another server of the list may answer), at most every
/// [`RECONNECT_EVERY`] whatever the number of jobs that ask.
async fn reconnect(ctx: &JobContext) {
    let now = ctx.started.elapsed().as_millis() as u64;
    let last = ctx.last_reconnect_ms.load(Ordering::Relaxed);
    if last != 0 && now.saturating_sub(last) < RECONNECT_EVERY.as_millis() as u64 {
        return;
    }
    ctx.last_reconnect_ms.store(now.max(1), Ordering::Relaxed);
    tracing::warn!("the job store keeps failing; reconnecting to NATS");
    if let Err(e) = ctx.js.client().force_reconnect().await {
        tracing::warn!(error = %e, "could not reconnect");
    }
}
