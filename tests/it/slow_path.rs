//! The slow path: every accepted request becomes a durable job; a slow-worker runs the slow
//! model and the result reaches the client over `GET /job/<id>` and Server-Sent Events.
//! (What happens when parts fail is in `durability`.)

use std::time::Duration;

use async_nats::jetstream;
use reqwest::StatusCode;
use serde_json::Value;
use tandem_core::{
    job::JobId,
    nats::{JOBS_BUCKET, JOBS_STREAM},
};

use crate::support::{
    app::{AppOptions, TestApp, spawn_app, spawn_app_with},
    photo,
    sse::SseStream,
};

pub const FINAL: Duration = Duration::from_secs(60);

pub async fn submit(app: &TestApp, file: &str) -> Value {
    let response = app.predict_raw(photo(file), "image/jpeg").await;
    assert_eq!(response.status(), StatusCode::OK);
    response.json().await.unwrap()
}

pub fn no_workers() -> AppOptions {
    AppOptions {
        workers: 0,
        ..Default::default()
    }
}

pub async fn jetstream(app: &TestApp) -> jetstream::Context {
    jetstream::new(async_nats::connect(app.nats.url()).await.unwrap())
}

#[tokio::test]
async fn chelsea_gets_the_fast_label_now_and_the_slow_label_over_sse() {
    let app = spawn_app().await;
    let reply = submit(&app, "chelsea.jpg").await;
    assert_eq!(reply["efficientnet_lite0"], "Egyptian cat");
    let id = reply["job_id"].as_str().unwrap();
    assert_eq!(reply["job_url"], format!("/job/{id}"));
    assert_eq!(reply["events_url"], format!("/job/{id}/events"));

    let mut events = SseStream::open(&app.http, &app.url(&format!("/job/{id}/events")), None).await;
    assert_eq!(events.status, StatusCode::OK);
    let received = events.collect(FINAL).await;
    let last = received.last().expect("at least one event");
    assert_eq!(last.event, "succeeded", "{received:?}");
    let record = last.json();
    assert_eq!(record["slow"]["label"], "Egyptian cat");
    assert_eq!(record["slow"]["model"], "efficientnet_lite2");
    assert_eq!(record["fast"]["label"], "Egyptian cat");
    // Event ids are increasing revisions.
    let ids: Vec<u64> = received
        .iter()
        .map(|e| e.id.as_deref().unwrap().parse().unwrap())
        .collect();
    assert!(ids.windows(2).all(|w| w[0] < w[1]), "{ids:?}");

    let (status, job) = app.job(id).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(job["status"], "succeeded");
    assert_eq!(job["slow"]["label"], "Egyptian cat");
    assert_eq!(job["attempts"], 1);
    assert!(job["finished_at"].is_string());
}

