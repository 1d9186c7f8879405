//! `Api`: the gateway's public HTTP API, and nothing else.

use std::time::Duration;

use reqwest::{StatusCode, Url, header};
use serde_json::Value;

use crate::error::CliError;

/// Longest wait for a TCP connection to the gateway.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Longest wait for a `POST /predict` or `GET /job/<id>` reply (the fast model answers in
/// milliseconds once loaded; the first call may load it).
const REQUEST_TIMEOUT: Duration = Duration::from_secs(120);

/// A client of one gateway.
#[derive(Debug, Clone)]
pub struct Api {
    http: reqwest::Client,
    /// The base URL without a trailing slash, e.g. `http://127.0.0.1:8000`.
    base: String,
    /// `--webhook`: sent with every `POST /predict` (`?webhook=<url>`).
    webhook: Option<String>,
    /// More query parameters of every `POST /predict` (`escalate`, `deadline_ms`).
    predict_params: Vec<(&'static str, String)>,
}

impl Api {
    /// A client of the gateway at `base` (`http://host:port`, optionally with a path prefix),
    /// sending `api_key` with every request when there is one.
    pub fn new(base: &str, api_key: Option<&str>) -> Result<Self, CliError> {
        let base = parse_base(base)?;
        let http = reqwest::Client::builder()
            .default_headers(auth_headers(api_key)?)
            .connect_timeout(CONNECT_TIMEOUT)
            .user_agent(concat!("tandem-cli/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| CliError::Usage(format!("cannot set up the HTTP client: {e}")))?;
        Ok(Self {
            http,
            base: base.as_str().trim_end_matches('/').to_owned(),
            webhook: None,
            predict_params: Vec::new(),
        })
    }

    /// This client, asking the gateway to POST each job's final record to `webhook`
    /// (`tandem predict --webhook URL`).
    pub fn with_webhook(self, webhook: Option<String>) -> Self {
        Self { webhook, ..self }
    }

    /// This client, sending `name=value` with every `POST /predict` (`--escalate`,
    /// `--deadline-ms`); nothing when `value` is `None`.
    pub fn with_predict_param(mut self, name: &'static str, value: Option<String>) -> Self {
        if let Some(value) = value {
            self.predict_params.push((name, value));
        }
        self
    }

    /// `/predict`, with the `webhook` query parameter when there is one, and the others.
    fn predict_url(&self) -> String {
        let url = self.url("/predict");
        let params: Vec<(&str, &str)> = self
            .webhook
            .iter()
            .map(|webhook| ("webhook", webhook.as_str()))
            .chain(
                self.predict_params
                    .iter()
                    .map(|(name, value)| (*name, value.as_str())),
            )
            .collect();
        if params.is_empty() {
            return url;
        }
        match Url::parse_with_params(&url, params) {
            Ok(with) => with.to_string(),
            Err(_) => url,
        }
    }

    /// The gateway's base URL, as errors show it.
    pub fn base(&self) -> &str {
        &self.base
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    fn job_path(id: &str) -> String {
        format!("/job/{}", encode_segment(id))
    }

    /// `POST /predict` with the raw image; the reply on success. With `wait_seconds`, the
    /// gateway is asked to hold the reply that long for the final job (`Prefer: wait`).
    pub async fn predict(
        &self,
        image: Vec<u8>,
        content_type: &str,
        idempotency_key: &str,
        wait_seconds: Option<f64>,
    ) -> Result<Value, CliError> {
        let mut request = self
            .http
            .post(self.predict_url())
            .timeout(REQUEST_TIMEOUT)
            .header(header::CONTENT_TYPE, content_type)
            .header("idempotency-key", idempotency_key)
            .body(image);
        if let Some(seconds) = wait_seconds {
            request = request
                .header("prefer", format!("wait={seconds}"))
                .timeout(REQUEST_TIMEOUT + Duration::from_secs_f64(seconds));
        }
        self.json(self.send(request).await?).await
    }

    /// `GET /job/<id>`: the job's record.
    pub async fn job(&self, id: &str) -> Result<Value, CliError> {
        let request = self
            .http
            .get(self.url(&Self::job_path(id)))
            .timeout(REQUEST_TIMEOUT);
        self.json(self.send(request).await?).await
    }

    /// `GET /job/<id>/events`, resuming after `last_event_id`: the open stream, once the
    /// gateway has said 200.
    pub async fn events(
        &self,
        id: &str,
        last_event_id: Option<&str>,
    ) -> Result<reqwest::Response, CliError> {
        let mut request = self
            .http
            .get(self.url(&format!("{}/events", Self::job_path(id))))
            .header(header::ACCEPT, "text/event-stream");
        if let Some(last) = last_event_id {
            request = request.header("last-event-id", last);
        }
        self.send(request).await
    }

    /// Sends a request; the reply when it is a success, else the error the gateway sent.
    async fn send(&self, request: reqwest::RequestBuilder) -> Result<reqwest::Response, CliError> {
        let response = request
            .send()
            .await
            .map_err(|e| CliError::transport(&self.base, &e))?;
        if response.status().is_success() {
            Ok(response)
        } else {
            Err(self.error(response).await)
        }
    }

    /// A success reply's JSON body.
    async fn json(&self, response: reqwest::Response) -> Result<Value, CliError> {
        let bytes = response
            .bytes()
            .await
            .map_err(|e| CliError::transport(&self.base, &e))?;
        serde_json::from_slice(&bytes).map_err(|e| {
            CliError::Protocol(format!(
                "the gateway at {} sent a reply that is not JSON ({e}): {}",
                self.base,
                snippet(&bytes)
            ))
        })
    }

    /// An error reply as `CliError::Api`; its `{"error": {"code", "message"}}` when it has one.
    async fn error(&self, response: reqwest::Response) -> CliError {
        let status = response.status();
        let retry_after = response
            .headers()
            .get(header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u64>().ok())
            .map(Duration::from_secs);
        let bytes = response.bytes().await.unwrap_or_default();
        let body: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
        let error = &body["error"];
        let (code, message) = match (error["code"].as_str(), error["message"].as_str()) {
            (Some(code), Some(message)) if status == StatusCode::UNAUTHORIZED => (
                code.to_owned(),
                format!("{message} (give the key with --api-key or TANDEM_API_KEY)"),
            ),
            (Some(code), Some(message)) => (code.to_owned(), message.to_owned()),
            _ => (
                status
                    .canonical_reason()
                    .unwrap_or("error")
                    .to_ascii_lowercase()
                    .replace(' ', "_"),
                fallback_message(status, &bytes),
            ),
        };
        CliError::Api {
            status: status.as_u16(),
            code,
            message,
            body,
            retry_after,
        }
    }
}

/// The gateway's base URL from `--url`: `http://` only (assumed when no scheme is given),
/// with a host, without query or fragment; the default when blank.
fn parse_base(base: &str) -> Result<Url, CliError> {
    let base = base.trim();
    let base = if base.is_empty() {
        crate::DEFAULT_URL
    } else {
        base
    };
    // `localhost:8000` means `http://localhost:8000`.
    let base = if base.contains("://") {
        base.to_owned()
    } else {
        format!("http://{base}")
    };
    let usage = |problem: &str| Err(CliError::Usage(format!("--url {base:?}{problem}")));
    let parsed = match Url::parse(&base) {
        Ok(parsed) => parsed,
        Err(e) => {
            let expected = crate::DEFAULT_URL;
            return usage(&format!(" is not a URL ({e}); expected e.g. {expected}"));
        }
    };
    match parsed.scheme() {
        "http" => {}
        "https" => return usage(": https is not supported by this build of tandem; use http://"),
        other => return usage(&format!(": unsupported scheme {other:?}; use http://")),
    }
    if parsed.host_str().is_none_or(str::is_empty) {
        return usage(" has no host");
    }
    if parsed.query().is_some() || parsed.fragment().is_some() {
        return usage(": give the gateway's base URL, without ? or #");
    }
    Ok(parsed)
}

/// The `Authorization: Bearer <KEY>` header, when there is a key.
fn auth_headers(api_key: Option<&str>) -> Result<header::HeaderMap, CliError> {
    let mut headers = header::HeaderMap::new();
    if let Some(key) = api_key.map(str::trim).filter(|k| !k.is_empty()) {
        let mut value = header::HeaderValue::from_str(&format!("Bearer {key}")).map_err(|_| {
            CliError::Usage(
                "the API key (--api-key or TANDEM_API_KEY) has characters an HTTP header cannot carry"
                    .to_owned(),
            )
        })?;
        value.set_sensitive(true);
        headers.insert(header::AUTHORIZATION, value);
    }
    Ok(headers)
}

fn fallback_message(status: StatusCode, body: &[u8]) -> String {
    let text = snippet(body);
    if text.is_empty() {
        format!("the gateway answered {status}")
    } else {
        format!("the gateway answered {status}: {text}")
    }
}

/// The start of a body, on one line, for error messages.
fn snippet(body: &[u8]) -> String {
    let text = String::from_utf8_lossy(body);
    let one_line: String = text.split_whitespace().collect::<Vec<_>>().join(" ");
    if one_line.chars().count() > 200 {
        let mut short: String = one_line.chars().take(200).collect();
        short.push('…');
        short
    } else {
        one_line
    }
}

/// Percent-encodes everything but RFC 3986 unreserved characters, so any id stays one path
/// segment (the gateway then says whether it is a job).
fn encode_segment(raw: &str) -> String {
    let mut out = String::with_capacity(raw.len());
    for byte in raw.bytes() {
        if byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'.' | b'_' | b'~') {
            out.push(char::from(byte));
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn predict_parameters_are_in_the_query() {
        let api = Api::new("http://gw.example", None)
            .unwrap()
            .with_webhook(Some("http://hooks.example/a?b".into()))
            .with_predict_param("escalate", Some("never".into()))
            .with_predict_param("deadline_ms", None)
            .with_predict_param("deadline_ms", Some("1500".into()));
        assert_eq!(
            api.predict_url(),
            "http://gw.example/predict?webhook=http%3A%2F%2Fhooks.example%2Fa%3Fb&escalate=never&deadline_ms=1500"
        );
        let plain = Api::new("http://gw.example", None).unwrap();
        assert_eq!(plain.predict_url(), "http://gw.example/predict");
    }

    #[test]
    fn ids_stay_one_path_segment() {
        assert_eq!(
            encode_segment("0b9f4a1e-1c2d-4e5f-8a9b-0c1d2e3f4a5b"),
            "0b9f4a1e-1c2d-4e5f-8a9b-0c1d2e3f4a5b"
        );
        assert_eq!(encode_segment("../x y?"), "..%2Fx%20y%3F");
    }

    #[test]
    fn base_urls_are_checked_and_normalised() {
        for (url, base) in [
            ("http://127.0.0.1:8000/", "http://127.0.0.1:8000"),
            ("http://gw.example/tandem/", "http://gw.example/tandem"),
            ("  ", "http://127.0.0.1:8000"),
            ("localhost:8000", "http://localhost:8000"),
        ] {
            assert_eq!(Api::new(url, None).unwrap().base(), base, "{url:?}");
        }
        for url in [
            "https://gw.example",
            "ftp://gw.example",
            "not a url",
            "http://gw.example/?x=1",
        ] {
            let error = Api::new(url, None).unwrap_err();
            assert!(matches!(error, CliError::Usage(_)), "{url:?}: {error:?}");
        }
        assert!(Api::new("localhost:8000", Some("key-0123456789abcdef")).is_ok());
        assert!(matches!(
            Api::new("localhost:8000", Some("two\nlines")),
            Err(CliError::Usage(_))
        ));
    }
}
