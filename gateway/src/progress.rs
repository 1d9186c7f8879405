//! `QueueProgress`: where a queued job stands (`queue: {ahead, eta_ms}`), and how fast the slow
//! path drains the queue (also the 429's `Retry-After`).
//!
//! The workers share one durable consumer on a work-queue stream, so its info says everything:
//! `delivered.stream_sequence` is the newest job handed to a worker, `num_pending` how many were
//! not handed out yet, `num_ack_pending` how many workers hold. Undelivered jobs are never
//! removed out of order (only an acknowledgement removes a job, and only a delivered one is
//! acknowledged), so the jobs ahead of a queued job with stream sequence `s` are the
//! undelivered ones below it: `s - delivered - 1` (at most `num_pending - 1`); a job already
//! delivered but back to `queued` (waiting for a retry) has none ahead. Before any worker has
//! created the consumer, nothing was delivered: the stream's first sequence stands in.
//!
//! The drain rate is measured here, from that same consumer info, sampled at most once a second
//! and only while someone asks (a `GET /job/<id>` of a queued job, an event stream of one, a
//! 429) and for 5 s after: over a run of samples in which jobs were waiting and workers were
//! busy (so the rate is the workers', not the arrival rate), the rate is the jobs handed out
//! between the run's oldest sample in the last 60 s and its newest, divided by the time between
//! them: a moving average over up to a minute. The last rate measured is kept when a run ends.
//! `eta_ms`, the expected wait for the job's slow answer, is `(ahead + 1) / rate`: the jobs
//! ahead of it and itself; it is `null` while no rate is known or no worker is taking jobs.

use std::{
    collections::VecDeque,
    sync::{Arc, Mutex, OnceLock},
    time::{Duration, Instant},
};

use async_nats::jetstream::{self, context::ConsumerInfoErrorKind};
use tandem_core::nats::{JOBS_STREAM, WORKER_CONSUMER};
use tokio::sync::{Notify, watch};

use crate::replies::QueuePosition;

/// Consumer info is read at most this often.
const SAMPLE_INTERVAL: Duration = Duration::from_secs(1);
/// Sampling goes on this long after the last time anyone asked.
const LINGER: Duration = Duration::from_secs(5);
/// The rate is averaged over this much of the current busy run at most.
const WINDOW: Duration = Duration::from_secs(60);
/// A rate is computed over at least this long.
const MIN_SPAN: Duration = Duration::from_millis(500);
/// A consumer-info request that takes longer is given up (the last snapshot stands).
const SAMPLE_TIMEOUT: Duration = Duration::from_secs(2);
/// `Retry-After` bounds when computed from the rate.
const MIN_RETRY_AFTER: Duration = Duration::from_secs(1);
const MAX_RETRY_AFTER: Duration = Duration::from_secs(300);

/// The queue as one sample of consumer info saw it, and the rate measured so far.
#[derive(Debug, Clone)]
pub struct Snapshot {
    pub at: Instant,
    progress: Progress,
    /// Workers hold jobs or wait for some: jobs are being taken.
    workers_active: bool,
    /// Jobs handed to workers per second.
    pub rate: Option<f64>,
}

#[derive(Debug, Clone, Copy)]
enum Progress {
    /// The workers' consumer exists.
    Consumer { delivered: u64, pending: u64 },
    /// No worker has created the consumer yet: nothing was delivered.
    NoConsumer { first_seq: u64 },
}

impl Snapshot {
    /// Where the queued job with stream sequence `seq` stands.
    pub fn position(&self, seq: u64) -> QueuePosition {
        let ahead = match self.progress {
            Progress::Consumer { delivered, pending } => seq
                .saturating_sub(delivered)
                .saturating_sub(1)
                .min(pending.saturating_sub(1)),
            Progress::NoConsumer { first_seq } => seq.saturating_sub(first_seq.max(1)),
        };
        let eta_ms = self
            .rate
            .filter(|rate| *rate > 0.0 && self.workers_active)
            .map(|rate| ((ahead + 1) as f64 / rate * 1000.0).round() as u64);
        QueuePosition { ahead, eta_ms }
    }
}

impl Snapshot {
    /// How long the jobs waiting now take to drain at the measured rate (the slow path's
    /// expected wait, for the brownout); `None` while no rate is known or no worker works.
    pub fn expected_wait(&self) -> Option<Duration> {
        let Progress::Consumer { pending, .. } = self.progress else {
            return None;
        };
        let rate = self.rate.filter(|r| *r > 0.0 && self.workers_active)?;
        Some(Duration::from_secs_f64((pending as f64 / rate).min(1e6)))
    }
}