#[tokio::test]
async fn the_original_clients_post_then_poll_works() {
    let app = spawn_app().await;
    let response = app.predict_json(&photo("chelsea.jpg")).await;
    assert_eq!(response.status(), StatusCode::OK);
    let reply: Value = response.json().await.unwrap();
    let id = reply["job_id"].as_str().unwrap().to_owned();
    assert_eq!(reply["efficientnet_lite0"], "Egyptian cat");
    // The original client polls `GET /job/<id>` and reads `response[id]["prediction"]`,
    // empty until the slow answer exists.
    let started = std::time::Instant::now();
    loop {
        let (status, body) = app.job(&id).await;
        assert_eq!(status, StatusCode::OK);
        let prediction = body[&id]["prediction"].as_str().unwrap();
        if !prediction.is_empty() {
            assert_eq!(prediction, "Egyptian cat");
            break;
        }
        assert!(started.elapsed() < FINAL, "no slow prediction: {body}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn an_idempotency_key_sent_twice_gives_one_job() {
    let app = spawn_app().await;
    let send = || {
        app.http
            .post(app.url("/predict"))
            .header("content-type", "image/jpeg")
            .header("idempotency-key", "order-42-photo-1")
            .body(photo("chelsea.jpg"))
            .send()
    };
    let first: Value = send().await.unwrap().json().await.unwrap();
    let second: Value = send().await.unwrap().json().await.unwrap();
    assert_eq!(first["job_id"], second["job_id"]);
    assert_eq!(second["efficientnet_lite0"], "Egyptian cat");
    let js = jetstream(&app).await;
    app.wait_final(first["job_id"].as_str().unwrap(), FINAL)
        .await;
    let stream = js.get_stream(JOBS_STREAM).await.unwrap();
    // One message was ever stored on the stream.
    assert_eq!(stream.cached_info().state.last_sequence, 1);
}

#[tokio::test]
async fn a_full_queue_gives_429_with_retry_after_and_still_the_fast_label() {
    let app = spawn_app_with(AppOptions {
        workers: 0,
        env: vec![("TANDEM_QUEUE_MAX_JOBS".into(), "2".into())],
        ..Default::default()
    })
    .await;
    submit(&app, "chelsea.jpg").await;
    submit(&app, "chelsea.jpg").await;
    let response = app.predict_raw(photo("chelsea.jpg"), "image/jpeg").await;
    assert_eq!(response.status(), StatusCode::TOO_MANY_REQUESTS);
    assert!(response.headers().contains_key("retry-after"));
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["error"]["code"], "queue_full");
    assert_eq!(body["efficientnet_lite0"], "Egyptian cat");
    assert!(body.get("job_id").is_none());
}

#[tokio::test]
async fn unknown_and_malformed_job_ids_get_404() {
    let app = spawn_app().await;
    for id in [
        JobId::new().to_string(),
        "abc123".to_owned(),
        "..%2F..%2Fetc%2Fpasswd".to_owned(),
        "x".repeat(5000),
    ] {
        let (status, body) = app.job(&id).await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{id}");
        assert_eq!(body["error"]["code"], "job_not_found");
        let events = app
            .http
            .get(app.url(&format!("/job/{id}/events")))
            .send()
            .await
            .unwrap();
        assert_eq!(events.status(), StatusCode::NOT_FOUND);
    }
}

#[tokio::test]
async fn a_job_cancelled_in_time_is_skipped_and_one_cancelled_too_late_says_so() {
    let mut app = spawn_app_with(no_workers()).await;
    let early = submit(&app, "chelsea.jpg").await["job_id"]
        .as_str()
        .unwrap()
        .to_owned();
    let response = app
        .http
        .delete(app.url(&format!("/job/{early}")))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["cancelled"], true);

    app.add_worker();
    let late = submit(&app, "coffee.jpg").await["job_id"]
        .as_str()
        .unwrap()
        .to_owned();
    let done = app.wait_final(&late, FINAL).await;
    assert_eq!(done["status"], "succeeded");
    let response = app
        .http
        .delete(app.url(&format!("/job/{late}")))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::CONFLICT);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["error"]["code"], "too_late");
    assert_eq!(body["cancelled"], false);
    assert_eq!(body["status"], "succeeded");

    // The worker reached the cancelled job first (FIFO) and skipped it.
    let (_, cancelled) = app.job(&early).await;
    assert_eq!(cancelled["status"], "cancelled");
    assert_eq!(cancelled["attempts"], 0, "{cancelled}");
    assert!(cancelled.get("slow").is_none());
}

