//! Who may run a batch now, across every model of the server: strict priority, and no more
//! inference threads at once than the machine has cores.
//!
//! Both rules exist because the fast and the slow model share one process (what Triton's rate
//! limiter does with resources and priorities). A batch cannot be preempted once ONNX Runtime
//! runs it, so a lower-priority batch starts only while no request of a higher priority is
//! waiting, and, while the higher priority is busy (more than one of its requests at once within
//! the last [`CALM`]), not while one of its batches runs either: the gaps between such clients'
//! requests are shorter than a slow batch, and a slow batch started in one would hold a core
//! the next fast request needs. When the higher priority has had at most one request at a time
//! for [`CALM`] (one client, or sparse traffic), its batches use one instance and leave the
//! other cores free, so a lower-priority batch runs beside them: a job's slow answer then does
//! not wait for its own fast answer. And since a parallel operator is as slow as its slowest
//! thread, threads are counted against the cores: an instance starts a batch only when its
//! `intra_op_threads` fit beside those already running, so a fast instance never shares a core
//! with a slow one. Choose the threads so that a fast instance fits beside a running slow one
//! (on 2 cores: 1 and 1).

use std::{
    sync::{Arc, Condvar, Mutex, MutexGuard},
    time::{Duration, Instant},
};

/// Priorities run from 1 (first) to this.
pub const LOWEST_PRIORITY: u8 = 9;

/// How long a priority must have had at most one request at a time before a less urgent batch
/// may run beside its batches: several times a slow batch (16 to 23 ms for Lite2 on one core in
/// BENCHMARKS.md's runs), so that load rising again finds the slow batches stopped. Measured in
/// BENCHMARKS.md, rows c, d.
pub const CALM: Duration = Duration::from_secs(1);

/// Requests waiting and batches running, by priority (index 0 is priority 1).
#[derive(Debug, Default)]
struct Counts {
    waiting: [usize; LOWEST_PRIORITY as usize],
    running: [usize; LOWEST_PRIORITY as usize],
    threads: usize,
    /// When each priority last had more than one request waiting or running.
    crowded_at: [Option<Instant>; LOWEST_PRIORITY as usize],
}

impl Counts {
    /// Whether a batch of `priority` on `threads` threads may start under a budget of `cores`
    /// at `now`.
    fn may_start(&self, priority: u8, threads: usize, cores: usize, now: Instant) -> bool {
        let more_urgent = usize::from(priority.saturating_sub(1));
        let urgent_work = (0..more_urgent)
            .any(|i| self.waiting[i] > 0 || (self.running[i] > 0 && self.crowded(i, now)));
        // A model wider than the machine still runs, alone.
        let fits = self.threads == 0 || self.threads + threads <= cores;
        !urgent_work && fits
    }

    /// Whether priority `index + 1` had more than one request at once within [`CALM`] of `now`.
    fn crowded(&self, index: usize, now: Instant) -> bool {
        self.crowded_at[index].is_some_and(|at| now.saturating_duration_since(at) < CALM)
    }

    /// Counts `requests` more of priority `index + 1` waiting at `now`.
    fn add_waiting(&mut self, index: usize, requests: usize, now: Instant) {
        self.waiting[index] += requests;
        if self.waiting[index] + self.running[index] > 1 {
            self.crowded_at[index] = Some(now);
        }
    }
}

/// The one scheduler of a model server; every model's [`Lane`] shares it.
#[derive(Debug)]
pub struct Scheduler {
    cores: usize,
    counts: Mutex<Counts>,
    changed: Condvar,
}

impl Scheduler {
    /// A scheduler letting at most `cores` inference threads run at once (at least 1).
    pub fn new(cores: usize) -> Arc<Self> {
        Arc::new(Self {
            cores: cores.max(1),
            counts: Mutex::new(Counts::default()),
            changed: Condvar::new(),
        })
    }

    /// The inference threads allowed at once.
    pub fn cores(&self) -> usize {
        self.cores
    }

    /// One model instance's way in: its priority (clamped to 1..=[`LOWEST_PRIORITY`]) and the
    /// threads each of its batches occupies.
    pub fn lane(self: &Arc<Self>, priority: u8, threads: usize) -> Lane {
        Lane {
            scheduler: Arc::clone(self),
            index: usize::from(priority.clamp(1, LOWEST_PRIORITY) - 1),
            threads: threads.max(1),
        }
    }

    fn counts(&self) -> MutexGuard<'_, Counts> {
        // The counts stay consistent even if a holder panicked: every update is one statement.
        self.counts.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// A model's place in the [`Scheduler`]: counts its waiting requests and admits its batches.
#[derive(Debug, Clone)]
pub struct Lane {
    scheduler: Arc<Scheduler>,
    index: usize,
    threads: usize,
}

impl Lane {
    /// A request of this model is queued.
    pub fn waiting(&self, requests: usize) {
        self.scheduler
            .counts()
            .add_waiting(self.index, requests, Instant::now());
    }

    /// Queued requests left without running (refused, or their client is gone).
    pub fn gone(&self, requests: usize) {
        let mut counts = self.scheduler.counts();
        counts.waiting[self.index] = counts.waiting[self.index].saturating_sub(requests);
        drop(counts);
        self.scheduler.changed.notify_all();
    }

    /// Blocks until a batch of this model may start, then counts it running (and the one
    /// request it starts with no longer waiting) until the returned guard is dropped.
    pub fn admit(&self) -> Running<'_> {
        let scheduler = &self.scheduler;
        let priority = u8::try_from(self.index + 1).unwrap_or(LOWEST_PRIORITY);
        let mut counts = scheduler.counts();
        while !counts.may_start(priority, self.threads, scheduler.cores, Instant::now()) {
            counts = scheduler
                .changed
                .wait(counts)
                .unwrap_or_else(|e| e.into_inner());
        }
        counts.waiting[self.index] = counts.waiting[self.index].saturating_sub(1);
        counts.running[self.index] += 1;
        counts.threads += self.threads;
        drop(counts);
        // Others may be waiting on this model's requests to start.
        scheduler.changed.notify_all();
        Running { lane: self }
    }
}

/// A batch running; dropping it frees its threads and lets the next batches start.
#[derive(Debug)]
pub struct Running<'a> {
    lane: &'a Lane,
}

impl Running<'_> {
    /// More queued requests joined this batch: they no longer wait.
    pub fn joined(&self, requests: usize) {
        if requests > 0 {
            self.lane.gone(requests);
        }
    }
}

impl Drop for Running<'_> {
    fn drop(&mut self) {
        let lane = self.lane;
        let mut counts = lane.scheduler.counts();
        counts.running[lane.index] = counts.running[lane.index].saturating_sub(1);
        counts.threads = counts.threads.saturating_sub(lane.threads);
        drop(counts);
        lane.scheduler.changed.notify_all();
    }
}

#[cfg(test)]
#[path = "scheduler_tests.rs"]
mod tests;
