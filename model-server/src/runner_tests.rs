//! The model thread's batching, without ONNX Runtime.

use super::*;
use crate::scheduler::Scheduler;

fn item(images: usize) -> (BatchItem, oneshot::Receiver<Result<Vec<f32>, ModelError>>) {
    let (reply, rx) = oneshot::channel();
    let input = vec![images as f32; images];
    (
        BatchItem {
            input,
            images,
            queued: Instant::now(),
            reply,
        },
        rx,
    )
}

/// Runs one instance's loop on `items` (all queued first) until the queue is empty and closed.
fn serve_all(
    items: Vec<BatchItem>,
    max_images: usize,
    max_delay: Duration,
    engine: impl FnMut(&[f32], usize) -> Result<Vec<f32>, String>,
) {
    let (tx, rx) = sync_channel(16);
    let lane = Scheduler::new(2).lane(1, 1);
    for item in items {
        lane.waiting(1);
        tx.send(item).unwrap();
    }
    drop(tx);
    let queue: SharedQueue = Arc::new(Mutex::new(rx));
    let batching = Batching {
        max_images,
        max_delay,
    };
    serve(&queue, &lane, batching, &metrics::Histogram::noop(), engine);
}

/// An engine whose "model" returns each image's input value as its one class score.
fn echo(batches: &mut Vec<usize>) -> impl FnMut(&[f32], usize) -> Result<Vec<f32>, String> {
    move |input, n| {
        batches.push(n);
        Ok(input.to_vec())
    }
}

#[test]
fn queued_requests_run_as_one_batch_up_to_the_maximum() {
    let (items, replies): (Vec<_>, Vec<_>) = [1, 2, 3, 1].into_iter().map(item).unzip();
    let mut batches = Vec::new();
    serve_all(items, 4, Duration::ZERO, echo(&mut batches));
    assert_eq!(batches, [3, 4], "1+2 fit in 4, 3 does not; then 3+1");
    let outputs: Vec<Vec<f32>> = replies
        .into_iter()
        .map(|r| r.blocking_recv().unwrap().unwrap())
        .collect();
    assert_eq!(outputs, [vec![1.0], vec![2.0; 2], vec![3.0; 3], vec![1.0]]);
}

#[test]
fn the_queue_delay_waits_for_more_requests() {
    let (tx, rx) = sync_channel(16);
    let (first, first_reply) = item(1);
    tx.send(first).unwrap();
    let sender = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(20));
        let (second, second_reply) = item(1);
        tx.send(second).unwrap();
        second_reply
    });
    let mut batches = Vec::new();
    let queue: SharedQueue = Arc::new(Mutex::new(rx));
    let batching = Batching {
        max_images: 8,
        max_delay: Duration::from_secs(2),
    };
    let lane = Scheduler::new(1).lane(1, 1);
    serve(
        &queue,
        &lane,
        batching,
        &metrics::Histogram::noop(),
        echo(&mut batches),
    );
    assert_eq!(batches, [2]);
    assert!(first_reply.blocking_recv().unwrap().is_ok());
    assert!(sender.join().unwrap().blocking_recv().unwrap().is_ok());
}

#[test]
fn engine_failures_reach_every_request_of_the_batch() {
    let (a, a_reply) = item(1);
    let (b, b_reply) = item(1);
    serve_all(vec![a, b], 8, Duration::ZERO, |_, _| Err("boom".into()));
    for reply in [a_reply, b_reply] {
        let err = reply.blocking_recv().unwrap().unwrap_err();
        assert!(matches!(err, ModelError::Internal(_)), "{err}");
    }
}

/// The niceness of this process's thread named `name`, from /proc.
fn nice_of_thread(name: &str) -> Option<i32> {
    for task in std::fs::read_dir("/proc/self/task").ok()?.flatten() {
        let comm = std::fs::read_to_string(task.path().join("comm")).unwrap_or_default();
        if comm.trim() == name {
            let tid = task.file_name().to_string_lossy().parse().ok()?;
            let pid = rustix::process::Pid::from_raw(tid)?;
            return rustix::process::getpriority_process(Some(pid)).ok();
        }
    }
    None
}

#[tokio::test]
async fn a_models_threads_get_its_niceness_and_nothing_else_does() {
    let root = tempfile::tempdir().unwrap();
    let spec = crate::registry::tests::null_model(root.path(), "nicer", "thread_nice = 7\n");
    assert_eq!(spec.thread_nice, 7);
    let before = rustix::process::getpriority_process(None).unwrap();
    let runner = ModelRunner::start_null(Arc::new(spec), &Scheduler::new(2)).unwrap();
    // The thread has started once it has answered.
    runner.infer(vec![0.0; 12], 1).await.unwrap();
    assert_eq!(nice_of_thread("model-nicer-0"), Some(7));
    assert_eq!(
        rustix::process::getpriority_process(None).unwrap(),
        before,
        "the process's own niceness is unchanged"
    );
}

#[test]
fn a_request_whose_caller_is_gone_is_not_run() {
    let (gone, gone_reply) = item(1);
    drop(gone_reply);
    let (kept, kept_reply) = item(2);
    let mut batches = Vec::new();
    serve_all(vec![gone, kept], 8, Duration::ZERO, echo(&mut batches));
    assert_eq!(batches, [2], "only the request still awaited ran");
    assert!(kept_reply.blocking_recv().unwrap().is_ok());
}

#[test]
fn instances_share_the_queue_and_run_batches_at_once() {
    use std::sync::atomic::{AtomicUsize, Ordering};

    let (tx, rx) = sync_channel(16);
    let scheduler = Scheduler::new(2);
    let lane = scheduler.lane(1, 1);
    let queue: SharedQueue = Arc::new(Mutex::new(rx));
    let (active, most) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let instances: Vec<_> = (0..2)
        .map(|_| {
            let (queue, lane) = (queue.clone(), lane.clone());
            let (active, most) = (active.clone(), most.clone());
            std::thread::spawn(move || {
                let batching = Batching {
                    max_images: 1,
                    max_delay: Duration::ZERO,
                };
                serve(
                    &queue,
                    &lane,
                    batching,
                    &metrics::Histogram::noop(),
                    |input, _| {
                        let now = active.fetch_add(1, Ordering::SeqCst) + 1;
                        most.fetch_max(now, Ordering::SeqCst);
                        // Hold the batch until the other instance runs one too (or give up).
                        let until = Instant::now() + Duration::from_secs(5);
                        while active.load(Ordering::SeqCst) < 2 && Instant::now() < until {
                            std::thread::yield_now();
                        }
                        active.fetch_sub(1, Ordering::SeqCst);
                        Ok(input.to_vec())
                    },
                );
            })
        })
        .collect();
    let replies: Vec<_> = (0..2)
        .map(|_| {
            let (item, reply) = item(1);
            lane.waiting(1);
            tx.send(item).unwrap();
            reply
        })
        .collect();
    for reply in replies {
        assert!(reply.blocking_recv().unwrap().is_ok());
    }
    drop(tx);
    for instance in instances {
        instance.join().unwrap();
    }
    assert_eq!(most.load(Ordering::SeqCst), 2, "both instances ran at once");
}
