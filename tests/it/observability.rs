//! Observability: Prometheus `/metrics` on the gateway and on each worker's and the model
//! server's ops listener, with series that move as requests and jobs go through; the worker's
//! `/readyz` follows its dependencies.
//!
//! Tests share one process (and so one metrics recorder) and run concurrently: counters are
//! compared as "grew by at least", never exactly.

use std::time::{Duration, Instant};

use reqwest::StatusCode;
use serde_json::Value;
use tandem_core::nats as contract;

use crate::support::{
    app::{AppOptions, TestApp, spawn_app, spawn_app_with},
    photo,
    sse::SseStream,
};

/// The sum of every sample of `name` whose labels include all of `labels` (Prometheus text).
fn sample(text: &str, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    let mut found = None;
    for line in text.lines() {
        if line.starts_with('#') {
            continue;
        }
        let Some((series, value)) = line.rsplit_once(' ') else {
            continue;
        };
        let (series_name, series_labels) = match series.split_once('{') {
            Some((n, rest)) => (n, rest.trim_end_matches('}')),
            None => (series, ""),
        };
        if series_name != name {
            continue;
        }
        let has_all = labels
            .iter()
            .all(|(k, v)| series_labels.contains(&format!("{k}=\"{v}\"")));
        if has_all {
            *found.get_or_insert(0.0) += value.parse::<f64>().unwrap();
        }
    }
    found
}

async fn scrape(app: &TestApp, url: &str) -> String {
    let response = app.http.get(url).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let content_type = response.headers()["content-type"]
        .to_str()
        .unwrap()
        .to_owned();
    assert!(content_type.starts_with("text/plain"), "{content_type}");
    response.text().await.unwrap()
}

/// Asserts `name{labels}` grew by at least `by` between two scrapes.
fn grew(before: &str, after: &str, name: &str, labels: &[(&str, &str)], by: f64) {
    let old = sample(before, name, labels).unwrap_or(0.0);
    let new = sample(after, name, labels)
        .unwrap_or_else(|| panic!("{name} {labels:?} missing from /metrics:\n{after}"));
    assert!(
        new >= old + by,
        "{name} {labels:?}: {old} -> {new}, expected +{by}"
    );
}