#[tokio::test]
async fn an_sse_stream_opened_after_completion_gets_the_result_and_a_resume_repeats_nothing() {
    let mut app = spawn_app_with(AppOptions {
        workers: 0,
        env: vec![("TANDEM_SSE_KEEPALIVE_SECS".into(), "1".into())],
        ..Default::default()
    })
    .await;
    let id = submit(&app, "chelsea.jpg").await["job_id"]
        .as_str()
        .unwrap()
        .to_owned();
    let url = app.url(&format!("/job/{id}/events"));

    // While queued: the current state at once, then keep-alive comments.
    let mut first = SseStream::open(&app.http, &url, None).await;
    let queued = first.next_event(Duration::from_secs(5)).await.unwrap();
    assert_eq!(queued.event, "queued");
    assert!(
        first
            .next_event(Duration::from_millis(2500))
            .await
            .is_none()
    );
    assert!(first.comments >= 1, "keep-alive comments are sent");
    drop(first);

    app.add_worker();
    app.wait_final(&id, FINAL).await;

    // Resuming after the queued event: only newer events, ending with the result.
    let mut resumed = SseStream::open(&app.http, &url, queued.id.as_deref()).await;
    let events = resumed.collect(Duration::from_secs(5)).await;
    let queued_id: u64 = queued.id.unwrap().parse().unwrap();
    assert!(!events.is_empty());
    assert!(
        events
            .iter()
            .all(|e| e.id.as_deref().unwrap().parse::<u64>().unwrap() > queued_id)
    );
    let last = events.last().unwrap();
    assert_eq!(last.event, "succeeded");

    // Opened after completion: the result at once, then the stream ends.
    let mut late = SseStream::open(&app.http, &url, None).await;
    let events = late.collect(Duration::from_secs(5)).await;
    assert_eq!(events.len(), 1);
    assert_eq!(events[0].json()["slow"]["label"], "Egyptian cat");

    // Resuming with the last id seen: nothing repeated, and the stream ends.
    let mut again = SseStream::open(&app.http, &url, last.id.as_deref()).await;
    assert!(again.collect(Duration::from_secs(5)).await.is_empty());
}

#[tokio::test]
async fn many_sse_streams_share_one_watcher_on_the_bucket() {
    let app = spawn_app_with(no_workers()).await;
    let mut streams = Vec::new();
    for _ in 0..20 {
        let id = submit(&app, "coffee.jpg").await["job_id"]
            .as_str()
            .unwrap()
            .to_owned();
        let mut stream =
            SseStream::open(&app.http, &app.url(&format!("/job/{id}/events")), None).await;
        assert_eq!(
            stream
                .next_event(Duration::from_secs(5))
                .await
                .unwrap()
                .event,
            "queued"
        );
        streams.push(stream);
    }
    let js = jetstream(&app).await;
    let mut bucket_stream = js.get_stream(format!("KV_{JOBS_BUCKET}")).await.unwrap();
    let consumers = bucket_stream.info().await.unwrap().state.consumer_count;
    assert_eq!(consumers, 1, "one watcher for 20 open streams");
}

#[tokio::test]
async fn an_image_bigger_than_a_nats_message_goes_through_the_object_store() {
    let mut app = spawn_app_with(no_workers()).await;
    // A 1200x1000 noisy PNG (~3.6 MB): over NATS's 1 MB max payload.
    let mut seed = 0x2545_f491_u32;
    let pixels = image::RgbImage::from_fn(1200, 1000, |_, _| {
        seed ^= seed << 13;
        seed ^= seed >> 17;
        seed ^= seed << 5;
        let [r, g, b, _] = seed.to_le_bytes();
        image::Rgb([r, g, b])
    });
    let mut png = Vec::new();
    pixels
        .write_to(&mut std::io::Cursor::new(&mut png), image::ImageFormat::Png)
        .unwrap();
    assert!(png.len() > 2 * 1024 * 1024);
    let response = app.predict_raw(png.clone(), "image/png").await;
    assert_eq!(response.status(), StatusCode::OK);
    let reply: Value = response.json().await.unwrap();
    let id = reply["job_id"].as_str().unwrap();
    // Stored in chunks as large as a message may be (1 MB), not the object store's 128 KiB.
    let js = jetstream(&app).await;
    let images = js.get_object_store("tandem_images").await.unwrap();
    let stored = images.info(id).await.unwrap();
    assert_eq!(stored.size, png.len());
    assert_eq!(stored.chunks, png.len().div_ceil(1024 * 1024), "{stored:?}");
    app.add_worker();
    let job = app.wait_final(id, FINAL).await;
    assert_eq!(job["status"], "succeeded", "{job}");
    assert!(job["slow"]["label"].is_string());
    // The image is removed from the object store once the job is done.
    assert!(images.get(id).await.is_err());
}

