//! The model thread's batching, without ONNX Runtime.

use super::*;

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

/// An engine whose "model" returns each image's input value as its one class score.
fn echo(batches: &mut Vec<usize>) -> impl FnMut(&[f32], usize) -> Result<Vec<f32>, String> {
    move |input, n| {
        batches.push(n);
        Ok(input.to_vec())
    }
}

#[test]
fn queued_requests_run_as_one_batch_up_to_the_maximum() {
    let (tx, rx) = sync_channel(16);
    let mut replies = Vec::new();
    for n in [1, 2, 3, 1] {
        let (item, reply) = item(n);
        tx.send(item).unwrap();
        replies.push(reply);
    }
    drop(tx);
    let mut batches = Vec::new();
    serve(
        &rx,
        4,
        Duration::ZERO,
        &metrics::Histogram::noop(),
        echo(&mut batches),
    );
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
    serve(
        &rx,
        8,
        Duration::from_secs(2),
        &metrics::Histogram::noop(),
        echo(&mut batches),
    );
    assert_eq!(batches, [2]);
    assert!(first_reply.blocking_recv().unwrap().is_ok());
    assert!(sender.join().unwrap().blocking_recv().unwrap().is_ok());
}

#[test]
fn engine_failures_reach_every_request_of_the_batch() {
    let (tx, rx) = sync_channel(16);
    let (a, a_reply) = item(1);
    let (b, b_reply) = item(1);
    tx.send(a).unwrap();
    tx.send(b).unwrap();
    drop(tx);
    serve(
        &rx,
        8,
        Duration::ZERO,
        &metrics::Histogram::noop(),
        |_, _| Err("boom".into()),
    );
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
    let runner = ModelRunner::start_null(Arc::new(spec)).unwrap();
    // The thread has started once it has answered.
    runner.infer(vec![0.0; 12], 1).await.unwrap();
    assert_eq!(nice_of_thread("model-nicer"), Some(7));
    assert_eq!(
        rustix::process::getpriority_process(None).unwrap(),
        before,
        "the process's own niceness is unchanged"
    );
}
