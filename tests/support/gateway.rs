//! `Gateway`: the HTTP API as a client sees it, for every test (a spawned app or a running
//! deployment alike).
//!
//! Its client, [`ApiClient`], checks every reply it gets from the gateway against the OpenAPI
//! document ([`super::openapi::check_reply`]), so a test that gets an undocumented reply fails
//! there, whatever it asserts itself.

use std::{
    ops::Deref,
    sync::Arc,
    time::{Duration, Instant},
};

use reqwest::{
    IntoUrl, Method, ResponseBuilderExt as _, StatusCode,
    header::{CONTENT_TYPE, HeaderMap, HeaderName, HeaderValue},
};
use serde_json::Value;
// The `http` crate reqwest builds on (its types are reqwest's, re-exported by tonic).
use tonic::codegen::http;

use super::{openapi, sse::SseStream};

/// A gateway's base URL and an HTTP client.
pub struct Gateway {
    /// `http://HOST:PORT`, without a trailing slash.
    pub base: String,
    /// Checks every reply from `base` against the OpenAPI document.
    pub http: ApiClient,
}

/// A `reqwest::Client` whose replies from the gateway at `base` are checked against the OpenAPI
/// document: `send()` reads the body (all but event streams), checks it, and hands back an
/// equivalent response. Requests elsewhere (a worker's ops port) are not checked. Derefs to the
/// plain client for code that needs one (`SseStream::open`, which checks its own reply and
/// every event against the document).
#[derive(Clone)]
pub struct ApiClient {
    inner: reqwest::Client,
    /// The gateway's base URL, without a trailing slash.
    base: Arc<str>,
}

impl ApiClient {
    pub fn new(base: &str, inner: reqwest::Client) -> Self {
        Self {
            inner,
            base: base.trim().trim_end_matches('/').into(),
        }
    }

    pub fn get<U: IntoUrl>(&self, url: U) -> ApiRequest {
        self.request(Method::GET, url)
    }

    pub fn post<U: IntoUrl>(&self, url: U) -> ApiRequest {
        self.request(Method::POST, url)
    }

    pub fn put<U: IntoUrl>(&self, url: U) -> ApiRequest {
        self.request(Method::PUT, url)
    }

    pub fn patch<U: IntoUrl>(&self, url: U) -> ApiRequest {
        self.request(Method::PATCH, url)
    }

    pub fn delete<U: IntoUrl>(&self, url: U) -> ApiRequest {
        self.request(Method::DELETE, url)
    }

    pub fn head<U: IntoUrl>(&self, url: U) -> ApiRequest {
        self.request(Method::HEAD, url)
    }

    pub fn request<U: IntoUrl>(&self, method: Method, url: U) -> ApiRequest {
        ApiRequest {
            builder: self.inner.request(method, url),
            base: self.base.clone(),
        }
    }

    /// The path (and query) of `url` when it is the gateway's, else `None`.
    fn gateway_path(base: &str, url: &reqwest::Url) -> Option<String> {
        let base = reqwest::Url::parse(base).ok()?;
        if url.origin() != base.origin() {
            return None;
        }
        let prefix = base.path().trim_end_matches('/');
        let path = url.path().strip_prefix(prefix)?;
        if !path.starts_with('/') {
            return None;
        }
        Some(match url.query() {
            Some(query) => format!("{path}?{query}"),
            None => path.to_owned(),
        })
    }
}

impl Deref for ApiClient {
    type Target = reqwest::Client;

    fn deref(&self) -> &reqwest::Client {
        &self.inner
    }
}

impl From<ApiClient> for reqwest::Client {
    fn from(client: ApiClient) -> Self {
        client.inner
    }
}

/// A request of an [`ApiClient`]: `reqwest::RequestBuilder`'s methods, and a checking `send`.
#[must_use = "a request does nothing until sent"]
pub struct ApiRequest {
    builder: reqwest::RequestBuilder,
    base: Arc<str>,
}

impl ApiRequest {
    fn map(self, f: impl FnOnce(reqwest::RequestBuilder) -> reqwest::RequestBuilder) -> Self {
        Self {
            builder: f(self.builder),
            base: self.base,
        }
    }

