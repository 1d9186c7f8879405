//! Durability: an accepted job is never lost and never gets two results, whatever fails
//! around it: a worker killed mid-run, the model server away, NATS restarted or unreachable,
//! an input the slow model refuses.

use std::time::Duration;

use async_nats::jetstream;
use futures::StreamExt as _;
use reqwest::StatusCode;
use serde_json::Value;
use tandem_core::{
    job::JobId,
    nats::{JOBS_BUCKET, JOBS_SUBJECT},
    slow_job::{ImageRef, SlowJob},
};

use crate::{
    slow_path::{FINAL, jetstream, no_workers, submit},
    support::{
        app::{AppOptions, spawn_app, spawn_app_with},
        eventually, photo,
        sse::SseStream,
    },
};

/// Every version a job's record has had, oldest first (the bucket keeps 10 revisions).
async fn history(js: &jetstream::Context, id: &str) -> Vec<Value> {
    let kv = js.get_key_value(JOBS_BUCKET).await.unwrap();
    let mut entries = kv.history(id).await.unwrap();
    let mut statuses = Vec::new();
    while let Some(entry) = tokio::time::timeout(Duration::from_secs(2), entries.next())
        .await
        .ok()
        .flatten()
    {
        let entry = entry.unwrap();
        statuses.push(serde_json::from_slice(&entry.value).unwrap());
        if entry.delta == 0 {
            break;
        }
    }
    statuses
}

/// The workers' consumer, as JetStream counts its messages now.
async fn worker_consumer(js: &jetstream::Context) -> jetstream::consumer::Info {
    crate::support::queue::worker_consumer(js)
        .await
        .expect("the workers' consumer answers")
}

#[tokio::test]
async fn nothing_is_lost_when_a_worker_is_killed_mid_run() {
    let app = spawn_app_with(AppOptions {
        workers: 0,
        env: vec![("TANDEM_WORKER_CONCURRENCY".into(), "2".into())],
        ..Default::default()
    })
    .await;
    let mut doomed = app.spawn_worker_process();
    let mut survivor = app.spawn_worker_process();

    let mut ids = Vec::new();
    for _ in 0..200 {
        ids.push(
            submit(&app, "chelsea.jpg").await["job_id"]
                .as_str()
                .unwrap()
                .to_owned(),
        );
    }
    // Kill one worker while jobs are being worked on.
    let js = jetstream(&app).await;
    let js = &js;
    eventually(FINAL, "the workers make progress", || async move {
        let left = crate::support::queue::stored_jobs(js)
            .await
            .expect("the jobs stream answers");
        if left <= 170 {
            Ok(())
        } else {
            Err(format!("{left} of 200 jobs left on the stream"))
        }
    })
    .await;
    doomed.kill();

    let mut succeeded = 0;
    for id in &ids {
        let job = app.wait_final(id, Duration::from_secs(120)).await;
        assert_eq!(job["status"], "succeeded", "{job}");
        assert_eq!(job["slow"]["label"], "Egyptian cat");
        // Every version that carries a slow result carries the same one: a redelivered job
        // never wrote a second, different result.
        let versions = history(js, id).await;
        let results: Vec<&Value> = versions
            .iter()
            .filter(|v| v["status"] == "succeeded")
            .map(|v| &v["slow"])
            .collect();
        assert!(!results.is_empty());
        let became_succeeded = versions
            .windows(2)
            .filter(|w| w[0]["status"] != "succeeded" && w[1]["status"] == "succeeded")
            .count();
        assert_eq!(became_succeeded, 1, "written once: {versions:?}");
        assert!(
            results.iter().all(|r| *r == results[0]),
            "one result per job: {versions:?}"
        );
        succeeded += 1;
    }
    assert_eq!(succeeded, 200);
    survivor.kill();
}

