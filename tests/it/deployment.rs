//! End to end, through the public HTTP API only: against a deployment already running when
//! `TANDEM_TEST_BASE_URL` names its gateway, else against a freshly spawned app. The compose
//! stack is checked this way:
//!
//!   docker compose up -d --build && TANDEM_TEST_BASE_URL=http://localhost:8000 cargo test --test it deployment

use std::time::Duration;

use reqwest::StatusCode;
use serde_json::Value;

use crate::support::{
    photo,
    remote::{Deployment, deployment},
};

const FAST: &str = "efficientnet_lite0";
const SLOW: &str = "efficientnet_lite2";
/// A job's slow label may take a while on a busy machine (or a stack that just started).
const FINAL: Duration = Duration::from_secs(120);

/// Submits chelsea.jpg and checks the fast label; returns the job id.
async fn submit_chelsea(deployment: &Deployment) -> String {
    let response = deployment
        .predict_raw(photo("chelsea.jpg"), "image/jpeg")
        .await;
    let status = response.status();
    let reply: serde_json::Value = response.json().await.unwrap();
    assert_eq!(status, StatusCode::OK, "{reply}");
    assert_eq!(reply[FAST], "Egyptian cat", "{reply}");
    assert_eq!(reply["fast"]["label"], "Egyptian cat", "{reply}");
    assert_eq!(reply["fast"]["model"], FAST, "{reply}");
    let id = reply["job_id"].as_str().expect("a job id").to_owned();
    assert_eq!(reply["job_url"], format!("/job/{id}"));
    assert_eq!(reply["events_url"], format!("/job/{id}/events"));
    id
}

#[tokio::test]
async fn the_deployment_is_alive_and_ready() {
    let deployment = deployment().await;
    let (status, body) = deployment.get_json("/healthz").await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let (status, body) = deployment.get_json("/readyz").await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["ready"], true, "{body}");
    for check in ["nats_connected", "jetstream_ready", "fast_model_ready"] {
        assert_eq!(body["checks"][check], true, "{check}: {body}");
    }
}

#[tokio::test]
async fn chelsea_gets_the_fast_label_now_and_the_slow_label_on_get_job() {
    let deployment = deployment().await;
    let id = submit_chelsea(&deployment).await;

    let job = deployment.wait_final(&id, FINAL).await;
    assert_eq!(job["status"], "succeeded", "{job}");
    assert_eq!(job["fast"]["label"], "Egyptian cat", "{job}");
    assert_eq!(job["slow"]["label"], "Egyptian cat", "{job}");
    assert_eq!(job["slow"]["model"], SLOW, "{job}");
    // What the original clients read.
    assert_eq!(job[&id]["prediction"], "Egyptian cat", "{job}");
    assert!(job["finished_at"].is_string(), "{job}");
}

#[tokio::test]
async fn chelsea_events_end_with_succeeded_and_the_slow_label() {
    let deployment = deployment().await;
    let id = submit_chelsea(&deployment).await;

    let mut events = deployment.events(&id).await;
    assert_eq!(events.status, StatusCode::OK);
    let received = events.collect(FINAL).await;
    let last = received.last().expect("at least one event");
    assert_eq!(last.event, "succeeded", "{received:?}");
    let record: Value = last.json();
    assert_eq!(record["slow"]["label"], "Egyptian cat", "{record}");
    assert_eq!(record["slow"]["model"], SLOW, "{record}");
}

#[tokio::test]
async fn an_unknown_job_is_not_found() {
    let deployment = deployment().await;
    let (status, body) = deployment.job("00000000-0000-4000-8000-000000000000").await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{body}");
    assert_eq!(body["error"]["code"], "job_not_found", "{body}");
}