#[tokio::test]
async fn metrics_follow_a_request_through_the_fast_and_slow_paths() {
    let app = spawn_app().await;
    let before = scrape(&app, &app.url("/metrics")).await;

    let response = app.predict_raw(photo("chelsea.jpg"), "image/jpeg").await;
    assert_eq!(response.status(), StatusCode::OK);
    let reply: Value = response.json().await.unwrap();
    let id = reply["job_id"].as_str().unwrap().to_owned();
    let record = app.wait_final(&id, Duration::from_secs(60)).await;
    assert_eq!(record["status"], "succeeded", "{record}");
    let missing = app
        .http
        .get(app.url("/no/such/route"))
        .send()
        .await
        .unwrap();
    assert_eq!(missing.status(), StatusCode::NOT_FOUND);

    // The worker counts a job just after it stores the result, and the queue gauges are read
    // from JetStream at scrape time (within 1 s): scrape until both have caught up.
    let started = std::time::Instant::now();
    let after = loop {
        let text = scrape(&app, &app.url("/metrics")).await;
        let counted = sample(
            &text,
            "tandem_worker_jobs_total",
            &[("outcome", "succeeded")],
        )
        .unwrap_or(0.0)
            > sample(
                &before,
                "tandem_worker_jobs_total",
                &[("outcome", "succeeded")],
            )
            .unwrap_or(0.0);
        let gauges = sample(&text, "tandem_queue_consumer_ack_pending", &[]).is_some();
        if (counted && gauges) || started.elapsed() > Duration::from_secs(10) {
            break text;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let predict = [("method", "POST"), ("route", "/predict"), ("status", "200")];
    grew(&before, &after, "tandem_http_requests_total", &predict, 1.0);
    grew(
        &before,
        &after,
        "tandem_http_request_duration_seconds_count",
        &predict,
        1.0,
    );
    // Routes are the matched pattern, never the raw path with its id.
    grew(
        &before,
        &after,
        "tandem_http_requests_total",
        &[("route", "/job/{id}"), ("status", "200")],
        1.0,
    );
    grew(
        &before,
        &after,
        "tandem_http_requests_total",
        &[("route", "unmatched"), ("status", "404")],
        1.0,
    );
    assert!(!after.contains(&id), "a job id leaked into a label");

    grew(
        &before,
        &after,
        "tandem_worker_jobs_total",
        &[("outcome", "succeeded")],
        1.0,
    );
    grew(
        &before,
        &after,
        "tandem_worker_job_latency_seconds_count",
        &[],
        1.0,
    );
    // Chelsea is an Egyptian cat to both models.
    grew(
        &before,
        &after,
        "tandem_fast_slow_agreement_total",
        &[("agree", "true")],
        1.0,
    );
    for model in ["efficientnet_lite0", "efficientnet_lite2"] {
        for histogram in [
            "tandem_model_inference_duration_seconds_count",
            "tandem_model_batch_size_count",
            "tandem_model_preprocess_duration_seconds_count",
            "tandem_model_queue_duration_seconds_count",
        ] {
            grew(&before, &after, histogram, &[("model", model)], 1.0);
        }
    }
    // The slow model's request found the image the fast one had decoded (or the reverse).
    grew(
        &before,
        &after,
        "tandem_model_decode_cache_hits_total",
        &[],
        1.0,
    );
    // Queue gauges are read from JetStream at scrape time.
    for gauge in [
        "tandem_queue_messages",
        "tandem_queue_consumer_pending",
        "tandem_queue_consumer_ack_pending",
    ] {
        assert!(sample(&after, gauge, &[]).is_some(), "{gauge} missing");
    }

    // The worker's ops listener serves the same exposition, and says it is alive.
    let worker = &app.worker_ops[0];
    let worker_metrics = scrape(&app, &format!("{worker}/metrics")).await;
    assert!(sample(&worker_metrics, "tandem_worker_jobs_total", &[]).is_some());
    let health = app
        .http
        .get(format!("{worker}/healthz"))
        .send()
        .await
        .unwrap();
    assert_eq!(health.status(), StatusCode::OK);
}

#[tokio::test]
async fn queue_depth_and_open_streams_show_waiting_work() {
    let app = spawn_app_with(AppOptions {
        workers: 0,
        ..Default::default()
    })
    .await;
    let response = app.predict_raw(photo("chelsea.jpg"), "image/jpeg").await;
    assert_eq!(response.status(), StatusCode::OK);
    let reply: Value = response.json().await.unwrap();
    let id = reply["job_id"].as_str().unwrap();

    let events = SseStream::open(&app.http, &app.url(&format!("/job/{id}/events")), None).await;
    assert_eq!(events.status, StatusCode::OK);
    // This test's own nats-server: exactly its one job waits (no worker, so no consumer: the
    // consumer gauges are only set once a worker made it). The gauges are the
    // process's, and other tests' gateways set them too when scraped: retry a few times.
    let started = Instant::now();
    let text = loop {
        let text = scrape(&app, &app.url("/metrics")).await;
        let depth = sample(&text, "tandem_queue_messages", &[]);
        if depth == Some(1.0) {
            break text;
        }
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "queue depth {depth:?}, want 1"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert!(sample(&text, "tandem_sse_open_streams", &[]).unwrap_or(0.0) >= 1.0);
    drop(events);
}

async fn wait_status(app: &TestApp, url: &str, want: StatusCode) -> Value {
    let started = Instant::now();
    loop {
        if let Ok(response) = app.http.get(url).send().await {
            let status = response.status();
            let body: Value = response.json().await.unwrap_or(Value::Null);
            if status == want {
                return body;
            }
            assert!(
                started.elapsed() < Duration::from_secs(30),
                "{url}: still {status} after 30 s, want {want}: {body}"
            );
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn worker_readiness_follows_nats() {
    let mut app = spawn_app().await;
    let readyz = format!("{}/readyz", app.worker_ops[0]);
    let body = wait_status(&app, &readyz, StatusCode::OK).await;
    assert_eq!(body["checks"]["slow_model_ready"], true, "{body}");
    assert_eq!(body["checks"]["jetstream_ready"], true, "{body}");

    app.nats.stop();
    let body = wait_status(&app, &readyz, StatusCode::SERVICE_UNAVAILABLE).await;
    assert_eq!(body["checks"]["nats_connected"], false, "{body}");
    assert_eq!(body["ready"], false);
    // Alive all the same.
    let health = app
        .http
        .get(format!("{}/healthz", app.worker_ops[0]))
        .send()
        .await
        .unwrap();
    assert_eq!(health.status(), StatusCode::OK);

    app.nats.restart();
    let body = wait_status(&app, &readyz, StatusCode::OK).await;
    assert_eq!(body["checks"]["nats_connected"], true, "{body}");
}

#[tokio::test]
async fn readiness_checks_that_the_stream_consumer_and_bucket_exist_now() {
    let app = spawn_app().await;
    let worker_readyz = format!("{}/readyz", app.worker_ops[0]);
    let gateway_readyz = app.url("/readyz");
    wait_status(&app, &worker_readyz, StatusCode::OK).await;
    let body = wait_status(&app, &gateway_readyz, StatusCode::OK).await;
    for check in ["stream_present", "consumer_present", "bucket_present"] {
        assert_eq!(body["checks"][check], true, "{body}");
    }
    let client = async_nats::connect(app.nats.url()).await.unwrap();
    let js = async_nats::jetstream::new(client);

    // The workers' consumer gone: the worker is not ready until it has re-created it; the
    // gateway stays ready (jobs wait in the stream).
    let stream = js.get_stream(contract::JOBS_STREAM).await.unwrap();
    stream
        .delete_consumer(contract::WORKER_CONSUMER)
        .await
        .unwrap();
    let body = wait_status(&app, &worker_readyz, StatusCode::SERVICE_UNAVAILABLE).await;
    assert_eq!(body["checks"]["consumer_present"], false, "{body}");
    let gateway = app.http.get(&gateway_readyz).send().await.unwrap();
    assert_eq!(gateway.status(), StatusCode::OK);
    wait_status(&app, &worker_readyz, StatusCode::OK).await;

    // The records bucket gone: the gateway cannot serve jobs, and says so until it is back.
    js.delete_key_value(contract::JOBS_BUCKET).await.unwrap();
    let body = wait_status(&app, &gateway_readyz, StatusCode::SERVICE_UNAVAILABLE).await;
    assert_eq!(body["checks"]["bucket_present"], false, "{body}");
    contract::ensure_jobs_bucket(&js, &contract::NatsSettings::with_url(app.nats.url()))
        .await
        .unwrap();
    let body = wait_status(&app, &gateway_readyz, StatusCode::OK).await;
    assert_eq!(body["checks"]["bucket_present"], true, "{body}");
}
