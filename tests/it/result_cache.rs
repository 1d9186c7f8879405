//! The result cache and deadlines.
//!
//! A repeated image gets both answers without running either model (the model server's own
//! counters say so), identical jobs at once run the slow model once, and a changed model never
//! serves an old answer. A deadline that passes before the slow answer ends the job `expired`,
//! the fast answer final, whoever is there to see it pass.

use std::{path::Path, time::Duration};

use reqwest::StatusCode;
use serde_json::Value;

use crate::{
    escalation::{metric, predict, scrape},
    slow_path::FINAL,
    support::{
        app::{AppOptions, spawn_app_with},
        eventually,
        nats::free_port,
        process::ServiceProcess,
        sse::SseStream,
        workspace_root,
    },
};

/// A model repository of the test's own: the vendored models' files linked, their configs
/// copied (so a test can change one).
fn model_repository(dir: &Path) {
    for model in ["efficientnet_lite0", "efficientnet_lite2"] {
        let from = workspace_root().join("models").join(model);
        let to = dir.join(model);
        std::fs::create_dir_all(&to).unwrap();
        for entry in std::fs::read_dir(&from).unwrap() {
            let entry = entry.unwrap();
            let target = to.join(entry.file_name());
            if entry.file_name() == "config.toml" {
                std::fs::copy(entry.path(), target).unwrap();
            } else {
                std::os::unix::fs::symlink(entry.path(), target).unwrap();
            }
        }
    }
}

/// A model server process on `repository`, its gRPC API on `port`, its metrics on `metrics`.
fn model_server(repository: &Path, port: u16, metrics: u16) -> ServiceProcess {
    ServiceProcess::spawn(
        "tandem-model-server",
        &[
            ("TANDEM_MODEL_REPOSITORY", repository.display().to_string()),
            ("TANDEM_MODEL_SERVER_ADDR", format!("127.0.0.1:{port}")),
            (
                "TANDEM_MODEL_SERVER_METRICS_ADDR",
                format!("127.0.0.1:{metrics}"),
            ),
        ],
    )
}

/// Images each model has run, as its model server counts them.
async fn inferences(http: &reqwest::Client, metrics: u16) -> (f64, f64) {
    let page = scrape(http, &format!("http://127.0.0.1:{metrics}/metrics")).await;
    (
        metric(
            &page,
            "tandem_model_inferences_total{model=\"efficientnet_lite0\"}",
        ),
        metric(
            &page,
            "tandem_model_inferences_total{model=\"efficientnet_lite2\"}",
        ),
    )
}

/// Waits until the fast model answers through the gateway (one fast inference of another
/// image, `escalate=never`), then returns the counts from there.
async fn models_up(app: &crate::support::app::TestApp, metrics: u16) -> (f64, f64) {
    eventually(
        Duration::from_secs(90),
        "the fast model answering",
        || async {
            let response = app
                .http
                .post(app.url("/predict?escalate=never"))
                .header("content-type", "image/jpeg")
                .body(crate::support::photo("rocket.jpg"))
                .send()
                .await
                .map_err(|e| e.to_string())?;
            if response.status().is_success() {
                Ok(())
            } else {
                Err(response.status().to_string())
            }
        },
    )
    .await;
    inferences(&app.http, metrics).await
}

fn plus(counts: (f64, f64), fast: f64, slow: f64) -> (f64, f64) {
    (counts.0 + fast, counts.1 + slow)
}

