//! Cases (a), (b), (c): one process of the service dies under load and comes back (or is
//! replaced): a slow-worker, nats-server, the model server.

use std::time::{Duration, Instant};

use futures::StreamExt as _;
use tandem_core::nats::JOBS_BUCKET;

use crate::{
    LABEL, PHOTO, RATE, SERIAL, ack_pending, jetstream_on,
    load::Load,
    stop_and_tally,
    support::{
        app::{AppOptions, spawn_app_with},
        model_server::spawn_model_server_at,
        photo,
    },
    tally::tally,
    wait_more_accepted,
};

fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
}

/// (a) A slow-worker process is SIGKILLed while it holds jobs; its jobs are redelivered (after
/// `TANDEM_ACK_WAIT_MS`, 2 s here) to the worker that replaces it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_worker_sigkilled_mid_inference() {
    let _serial = SERIAL.lock().await;
    let started = Instant::now();
    let mut app = spawn_app_with(AppOptions {
        workers: 0,
        env: env(&[("TANDEM_WORKER_CONCURRENCY", "2")]),
        ..Default::default()
    })
    .await;
    let js = jetstream_on(&app.nats.url()).await;
    let load = Load::start("a", &app.base, photo(PHOTO), RATE);
    // A backlog first, so that the doomed worker is busy from its first moment.
    load.wait_accepted(15, Duration::from_secs(30)).await;
    // Only the doomed worker runs jobs: the first record marked `running` is in its hands,
    // between the mark and the result, that is in the model call.
    let kv = js.get_key_value(JOBS_BUCKET).await.unwrap();
    let mut changes = kv.watch_all().await.unwrap();
    let mut doomed = app.spawn_worker_process();
    loop {
        let entry = tokio::time::timeout(Duration::from_secs(60), changes.next())
            .await
            .expect("the worker started no job")
            .unwrap()
            .unwrap();
        let record: serde_json::Value = serde_json::from_slice(&entry.value).unwrap_or_default();
        if record["status"] == "running" {
            break;
        }
    }
    doomed.kill();
    let in_flight = ack_pending(&js).await.unwrap_or_default();
    app.add_worker();
    wait_more_accepted(&load, 30).await;
    let submissions = load.stop().await;

    let tally = tally(
        "(a) slow-worker SIGKILLed",
        started,
        &app,
        &js,
        &submissions,
        LABEL,
    )
    .await;
    tally.report_and_check(&format!(
        "killed holding {in_flight} jobs; replaced by a new worker"
    ));
    assert!(
        tally.redelivered >= 1,
        "the killed worker's jobs were redelivered: {tally:?}"
    );
}

/// (b) nats-server is SIGKILLed and, 6 s later, started again on the same store: queued
/// jobs and records survive; the gateway answers 503 meanwhile (the client retries), the
/// gateway and the worker reconnect by themselves.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn b_nats_server_restarted() {
    let _serial = SERIAL.lock().await;
    let started = Instant::now();
    let mut app = spawn_app_with(AppOptions {
        workers: 1,
        env: env(&[("TANDEM_WORKER_CONCURRENCY", "2")]),
        ..Default::default()
    })
    .await;
    let load = Load::start("b", &app.base, photo(PHOTO), RATE);
    load.wait_accepted(20, Duration::from_secs(30)).await;
    app.nats.stop();
    // Longer than the gateway's publish deadline (TANDEM_PUBLISH_TIMEOUT_MS, 5 s): some
    // submissions are answered 503 and retried with their Idempotency-Key.
    tokio::time::sleep(Duration::from_secs(6)).await;
    app.nats.restart();
    let tally = stop_and_tally(
        "(b) nats-server restarted",
        started,
        &app,
        load,
        &app.nats.url(),
    )
    .await;
    tally.report_and_check("SIGKILL, down 6 s, started again on its store");
}

/// (c) The model server stops and starts again on its port: the fast path answers 503 while it
/// is away (the client retries), and the workers retry their jobs with backoff.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn c_model_server_restarted() {
    let _serial = SERIAL.lock().await;
    let started = Instant::now();
    let mut app = spawn_app_with(AppOptions {
        workers: 1,
        own_model_server: true,
        // The test's retry delays are short (200 ms doubling to 1 s): 50 deliveries give an
        // outage budget like the defaults' 8 deliveries with 1 s doubling to 30 s.
        env: env(&[
            ("TANDEM_WORKER_CONCURRENCY", "2"),
            ("TANDEM_MAX_DELIVER", "50"),
        ]),
    })
    .await;
    let load = Load::start("c", &app.base, photo(PHOTO), RATE);
    load.wait_accepted(20, Duration::from_secs(30)).await;
    let addr = app.model_server.as_ref().unwrap().addr();
    app.model_server.take().unwrap().stop().await.unwrap();
    let down = Instant::now();
    tokio::time::sleep(Duration::from_secs(1)).await;
    app.model_server = Some(spawn_model_server_at(addr).await);
    let outage = down.elapsed().as_secs_f64();
    let tally = stop_and_tally(
        "(c) model server restarted",
        started,
        &app,
        load,
        &app.nats.url(),
    )
    .await;
    tally.report_and_check(&format!(
        "down {outage:.1} s (1 s, then loading the models)"
    ));
}

/// What case (c) found: a submission whose fast answer failed (model server away) but whose job
/// was stored, retried with the same `Idempotency-Key`, must get that job, and the job must run
/// (it used to be withdrawn, and the retry handed a job that never ran).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retry_after_the_fast_model_failed_gets_the_same_job_and_it_runs() {
    let _serial = SERIAL.lock().await;
    let mut app = spawn_app_with(AppOptions {
        workers: 1,
        own_model_server: true,
        env: env(&[("TANDEM_MAX_DELIVER", "50")]),
    })
    .await;
    let addr = app.model_server.as_ref().unwrap().addr();
    app.model_server.take().unwrap().stop().await.unwrap();
    let (http, url) = (app.http.clone(), app.url("/predict"));
    let attempt = || {
        http.post(&url)
            .header("content-type", "image/jpeg")
            .header("idempotency-key", "retried-after-a-fast-failure")
            .body(photo(PHOTO))
            .send()
    };
    let first = attempt().await.unwrap();
    assert!(first.status().is_server_error(), "{}", first.status());

    app.model_server = Some(spawn_model_server_at(addr).await);
    let second: serde_json::Value = attempt().await.unwrap().json().await.unwrap();
    let id = second["job_id"].as_str().expect("the retry is accepted");
    let job = app.wait_final(id, Duration::from_secs(60)).await;
    assert_eq!(job["status"], "succeeded", "{job}");
    assert_eq!(job["slow"]["label"], LABEL);
    let third: serde_json::Value = attempt().await.unwrap().json().await.unwrap();
    assert_eq!(third["job_id"], id, "one job for one key");
}