/// The monitor; cheap to clone.
#[derive(Debug, Clone)]
pub struct QueueProgress {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    estimator: Mutex<Estimator>,
    latest: watch::Sender<Option<Arc<Snapshot>>>,
    /// One consumer-info request at a time.
    sampling: tokio::sync::Mutex<()>,
    asked: Mutex<Option<Instant>>,
    wake: Notify,
    /// Set once JetStream is set up.
    js: OnceLock<jetstream::Context>,
}

impl Default for QueueProgress {
    fn default() -> Self {
        Self {
            inner: Arc::new(Inner {
                estimator: Mutex::default(),
                latest: watch::channel(None).0,
                sampling: tokio::sync::Mutex::new(()),
                asked: Mutex::new(None),
                wake: Notify::new(),
                js: OnceLock::new(),
            }),
        }
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|e| e.into_inner())
}

impl QueueProgress {
    /// Where to read consumer info (once JetStream is set up).
    pub fn attach(&self, js: jetstream::Context) {
        let _ = self.inner.js.set(js);
    }

    /// A recent snapshot (at most a second old), sampling one if there is none; `None` when
    /// NATS does not answer.
    pub async fn current(&self) -> Option<Arc<Snapshot>> {
        self.asked();
        if let Some(fresh) = self.fresh() {
            return Some(fresh);
        }
        self.sample().await
    }

    /// Each new snapshot, for as long as the receiver is held (sampling goes on meanwhile).
    pub fn subscribe(&self) -> watch::Receiver<Option<Arc<Snapshot>>> {
        let receiver = self.inner.latest.subscribe();
        self.inner.wake.notify_one();
        receiver
    }

    /// `Retry-After` for a full queue: the time the workers take to make room for one job at
    /// the last rate measured (1 s to 5 min), or `fallback` when none is known.
    pub fn retry_after(&self, fallback: Duration) -> Duration {
        self.asked();
        match lock(&self.inner.estimator).rate {
            Some(rate) if rate > 0.0 => Duration::from_secs_f64((1.0 / rate).min(1e6))
                .clamp(MIN_RETRY_AFTER, MAX_RETRY_AFTER),
            _ => fallback,
        }
    }

    fn asked(&self) {
        *lock(&self.inner.asked) = Some(Instant::now());
        self.inner.wake.notify_one();
    }

    fn wanted(&self) -> bool {
        self.inner.latest.receiver_count() > 0
            || lock(&self.inner.asked).is_some_and(|at| at.elapsed() < LINGER)
    }

    fn fresh(&self) -> Option<Arc<Snapshot>> {
        self.inner
            .latest
            .borrow()
            .clone()
            .filter(|s| s.at.elapsed() < SAMPLE_INTERVAL)
    }

    async fn sample(&self) -> Option<Arc<Snapshot>> {
        let js = self.inner.js.get()?;
        let _one = self.inner.sampling.lock().await;
        if let Some(fresh) = self.fresh() {
            return Some(fresh);
        }
        let progress = match tokio::time::timeout(SAMPLE_TIMEOUT, read(js)).await {
            Ok(Ok(sample)) => sample,
            Ok(Err(e)) => {
                tracing::debug!(error = %e, "no consumer info");
                return self.inner.latest.borrow().clone();
            }
            Err(_) => return self.inner.latest.borrow().clone(),
        };
        let at = Instant::now();
        let (progress, workers_active) = progress;
        let rate = lock(&self.inner.estimator).observe(at, progress, workers_active);
        let snapshot = Arc::new(Snapshot {
            at,
            progress,
            workers_active,
            rate,
        });
        self.inner.latest.send_replace(Some(snapshot.clone()));
        Some(snapshot)
    }

    /// Samples once a second while anyone wants it, for as long as the gateway runs.
    pub async fn run(self) {
        loop {
            while !self.wanted() {
                self.inner.wake.notified().await;
            }
            self.sample().await;
            tokio::time::sleep(SAMPLE_INTERVAL).await;
        }
    }
}