#[tokio::test]
async fn jobs_wait_and_retry_while_the_model_server_is_down() {
    let mut app = spawn_app_with(AppOptions {
        workers: 0,
        own_model_server: true,
        env: vec![("TANDEM_MAX_DELIVER".into(), "50".into())],
    })
    .await;
    let mut waiting = Vec::new();
    for _ in 0..3 {
        waiting.push(
            submit(&app, "coffee.jpg").await["job_id"]
                .as_str()
                .unwrap()
                .to_owned(),
        );
    }
    let addr = app.model_server.as_ref().unwrap().addr();
    app.model_server.take().unwrap().stop().await.unwrap();

    // A worker that has not yet seen the slow model ready takes no job: they wait, untouched.
    // Its readiness says when it has set up JetStream and gone on to wait for the model: the
    // point after which it would have fetched them.
    app.add_worker();
    let worker_ready = format!("{}/readyz", app.worker_ops.last().unwrap());
    let http = &app.http;
    eventually(
        FINAL,
        "the worker is set up and waits for the slow model",
        || async {
            let checks: Value = match http.get(&worker_ready).send().await {
                Ok(reply) => reply.json().await.map_err(|e| e.to_string())?,
                Err(e) => return Err(e.to_string()),
            };
            let waits = checks["checks"]["jetstream_ready"] == true
                && checks["checks"]["slow_model_ready"] == false;
            if waits {
                Ok(())
            } else {
                Err(checks.to_string())
            }
        },
    )
    .await;
    let js = jetstream(&app).await;
    let consumer = worker_consumer(&js).await;
    assert_eq!(consumer.num_pending, 3, "none delivered: {consumer:?}");
    assert_eq!(consumer.num_ack_pending, 0, "none running: {consumer:?}");
    assert_eq!(
        consumer.num_waiting, 0,
        "no fetch waits for them: {consumer:?}"
    );
    for id in &waiting {
        let (_, job) = app.job(id).await;
        assert_eq!(job["status"], "queued", "{job}");
        assert_eq!(job["attempts"], 0, "{job}");
    }
    app.model_server = Some(crate::support::model_server::spawn_model_server_at(addr).await);
    for id in &waiting {
        let job = app.wait_final(id, FINAL).await;
        assert_eq!(job["status"], "succeeded", "{job}");
        assert_eq!(job["attempts"], 1, "{job}");
    }

    // A running worker whose model server goes away retries its jobs with backoff.
    app.model_server.take().unwrap().stop().await.unwrap();
    let mut retried = Vec::new();
    for _ in 0..2 {
        // Straight onto the stream: the gateway's fast path needs the model server too.
        let id = JobId::new();
        let (headers, payload) = SlowJob {
            id,
            image: ImageRef::Inline(photo("coffee.jpg").into()),
            submitted_at: time::OffsetDateTime::now_utc(),
            traceparent: None,
            deadline_at: None,
            image_sha256: None,
        }
        .to_message();
        js.publish_with_headers(JOBS_SUBJECT, headers, payload)
            .await
            .unwrap()
            .await
            .unwrap();
        retried.push(id.to_string());
    }
    // Retried twice (three attempts), and neither given up nor done.
    let job = eventually(FINAL, "the job is retried twice", || async {
        let (_, job) = app.job(&retried[0]).await;
        if job["attempts"].as_u64().unwrap_or(0) >= 3 {
            Ok(job)
        } else {
            Err(job)
        }
    })
    .await;
    assert_ne!(job["status"], "succeeded");
    assert_ne!(job["status"], "failed", "{job}");
    assert!(job["error"].as_str().unwrap().contains("retrying"), "{job}");

    app.model_server = Some(crate::support::model_server::spawn_model_server_at(addr).await);
    for id in &retried {
        let job = app.wait_final(id, FINAL).await;
        assert_eq!(job["status"], "succeeded", "{job}");
        assert_eq!(job["slow"]["label"], "espresso");
        assert!(job["attempts"].as_u64().unwrap() > 1, "{job}");
        assert!(job.get("error").is_none(), "{job}");
    }
}

