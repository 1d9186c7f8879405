use std::{sync::mpsc, thread, time::Duration};

use super::*;

/// Long enough for a thread that could start to have started.
const NOT_STARTED: Duration = Duration::from_millis(200);

#[test]
fn a_lower_priority_batch_waits_while_a_higher_one_waits_or_runs() {
    let mut counts = Counts::default();
    assert!(counts.may_start(2, 1, 2), "nothing else: it starts");
    counts.waiting[0] = 1;
    assert!(!counts.may_start(2, 1, 2), "a fast request waits");
    assert!(counts.may_start(1, 1, 2), "the fast one itself may");
    counts.waiting[0] = 0;
    counts.running[0] = 1;
    counts.threads = 1;
    assert!(!counts.may_start(2, 1, 2), "a fast batch runs");
    assert!(counts.may_start(1, 1, 2), "a second fast instance fits");
    assert!(!counts.may_start(1, 2, 2), "two more threads do not fit");
    counts.running[0] = 0;
    counts.running[2] = 1;
    assert!(
        counts.may_start(2, 1, 2),
        "a less urgent batch does not hold back a more urgent one"
    );
}

#[test]
fn a_model_wider_than_the_machine_runs_alone() {
    let mut counts = Counts::default();
    assert!(counts.may_start(1, 8, 2));
    counts.threads = 1;
    counts.running[1] = 1;
    assert!(
        !counts.may_start(1, 8, 2),
        "it waits for the cores to be free"
    );
}

#[test]
fn a_slow_batch_starts_once_the_fast_request_has_run() {
    let scheduler = Scheduler::new(2);
    let fast = scheduler.lane(1, 1);
    let slow = scheduler.lane(2, 1);
    fast.waiting(1);
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
    assert_eq!(
        *scheduler.counts(),
        Counts::default(),
        "every count back to 0"
    );
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
    assert_eq!(*scheduler.counts(), Counts::default());
    assert!(scheduler.counts().may_start(2, 1, 4));
}
