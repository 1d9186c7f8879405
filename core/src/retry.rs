//! Retrying with backoff: the one policy of every loop that waits for something to come back
//! (NATS at start-up, a broken watch), on top of the `backon` crate.

use std::{fmt::Display, future::Future, time::Duration};

use backon::{ExponentialBuilder, Retryable as _};

/// First delay after a failure.
pub const FIRST_DELAY: Duration = Duration::from_millis(100);
/// Longest delay between attempts.
pub const MAX_DELAY: Duration = Duration::from_secs(5);

/// Doubling from [`FIRST_DELAY`] to [`MAX_DELAY`], with jitter, for ever.
pub fn backoff() -> ExponentialBuilder {
    ExponentialBuilder::default()
        .with_min_delay(FIRST_DELAY)
        .with_max_delay(MAX_DELAY)
        .with_jitter()
        .without_max_times()
}

/// Runs `attempt` until it succeeds, waiting [`backoff`] between failures and logging each
/// one as `what` failed.
pub async fn until_ok<T, E, Fut>(what: &str, mut attempt: impl FnMut() -> Fut) -> T
where
    E: Display,
    Fut: Future<Output = Result<T, E>>,
{
    loop {
        let outcome = (&mut attempt)
            .retry(backoff())
            .notify(|e: &E, retry_in: Duration| {
                tracing::warn!(error = %e, ?retry_in, "{what} failed");
            })
            .await;
        // `backoff` never gives up, so this is always `Ok`; were it not, start over.
        if let Ok(value) = outcome {
            return value;
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicU32, Ordering};

    use super::*;

    #[tokio::test(start_paused = true)]
    async fn retries_until_the_attempt_succeeds() {
        let calls = AtomicU32::new(0);
        let value = until_ok("test", || async {
            match calls.fetch_add(1, Ordering::SeqCst) {
                0..=3 => Err("not yet"),
                n => Ok(n),
            }
        })
        .await;
        assert_eq!(value, 4);
        assert_eq!(calls.load(Ordering::SeqCst), 5);
    }
}