    pub fn header<K, V>(self, key: K, value: V) -> Self
    where
        HeaderName: TryFrom<K>,
        <HeaderName as TryFrom<K>>::Error: Into<http::Error>,
        HeaderValue: TryFrom<V>,
        <HeaderValue as TryFrom<V>>::Error: Into<http::Error>,
    {
        self.map(|b| b.header(key, value))
    }

    pub fn headers(self, headers: HeaderMap) -> Self {
        self.map(|b| b.headers(headers))
    }

    pub fn bearer_auth<T: std::fmt::Display>(self, token: T) -> Self {
        self.map(|b| b.bearer_auth(token))
    }

    pub fn basic_auth<U: std::fmt::Display, P: std::fmt::Display>(
        self,
        username: U,
        password: Option<P>,
    ) -> Self {
        self.map(|b| b.basic_auth(username, password))
    }

    pub fn body<T: Into<reqwest::Body>>(self, body: T) -> Self {
        self.map(|b| b.body(body))
    }

    /// A JSON body (a `Value`: the tests build theirs with `json!`).
    pub fn json(self, json: &Value) -> Self {
        self.map(|b| b.json(json))
    }

    pub fn multipart(self, form: reqwest::multipart::Form) -> Self {
        self.map(|b| b.multipart(form))
    }

    pub fn timeout(self, timeout: Duration) -> Self {
        self.map(|b| b.timeout(timeout))
    }

    pub fn version(self, version: reqwest::Version) -> Self {
        self.map(|b| b.version(version))
    }

    /// Sends the request; a reply from the gateway is read, checked against the OpenAPI
    /// document (panicking when it does not match) and returned as it came. An event stream
    /// is checked for its status and content type only, and returned unread.
    pub async fn send(self) -> reqwest::Result<reqwest::Response> {
        let (client, request) = self.builder.build_split();
        let request = request?;
        let method = request.method().clone();
        let path = ApiClient::gateway_path(&self.base, request.url());
        let mut response = client.execute(request).await?;
        let Some(path) = path else {
            return Ok(response);
        };
        let path = path.as_str();
        let status = response.status();
        let content_type = response
            .headers()
            .get(CONTENT_TYPE)
            .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned());
        if content_type.as_deref().is_some_and(|ct| {
            ct.trim()
                .to_ascii_lowercase()
                .starts_with("text/event-stream")
        }) {
            openapi::check_client_reply(
                method.as_str(),
                path,
                status.as_u16(),
                content_type.as_deref(),
                None,
            );
            return Ok(response);
        }
        let version = response.version();
        let headers = response.headers().clone();
        let extensions = std::mem::take(response.extensions_mut());
        let final_url = response.url().clone();
        let body = response.bytes().await?;
        openapi::check_client_reply(
            method.as_str(),
            path,
            status.as_u16(),
            content_type.as_deref(),
            Some(&body),
        );
        let mut rebuilt = http::Response::builder().status(status).version(version);
        if let Some(h) = rebuilt.headers_mut() {
            *h = headers;
        }
        if let Some(e) = rebuilt.extensions_mut() {
            *e = extensions;
        }
        let rebuilt = rebuilt
            .url(final_url)
            .body(reqwest::Body::from(body))
            .expect("the reply's parts rebuild a reply");
        Ok(reqwest::Response::from(rebuilt))
    }
}

impl Gateway {
    /// `http`: a plain `reqwest::Client` or another gateway's [`ApiClient`] (its connections are
    /// shared; its replies are checked as this gateway's).
    pub fn new(base: &str, http: impl Into<reqwest::Client>) -> Self {
        let base = base.trim().trim_end_matches('/').to_owned();
        Self {
            http: ApiClient::new(&base, http.into()),
            base,
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
                    Some("succeeded" | "failed" | "cancelled" | "expired")
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

    /// Opens `GET /job/<id>/events` (`SseStream` checks the reply and each event).
    pub async fn events(&self, id: &str) -> SseStream {
        let path = format!("/job/{id}/events");
        SseStream::open(&self.http, &self.url(&path), None).await
    }
}
