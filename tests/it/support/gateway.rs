//! `Gateway`: the HTTP API as a client sees it, for every test (a spawned app or a running
//! deployment alike).

use std::time::{Duration, Instant};

use reqwest::StatusCode;
use serde_json::Value;

use super::sse::SseStream;

/// A gateway's base URL and an HTTP client.
pub struct Gateway {
    /// `http://HOST:PORT`, without a trailing slash.
    pub base: String,
    pub http: reqwest::Client,
}

impl Gateway {
    pub fn new(base: &str, http: reqwest::Client) -> Self {
        Self {
            base: base.trim().trim_end_matches('/').to_owned(),
            http,
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// Waits until `GET /readyz` answers 200 (at most 30 s).
    pub async fn wait_ready(&self) {
        self.wait_ready_for(Duration::from_secs(30)).await;
    }

    /// Waits until `GET /readyz` answers 200, at most `timeout`.
    pub async fn wait_ready_for(&self, timeout: Duration) {
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
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
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

    /// `POST /predict` with a raw image body.
    pub async fn predict_raw(&self, image: Vec<u8>, content_type: &str) -> reqwest::Response {
        self.http
            .post(self.url("/predict"))
            .header("content-type", content_type)
            .body(image)
            .timeout(Duration::from_secs(60))
            .send()
            .await
            .unwrap_or_else(|e| panic!("POST {}: {e}", self.url("/predict")))
    }

    /// `POST /predict` as the original clients do: JSON with base64 `image_data`.
    pub async fn predict_json(&self, image: &[u8]) -> reqwest::Response {
        use base64::Engine as _;
        let body = serde_json::json!({
            "image_data": base64::engine::general_purpose::STANDARD.encode(image)
        });
        self.http
            .post(self.url("/predict"))
            .json(&body)
            .send()
            .await
            .unwrap()
    }

    /// `GET /job/<id>` as JSON, with its status code.
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
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }

    /// Opens `GET /job/<id>/events`.
    pub async fn events(&self, id: &str) -> SseStream {
        SseStream::open(&self.http, &self.url(&format!("/job/{id}/events")), None).await
    }
}