#[tokio::test]
async fn a_change_from_an_outdated_version_rereads_and_keeps_the_other_writers_change() {
    let app = spawn_app_with(no_workers()).await;
    let reply = submit(&app, "chelsea.jpg").await;
    let id: tandem_core::job::JobId = reply["job_id"].as_str().unwrap().parse().unwrap();
    let kv = jetstream(&app)
        .await
        .get_key_value(tandem_core::nats::JOBS_BUCKET)
        .await
        .unwrap();
    let store = tandem_core::store::JobStore::new(kv);
    let outdated = store.get(id).await.unwrap().unwrap();
    assert_eq!(
        outdated.record.fast.as_ref().map(|f| f.label.as_str()),
        Some("Egyptian cat"),
        "the reply left once the fast answer was stored"
    );
    // Another writer changes the record after `outdated` was read.
    let other = store
        .update(id, |r| {
            r.error = Some("another writer".into());
            true
        })
        .await
        .unwrap()
        .unwrap();
    assert!(other.revision > outdated.revision);

    let stored = store
        .update_from(id, Some(outdated), |r| {
            r.attempts = 7;
            true
        })
        .await
        .unwrap()
        .unwrap();
    assert!(stored.revision > other.revision);
    let now = store.get(id).await.unwrap().unwrap();
    assert_eq!(now.revision, stored.revision);
    assert_eq!(now.record.attempts, 7);
    assert_eq!(now.record.error.as_deref(), Some("another writer"));
    assert_eq!(now.record.fast, stored.record.fast);
}

/// The worker marks a job `running` with `update_or_create`: when there is no record it makes
/// one, and when another writer (the gateway's create, sent beside the job) makes the record
/// between the worker's read and its create, the worker's change is applied to that record
/// instead of being lost (the job then runs marked `running`, its attempt counted).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_record_created_by_another_writer_mid_way_still_gets_the_change() {
    use tandem_core::{
        job::{JobRecord, JobStatus},
        nats as contract,
        store::JobStore,
    };
    let nats = crate::support::nats::NatsServer::start();
    let client = async_nats::connect(nats.url()).await.unwrap();
    let js = async_nats::jetstream::new(client);
    let settings = contract::NatsSettings::with_url(nats.url());
    let store = JobStore::new(contract::ensure_jobs_bucket(&js, &settings).await.unwrap());
    let mark_running = |r: &mut JobRecord| {
        let runs = r.advance(JobStatus::Running);
        if runs {
            r.attempts += 1;
        }
        runs
    };

    // No record at all: one is made, with the change.
    let id = JobId::new();
    let now = time::OffsetDateTime::now_utc();
    let made = store
        .update_or_create(id, || JobRecord::queued(id, now), mark_running)
        .await
        .unwrap();
    assert_eq!(
        (made.record.status, made.record.attempts),
        (JobStatus::Running, 1)
    );

    // The record appears after the update found none and before the create.
    let id = JobId::new();
    let other = store.clone();
    let fresh_calls = std::sync::atomic::AtomicU32::new(0);
    let stored = store
        .update_or_create(
            id,
            || {
                fresh_calls.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                let mut theirs = JobRecord::queued(id, now);
                theirs.error = Some("written by the other writer".into());
                tokio::task::block_in_place(|| {
                    tokio::runtime::Handle::current()
                        .block_on(other.create(&theirs))
                        .unwrap()
                        .expect("the other writer's record is new");
                });
                JobRecord::queued(id, now)
            },
            mark_running,
        )
        .await
        .unwrap();
    assert_eq!(fresh_calls.load(std::sync::atomic::Ordering::SeqCst), 1);
    assert_eq!(
        stored.record.status,
        JobStatus::Running,
        "{:?}",
        stored.record
    );
    assert_eq!(stored.record.attempts, 1);
    assert_eq!(
        stored.record.error.as_deref(),
        Some("written by the other writer"),
        "the other writer's record was updated, not replaced"
    );
    let read = store.get(id).await.unwrap().unwrap();
    assert_eq!(read, stored);
}