/// One consumer-info sample: the progress, and whether workers are taking jobs.
async fn read(js: &jetstream::Context) -> Result<(Progress, bool), async_nats::Error> {
    let stream = js.get_stream_no_info(JOBS_STREAM).await?;
    match stream.consumer_info(WORKER_CONSUMER).await {
        Ok(info) => Ok((
            Progress::Consumer {
                delivered: info.delivered.stream_sequence,
                pending: info.num_pending,
            },
            info.num_ack_pending > 0 || info.num_waiting > 0,
        )),
        Err(e) if e.kind() == ConsumerInfoErrorKind::NotFound => {
            let info = stream.get_info().await?;
            Ok((
                Progress::NoConsumer {
                    first_seq: info.state.first_sequence,
                },
                false,
            ))
        }
        Err(e) => Err(e.into()),
    }
}

/// The drain rate, from samples taken while jobs waited and workers were busy.
#[derive(Debug, Default)]
struct Estimator {
    /// `(when, delivered stream sequence)` of the current busy run, oldest first.
    run: VecDeque<(Instant, u64)>,
    rate: Option<f64>,
}

impl Estimator {
    /// Takes one sample; returns the rate known after it.
    fn observe(&mut self, at: Instant, progress: Progress, workers_active: bool) -> Option<f64> {
        let Progress::Consumer { delivered, pending } = progress else {
            self.run.clear();
            return self.rate;
        };
        // Only while jobs wait and workers work does the rate measure the workers.
        if pending == 0 || !workers_active {
            self.run.clear();
            return self.rate;
        }
        // A consumer re-created from scratch starts over.
        if self.run.back().is_some_and(|&(_, last)| delivered < last) {
            self.run.clear();
        }
        self.run.push_back((at, delivered));
        while self.run.len() > 2
            && self
                .run
                .front()
                .is_some_and(|&(first, _)| at.duration_since(first) > WINDOW)
        {
            self.run.pop_front();
        }
        if let Some(&(first_at, first)) = self.run.front() {
            let span = at.duration_since(first_at);
            if delivered > first && span >= MIN_SPAN {
                self.rate = Some((delivered - first) as f64 / span.as_secs_f64());
            }
        }
        self.rate
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn busy(delivered: u64, pending: u64) -> Progress {
        Progress::Consumer { delivered, pending }
    }

    #[test]
    fn the_rate_is_jobs_taken_per_second_while_busy() {
        let start = Instant::now();
        let mut estimator = Estimator::default();
        assert_eq!(estimator.observe(start, busy(1, 20), true), None);
        let at = |s: u64| start + Duration::from_secs(s);
        assert_eq!(estimator.observe(at(1), busy(5, 16), true), Some(4.0));
        assert_eq!(estimator.observe(at(2), busy(7, 14), true), Some(3.0));
        // Idle: no jobs waiting. The rate stays known; a new run starts afresh.
        assert_eq!(estimator.observe(at(3), busy(20, 0), true), Some(3.0));
        assert_eq!(estimator.observe(at(10), busy(20, 5), true), Some(3.0));
        assert_eq!(estimator.observe(at(12), busy(30, 5), true), Some(5.0));
        // No workers: not measured.
        assert_eq!(estimator.observe(at(13), busy(30, 5), false), Some(5.0));
        assert!(estimator.run.is_empty());
    }

    #[test]
    fn positions_count_the_undelivered_jobs_ahead() {
        let snapshot = |progress, rate| Snapshot {
            at: Instant::now(),
            progress,
            workers_active: true,
            rate,
        };
        let s = snapshot(busy(10, 5), Some(2.0));
        assert_eq!(
            s.position(15),
            QueuePosition {
                ahead: 4,
                eta_ms: Some(2500)
            }
        );
        assert_eq!(s.position(11).ahead, 0);
        // Delivered already, waiting for a retry.
        assert_eq!(s.position(3).ahead, 0);
        let none = snapshot(Progress::NoConsumer { first_seq: 1 }, None);
        assert_eq!(
            none.position(8),
            QueuePosition {
                ahead: 7,
                eta_ms: None
            }
        );
    }

    #[test]
    fn retry_after_follows_the_rate() {
        let progress = QueueProgress::default();
        let fallback = Duration::from_secs(5);
        assert_eq!(progress.retry_after(fallback), fallback);
        lock(&progress.inner.estimator).rate = Some(0.25);
        assert_eq!(progress.retry_after(fallback), Duration::from_secs(4));
        lock(&progress.inner.estimator).rate = Some(50.0);
        assert_eq!(progress.retry_after(fallback), MIN_RETRY_AFTER);
        lock(&progress.inner.estimator).rate = Some(1e-9);
        assert_eq!(progress.retry_after(fallback), MAX_RETRY_AFTER);
    }
}
