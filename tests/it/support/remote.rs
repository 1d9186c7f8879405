//! `Deployment`: the service as a client sees it, either one already running somewhere (its
//! gateway's base URL in `TANDEM_TEST_BASE_URL`, e.g. `http://localhost:8000` for the
//! docker-compose stack) or, when that is unset, a fresh one on loopback ports ([`spawn_app`]).
//!
//! Only the public HTTP API is used, so the same test runs against both. A deployment under
//! test is expected to serve the vendored models (fast `efficientnet_lite0`, slow
//! `efficientnet_lite2`), as docker-compose.yml does.

use std::time::{Duration, Instant};

use reqwest::StatusCode;
use serde_json::Value;

use super::{
    app::{TestApp, spawn_app},
    sse::SseStream,
};

/// The environment variable naming a running deployment's gateway.
pub const BASE_URL_VAR: &str = "TANDEM_TEST_BASE_URL";

/// How long a running deployment may take to become ready (a stack just started with
/// `docker compose up -d` is still loading its models).
const READY_TIMEOUT: Duration = Duration::from_secs(180);

/// A deployment's gateway, and the app started for the test when none was given.
pub struct Deployment {
    /// The gateway's base URL, without a trailing slash.
    pub base: String,
    pub http: reqwest::Client,
    /// The app started for this test (stopped on drop); `None` against a running deployment.
    pub local: Option<TestApp>,
}

/// The deployment named by `TANDEM_TEST_BASE_URL`, once ready; else a freshly spawned app.
pub async fn deployment() -> Deployment {
    match std::env::var(BASE_URL_VAR) {
        Ok(url) if !url.trim().is_empty() => {
            let deployment = Deployment {
                base: url.trim().trim_end_matches('/').to_owned(),
                http: reqwest::Client::builder()
                    .connect_timeout(Duration::from_secs(5))
                    .build()
                    .expect("HTTP client"),
                local: None,
            };
            deployment.wait_ready(READY_TIMEOUT).await;
            deployment
        }
        _ => {
            let app = spawn_app().await;
            Deployment {
                base: app.base.clone(),
                http: app.http.clone(),
                local: Some(app),
            }
        }
    }
}

impl Deployment {
    /// Whether the tests run against a deployment given by URL.
    pub fn is_remote(&self) -> bool {
        self.local.is_none()
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// `GET path` as JSON, with its status.
    pub async fn get_json(&self, path: &str) -> (StatusCode, Value) {
        let response = self
            .http
            .get(self.url(path))
            .timeout(Duration::from_secs(30))
            .send()
            .await
            .unwrap_or_else(|e| panic!("GET {}: {e}", self.url(path)));
        let status = response.status();
        let body = response
            .json()
            .await
            .unwrap_or_else(|e| panic!("GET {}: the body is not JSON: {e}", self.url(path)));
        (status, body)
    }

    /// Waits until `GET /readyz` answers 200.
    pub async fn wait_ready(&self, timeout: Duration) {
        let started = Instant::now();
        loop {
            let last = match self
                .http
                .get(self.url("/readyz"))
                .timeout(Duration::from_secs(5))
                .send()
                .await
            {
                Ok(response) if response.status().is_success() => return,
                Ok(response) => format!(
                    "{}: {}",
                    response.status(),
                    response.text().await.unwrap_or_default()
                ),
                Err(e) => e.to_string(),
            };
            assert!(
                started.elapsed() < timeout,
                "{} not ready after {timeout:?}; last answer: {last}",
                self.url("/readyz")
            );
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }

    /// `POST /predict` with a raw image body: status and JSON reply.
    pub async fn predict(&self, image: Vec<u8>, content_type: &str) -> (StatusCode, Value) {
        let response = self
            .http
            .post(self.url("/predict"))
            .header("content-type", content_type)
            .body(image)
            .timeout(Duration::from_secs(30))
            .send()
            .await
            .unwrap_or_else(|e| panic!("POST {}: {e}", self.url("/predict")));
        let status = response.status();
        (status, response.json().await.expect("the reply is JSON"))
    }

    /// `GET /job/<id>`.
    pub async fn job(&self, id: &str) -> (StatusCode, Value) {
        self.get_json(&format!("/job/{id}")).await
    }

    /// Polls `GET /job/<id>` until the job is final (or `timeout`).
    pub async fn wait_final(&self, id: &str, timeout: Duration) -> Value {
        let started = Instant::now();
        loop {
            let (status, body) = self.job(id).await;
            if status.is_success()
                && matches!(
                    body["status"].as_str(),
                    Some("succeeded" | "failed" | "cancelled")
                )
            {
                return body;
            }
            assert!(
                started.elapsed() < timeout,
                "job {id} not final after {timeout:?}: {status} {body}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Opens `GET /job/<id>/events`.
    pub async fn events(&self, id: &str) -> SseStream {
        SseStream::open(&self.http, &self.url(&format!("/job/{id}/events")), None).await
    }
}