#[tokio::test]
async fn a_repeated_image_is_answered_from_the_cache_until_a_model_changes() {
    let dir = tempfile::tempdir().unwrap();
    model_repository(dir.path());
    let (port, metrics) = (free_port(), free_port());
    let mut server = model_server(dir.path(), port, metrics);
    let url = format!("http://127.0.0.1:{port}");
    let app = spawn_app_with(AppOptions {
        workers: 1,
        env: vec![
            ("TANDEM_MODEL_SERVER_URL".into(), url),
            ("TANDEM_RESULT_CACHE_TTL_SECS".into(), "600".into()),
            ("TANDEM_WORKER_CONCURRENCY".into(), "3".into()),
        ],
        ..Default::default()
    })
    .await;
    let http = reqwest::Client::new();
    let start = models_up(&app, metrics).await;

    let first = predict(&app, "coffee.jpg", "").await;
    assert_eq!(first["cached"], false);
    let done = app
        .wait_final(first["job_id"].as_str().unwrap(), FINAL)
        .await;
    assert_eq!(done["status"], "succeeded");
    let before = inferences(&http, metrics).await;
    assert_eq!(
        before,
        plus(start, 1.0, 1.0),
        "one fast and one slow inference"
    );

    let second = predict(&app, "coffee.jpg", "").await;
    assert_eq!(second["cached"], true, "{second}");
    assert_eq!(second["status"], "succeeded");
    let (_, job) = app.job(second["job_id"].as_str().unwrap()).await;
    assert_eq!(job["slow"], done["slow"], "the first job's slow answer");
    assert_eq!(job["decided_by"], "slow");
    assert_eq!(
        inferences(&http, metrics).await,
        before,
        "neither model ran again"
    );

    // Three identical new images at once: the slow model runs once for the three.
    let together =
        futures::future::join_all((0..3).map(|_| predict(&app, "chelsea.jpg", ""))).await;
    for reply in &together {
        let job = app
            .wait_final(reply["job_id"].as_str().unwrap(), FINAL)
            .await;
        assert_eq!(job["slow"]["label"], "Egyptian cat", "{job}");
    }
    let (_, slow_runs) = inferences(&http, metrics).await;
    assert_eq!(slow_runs, before.1 + 1.0, "chelsea once for the three");

    // A changed slow model (its preprocessing) has another digest: the old answer is not used.
    let config = dir.path().join("efficientnet_lite2/config.toml");
    let text = std::fs::read_to_string(&config).unwrap();
    let changed = text.replace("offset = -0.9921875", "offset = -0.9921");
    assert_ne!(text, changed, "the config names its offset");
    std::fs::write(&config, changed).unwrap();
    drop(server);
    server = model_server(dir.path(), port, metrics);
    let restarted = models_up(&app, metrics).await;
    let third = predict(&app, "coffee.jpg", "").await;
    assert_eq!(third["cached"], false, "{third}");
    let job = app
        .wait_final(third["job_id"].as_str().unwrap(), FINAL)
        .await;
    assert_eq!(job["cached"], false, "{job}");
    assert_ne!(job["slow"]["model_digest"], done["slow"]["model_digest"]);
    assert_eq!(
        inferences(&http, metrics).await.1,
        restarted.1 + 1.0,
        "the new model ran"
    );
    drop(server);
}

#[tokio::test]
async fn a_deadline_that_passes_ends_the_job_expired_with_the_fast_answer() {
    let mut app = spawn_app_with(AppOptions {
        workers: 0,
        ..Default::default()
    })
    .await;
    let reply = predict(&app, "chelsea.jpg", "deadline_ms=400").await;
    let id = reply["job_id"].as_str().unwrap().to_owned();
    assert_eq!(reply["status"], "queued");
    let mut events = SseStream::open(&app.http, &app.url(&format!("/job/{id}/events")), None).await;
    let received = events.collect(Duration::from_secs(30)).await;
    let last = received.last().expect("events");
    assert_eq!(last.event, "expired", "{received:?}");
    let job = last.json();
    assert_eq!(job["decided_by"], "fast");
    assert_eq!(
        job[&id]["prediction"], "Egyptian cat",
        "the fast label, for the original clients"
    );
    assert!(job["deadline_at"].is_string());

    // A gateway that restarts loses its timers: reading the record expires it all the same.
    let later = predict(&app, "coffee.jpg", "deadline_ms=300").await;
    let later_id = later["job_id"].as_str().unwrap().to_owned();
    app.restart_gateway().await;
    app.wait_ready().await;
    let job = app.wait_final(&later_id, FINAL).await;
    assert_eq!(job["status"], "expired", "{job}");

    // A worker that receives them afterwards skips them: no attempt, still expired.
    app.add_worker();
    let js = crate::slow_path::jetstream(&app).await;
    eventually(FINAL, "the queue drained", || async {
        match crate::support::queue::stored_jobs(&js).await {
            Some(0) => Ok(()),
            other => Err(format!("{other:?} jobs stored")),
        }
    })
    .await;
    for id in [&id, &later_id] {
        let (status, job): (StatusCode, Value) = app.job(id).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(job["status"], "expired", "{job}");
        assert_eq!(job["attempts"], 0, "{job}");
        assert!(job.get("slow").is_none(), "{job}");
    }
}

#[tokio::test]
async fn a_deadline_that_does_not_pass_changes_nothing() {
    let app = spawn_app_with(AppOptions::default()).await;
    let reply = predict(&app, "chelsea.jpg", "deadline_ms=60000").await;
    let job = app
        .wait_final(reply["job_id"].as_str().unwrap(), FINAL)
        .await;
    assert_eq!(job["status"], "succeeded", "{job}");
    assert_eq!(job["decided_by"], "slow");
}