#[tokio::test]
async fn a_job_the_slow_model_rejects_fails_once_with_a_reason() {
    let app = spawn_app().await;
    let js = jetstream(&app).await;
    // Straight onto the stream, bypassing the gateway's checks.
    let id = JobId::new();
    let job = SlowJob {
        id,
        image: ImageRef::Inline(bytes::Bytes::from_static(b"GIF89a but not really an image")),
        submitted_at: time::OffsetDateTime::now_utc(),
        traceparent: None,
        deadline_at: None,
        image_sha256: None,
    };
    let (headers, payload) = job.to_message();
    js.publish_with_headers(JOBS_SUBJECT, headers, payload)
        .await
        .unwrap()
        .await
        .unwrap();

    let record = app.wait_final(&id.to_string(), FINAL).await;
    assert_eq!(record["status"], "failed", "{record}");
    assert!(
        record["error"].as_str().unwrap().contains("image 0"),
        "the reason names the problem: {record}"
    );
    assert_eq!(record["attempts"], 1, "not retried: {record}");
    // The message is gone: nothing pending or waiting for an ack (the record is written before
    // the message is terminated, so that may take a moment).
    let js = &js;
    let info = eventually(FINAL, "the message is terminated", || async move {
        let info = worker_consumer(js).await;
        if info.num_pending == 0 && info.num_ack_pending == 0 {
            Ok(info)
        } else {
            Err(format!("{info:?}"))
        }
    })
    .await;
    assert_eq!(info.num_pending, 0);
    assert_eq!(info.num_ack_pending, 0);
}

#[tokio::test]
async fn queued_jobs_survive_a_nats_restart_and_everyone_reconnects() {
    let mut app = spawn_app_with(no_workers()).await;
    let mut ids = Vec::new();
    for _ in 0..10 {
        ids.push(
            submit(&app, "chelsea.jpg").await["job_id"]
                .as_str()
                .unwrap()
                .to_owned(),
        );
    }
    let watched = ids[0].clone();
    let mut events =
        SseStream::open(&app.http, &app.url(&format!("/job/{watched}/events")), None).await;
    let first = events.next_event(Duration::from_secs(5)).await.unwrap();
    assert_eq!(first.event, "queued");

    app.nats.restart();
    app.add_worker();
    for id in &ids {
        let job = app.wait_final(id, FINAL).await;
        assert_eq!(job["status"], "succeeded", "{job}");
    }
    // The SSE stream opened before the restart still delivers the result.
    let rest = events.collect(FINAL).await;
    assert_eq!(
        rest.last().map(|e| e.event.as_str()),
        Some("succeeded"),
        "{rest:?}"
    );
    // And the gateway accepts new jobs after reconnecting.
    app.wait_ready().await;
    let reply = submit(&app, "coffee.jpg").await;
    let job = app
        .wait_final(reply["job_id"].as_str().unwrap(), FINAL)
        .await;
    assert_eq!(job["slow"]["label"], "espresso");
}

#[tokio::test]
async fn without_nats_predict_says_503_with_the_fast_label_and_readiness_drops() {
    let mut app = spawn_app_with(AppOptions {
        workers: 0,
        env: vec![("TANDEM_PUBLISH_TIMEOUT_MS".into(), "1000".into())],
        ..Default::default()
    })
    .await;
    app.nats.stop();

    let response = app.predict_raw(photo("chelsea.jpg"), "image/jpeg").await;
    assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert!(response.headers().contains_key("retry-after"));
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["error"]["code"], "queue_unavailable", "{body}");
    // No job was accepted, but the fast answer is still given.
    assert!(body.get("job_id").is_none());
    assert_eq!(body["efficientnet_lite0"], "Egyptian cat");

    let ready = app.http.get(app.url("/readyz")).send().await.unwrap();
    assert_eq!(ready.status(), StatusCode::SERVICE_UNAVAILABLE);
    let checks: Value = ready.json().await.unwrap();
    assert_eq!(checks["checks"]["nats_connected"], false, "{checks}");

    app.nats.restart();
    app.wait_ready().await;
    let response = app.predict_raw(photo("chelsea.jpg"), "image/jpeg").await;
    assert_eq!(response.status(), StatusCode::OK);
}
