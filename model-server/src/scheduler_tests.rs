use std::{
    sync::mpsc,
    thread,
    time::{Duration, Instant},
};

use super::*;

/// Long enough for a thread that could start to have started.
const NOT_STARTED: Duration = Duration::from_millis(200);

/// Whether nothing waits or runs (when each priority was last crowded is kept).
fn idle(counts: &Counts) -> bool {
    counts
        .waiting
        .iter()
        .chain(&counts.running)
        .all(|&n| n == 0)
        && counts.threads == 0
}

#[test]
fn a_lower_priority_batch_waits_while_a_busy_higher_one_waits_or_runs() {
    let now = Instant::now();
    let mut counts = Counts::default();
    assert!(counts.may_start(2, 1, 2, now), "nothing else: it starts");
    counts.add_waiting(0, 2, now);
    assert!(!counts.may_start(2, 1, 2, now), "fast requests wait");
    assert!(counts.may_start(1, 1, 2, now), "the fast one itself may");
    counts.waiting[0] = 0;
    counts.running[0] = 1;
    counts.threads = 1;
    assert!(
        !counts.may_start(2, 1, 2, now),
        "a fast batch runs, and fast requests came together just now"
    );
    assert!(
        counts.may_start(1, 1, 2, now),
        "a second fast instance fits"
    );
    assert!(
        !counts.may_start(1, 2, 2, now),
        "two more threads do not fit"
    );
    counts.running[0] = 0;
    counts.running[2] = 1;
    assert!(
        counts.may_start(2, 1, 2, now),
        "a less urgent batch does not hold back a more urgent one"
    );
}

#[test]
fn a_slow_batch_runs_beside_a_fast_one_once_fast_traffic_is_calm() {
    let start = Instant::now();
    let mut counts = Counts::default();
    counts.add_waiting(0, 1, start);
    assert!(!counts.may_start(2, 1, 2, start), "a fast request waits");
    counts.waiting[0] = 0;
    counts.running[0] = 1;
    counts.threads = 1;
    assert!(
        counts.may_start(2, 1, 2, start),
        "one fast request at a time: the slow batch takes the other core"
    );
    counts.add_waiting(0, 1, start);
    counts.waiting[0] = 0;
    assert!(
        !counts.may_start(2, 1, 2, start + CALM / 2),
        "two fast requests at once within CALM: the slow batch waits"
    );
    assert!(
        counts.may_start(2, 1, 2, start + CALM),
        "after CALM without a crowd it runs beside the fast batch again"
    );
}

#[test]
fn a_model_wider_than_the_machine_runs_alone() {
    let now = Instant::now();
    let mut counts = Counts::default();
    assert!(counts.may_start(1, 8, 2, now));
    counts.threads = 1;
    counts.running[1] = 1;
    assert!(
        !counts.may_start(1, 8, 2, now),
        "it waits for the cores to be free"
    );
}

#[test]
fn a_slow_batch_starts_once_the_busy_fast_requests_have_run() {
    let scheduler = Scheduler::new(2);
    let fast = scheduler.lane(1, 1);
    let slow = scheduler.lane(2, 1);
    // Two at once: the fast model is busy, so its running batch holds the slow one back.
    fast.waiting(2);
    fast.gone(1);
    slow.waiting(1);
    let (started, slow_started) = mpsc::channel();
    let handle = thread::spawn(move || {
        let _running = slow.admit();
        started.send(()).unwrap();
    });
    assert!(
        slow_started.recv_timeout(NOT_STARTED).is_err(),
        "the slow batch started while a fast request waited"
    );
    let running = fast.admit();
    assert!(
        slow_started.recv_timeout(NOT_STARTED).is_err(),
        "the slow batch started while a fast batch ran"
    );
    drop(running);
    slow_started
        .recv_timeout(Duration::from_secs(10))
        .expect("the slow batch starts when no fast work is left");
    handle.join().unwrap();
}

#[test]
fn no_more_threads_run_than_there_are_cores() {
    let scheduler = Scheduler::new(2);
    let lane = scheduler.lane(1, 1);
    lane.waiting(3);
    let first = lane.admit();
    let second = lane.admit();
    let (started, third_started) = mpsc::channel();
    let third_lane = lane.clone();
    let handle = thread::spawn(move || {
        let _running = third_lane.admit();
        started.send(()).unwrap();
    });
    assert!(
        third_started.recv_timeout(NOT_STARTED).is_err(),
        "a third one-thread batch started on two cores"
    );
    drop(first);
    third_started
        .recv_timeout(Duration::from_secs(10))
        .expect("it starts when a core is free");
    drop(second);
    handle.join().unwrap();
    assert!(idle(&scheduler.counts()), "every count back to 0");
}

#[test]
fn requests_that_leave_or_join_a_batch_stop_waiting() {
    let scheduler = Scheduler::new(4);
    let fast = scheduler.lane(1, 1);
    fast.waiting(5);
    let running = fast.admit();
    running.joined(3);
    fast.gone(1);
    drop(running);
    assert!(idle(&scheduler.counts()));
    assert!(
        scheduler.counts().may_start(2, 1, 4, Instant::now()),
        "nothing waits or runs, so a crowd a moment ago holds nothing back"
    );
}
