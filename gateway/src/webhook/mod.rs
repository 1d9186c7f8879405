//! Webhooks: a job's events POSTed to a URL the client gave, signed as Standard Webhooks says,
//! delivered durably through JetStream, never to an address the operator did not allow.
//!
//! - `policy`: `TANDEM_WEBHOOK_ALLOW` and the address rules (no SSRF);
//! - `sign`: `TANDEM_WEBHOOK_SECRET` and the `webhook-signature` header;
//! - `deliver`: the task that delivers events from the webhooks stream (one per gateway, on the
//!   shared durable consumer).
//!
//! Which events are due, and emitting them, is `tandem_core::webhook` (the workers emit too).

pub mod deliver;
pub mod policy;
pub mod sign;

use std::time::Duration;

use serde_json::Value;
use tandem_core::{config::Env, webhook::WebhookEvent};

use crate::error::ApiError;

/// The longest webhook URL accepted.
const MAX_URL_LEN: usize = 2048;

/// The webhook settings (see the README's configuration table).
#[derive(Debug, Clone)]
pub struct WebhookConfig {
    /// `TANDEM_WEBHOOK_ALLOW`: hosts, `*.suffix` patterns, `*`, CIDRs; empty: webhooks off.
    pub allow: policy::AllowList,
    /// `TANDEM_WEBHOOK_SECRET`: `whsec_<base64>`, several for rotation.
    pub secrets: sign::Secrets,
    /// `TANDEM_WEBHOOK_MAX_ATTEMPTS` (default 8): attempts per event before giving up.
    pub max_attempts: u32,
    /// `TANDEM_WEBHOOK_RETRY_BASE_MS` (default 1000): the delay after the first failed
    /// attempt, doubling after each next one ...
    pub retry_base: Duration,
    /// ... up to `TANDEM_WEBHOOK_RETRY_MAX_MS` (default 300000).
    pub retry_max: Duration,
    /// `TANDEM_WEBHOOK_CONNECT_TIMEOUT_MS` (default 3000).
    pub connect_timeout: Duration,
    /// `TANDEM_WEBHOOK_TIMEOUT_MS` (default 10000): one attempt, answer included.
    pub timeout: Duration,
    /// `TANDEM_WEBHOOK_CONCURRENCY` (default 16): deliveries in flight per gateway.
    pub concurrency: usize,
}

impl WebhookConfig {
    /// Reads the settings, recording bad values in `env`.
    pub fn from_env(env: &mut Env) -> Self {
        let allow = match policy::AllowList::parse(
            &env.optional_string("TANDEM_WEBHOOK_ALLOW")
                .unwrap_or_default(),
        ) {
            Ok(allow) => allow,
            Err(e) => {
                env.error(format!("TANDEM_WEBHOOK_ALLOW: {e}"));
                policy::AllowList::default()
            }
        };
        let secrets = match sign::Secrets::parse(
            &env.optional_string("TANDEM_WEBHOOK_SECRET")
                .unwrap_or_default(),
        ) {
            Ok(secrets) => secrets,
            Err(e) => {
                env.error(format!("TANDEM_WEBHOOK_SECRET: {e}"));
                sign::Secrets::default()
            }
        };
        let config = Self {
            allow,
            secrets,
            max_attempts: env.parse("TANDEM_WEBHOOK_MAX_ATTEMPTS", 8),
            retry_base: env.millis("TANDEM_WEBHOOK_RETRY_BASE_MS", Duration::from_secs(1)),
            retry_max: env.millis("TANDEM_WEBHOOK_RETRY_MAX_MS", Duration::from_secs(300)),
            connect_timeout: env
                .millis("TANDEM_WEBHOOK_CONNECT_TIMEOUT_MS", Duration::from_secs(3)),
            timeout: env.millis("TANDEM_WEBHOOK_TIMEOUT_MS", Duration::from_secs(10)),
            concurrency: env.parse("TANDEM_WEBHOOK_CONCURRENCY", 16),
        };
        if !config.allow.is_empty() && config.secrets.is_empty() {
            env.error(
                "TANDEM_WEBHOOK_ALLOW turns webhooks on: set TANDEM_WEBHOOK_SECRET too \
                 (whsec_<base64>; e.g. echo whsec_$(head -c 32 /dev/urandom | base64))",
            );
        }
        if config.max_attempts == 0 || config.concurrency == 0 {
            env.error(
                "TANDEM_WEBHOOK_MAX_ATTEMPTS and TANDEM_WEBHOOK_CONCURRENCY must be at least 1",
            );
        }
        if config.connect_timeout.is_zero() || config.timeout.is_zero() {
            env.error(
                "TANDEM_WEBHOOK_CONNECT_TIMEOUT_MS and TANDEM_WEBHOOK_TIMEOUT_MS must be positive",
            );
        }
        if config.retry_base.is_zero() || config.retry_max < config.retry_base {
            env.error(
                "TANDEM_WEBHOOK_RETRY_BASE_MS must be positive and at most TANDEM_WEBHOOK_RETRY_MAX_MS",
            );
        }
        config
    }

    /// Webhooks are on (an allow list is set).
    pub fn enabled(&self) -> bool {
        !self.allow.is_empty()
    }

    /// The delay before attempt `attempt + 1`, after attempt `attempt` (from 1) failed.
    pub fn retry_delay(&self, attempt: u32) -> Duration {
        let exponent = attempt.saturating_sub(1).min(20);
        self.retry_base
            .saturating_mul(2u32.saturating_pow(exponent))
            .min(self.retry_max)
    }
}

/// `webhook` and `webhook_events_filter` as the request gave them (JSON body fields or query
/// parameters), not yet checked.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct WebhookParams {
    pub url: Option<String>,
    /// The events, each as given (a JSON list's items, or a comma-separated parameter's parts).
    pub events: Option<Vec<String>>,
}

/// A checked webhook request: what goes into the job record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WebhookRequest {
    pub url: String,
    pub events: Vec<WebhookEvent>,
}

impl WebhookParams {
    /// From the JSON body's fields (`webhook`: a string; `webhook_events_filter`: a list of
    /// strings, or one comma-separated string).
    pub fn from_json(url: Option<Value>, events: Option<Value>) -> Result<Self, ApiError> {
        let url = match url {
            None | Some(Value::Null) => None,
            Some(Value::String(url)) => Some(url),
            Some(other) => {
                return Err(ApiError::InvalidWebhookUrl(format!(
                    "\"webhook\" must be a string URL, not {other}"
                )));
            }
        };
        let events = match events {
            None | Some(Value::Null) => None,
            Some(Value::String(list)) => Some(split_list(&list)),
            Some(Value::Array(items)) => Some(
                items
                    .into_iter()
                    .map(|item| match item {
                        Value::String(event) => Ok(event),
                        other => Err(ApiError::InvalidWebhookEventsFilter(format!(
                            "events are strings (fast, completed, changed), not {other}"
                        ))),
                    })
                    .collect::<Result<_, _>>()?,
            ),
            Some(other) => {
                return Err(ApiError::InvalidWebhookEventsFilter(format!(
                    "\"webhook_events_filter\" must be a list such as [\"completed\"], not {other}"
                )));
            }
        };
        Ok(Self { url, events })
    }

    /// From the query string (`?webhook=...&webhook_events_filter=completed,changed`; the
    /// filter parameter may also be repeated).
    pub fn from_query(query: Option<&str>) -> Self {
        let mut params = Self::default();
        for (key, value) in url::form_urlencoded::parse(query.unwrap_or_default().as_bytes()) {
            match key.as_ref() {
                "webhook" => params.url = Some(value.into_owned()),
                "webhook_events_filter" => params
                    .events
                    .get_or_insert_with(Vec::new)
                    .extend(split_list(&value)),
                _ => {}
            }
        }
        params
    }

    /// Each field from `self` when given there, else from `fallback`.
    pub fn or(self, fallback: Self) -> Self {
        Self {
            url: self.url.or(fallback.url),
            events: self.events.or(fallback.events),
        }
    }

    /// Checks the request against the configuration: `None` without a webhook; a 400 that
    /// says why for anything refused (the URL is resolved and its addresses checked).
    pub async fn check(self, config: &WebhookConfig) -> Result<Option<WebhookRequest>, ApiError> {
        let Some(url) = self.url else {
            return match self.events {
                Some(_) => Err(ApiError::InvalidWebhookEventsFilter(
                    "webhook_events_filter was given without a webhook".into(),
                )),
                None => Ok(None),
            };
        };
        if !config.enabled() {
            return Err(ApiError::WebhooksDisabled);
        }
        let events = match self.events {
            None => WebhookEvent::DEFAULT_FILTER.to_vec(),
            Some(names) => {
                let mut events = names
                    .iter()
                    .map(|name| name.trim().parse::<WebhookEvent>())
                    .collect::<Result<Vec<_>, _>>()
                    .map_err(ApiError::InvalidWebhookEventsFilter)?;
                if events.is_empty() {
                    return Err(ApiError::InvalidWebhookEventsFilter(
                        "name at least one event: fast, completed or changed".into(),
                    ));
                }
                events.sort_unstable();
                events.dedup();
                events
            }
        };
        if url.len() > MAX_URL_LEN {
            return Err(ApiError::InvalidWebhookUrl(format!(
                "the URL is longer than {MAX_URL_LEN} characters"
            )));
        }
        match config.allow.check(&url).await {
            Ok(checked) => Ok(Some(WebhookRequest {
                url: checked.url.to_string(),
                events,
            })),
            Err(
                refusal @ (policy::Refusal::Invalid(_)
                | policy::Refusal::Scheme(_)
                | policy::Refusal::NoHost),
            ) => Err(ApiError::InvalidWebhookUrl(refusal.to_string())),
            Err(refusal) => Err(ApiError::WebhookRefused(refusal.to_string())),
        }
    }
}

/// The request's webhook, checked: the JSON form's fields, else the query parameters
/// (`?webhook=...&webhook_events_filter=...`, for every form).
pub async fn requested(
    config: &WebhookConfig,
    body: &WebhookParams,
    query: Option<&str>,
) -> Result<Option<WebhookRequest>, ApiError> {
    body.clone()
        .or(WebhookParams::from_query(query))
        .check(config)
        .await
}

/// Stores the webhook in the job's record (once the fast answer is there) and emits the events
/// now due (`fast`; `completed` and `changed` too if the job already ended), before the reply
/// leaves. Returns the record as stored. A failure is logged, not returned: the job is stored,
/// and an error would make the client submit it twice.
pub async fn attach(
    queue: &crate::queue::Queue,
    record: tandem_core::job::JobRecord,
    request: Option<WebhookRequest>,
) -> tandem_core::job::JobRecord {
    let Some(request) = request else {
        return record;
    };
    let Some(jetstream) = queue.jetstream() else {
        return record;
    };
    let stored = jetstream
        .store
        .update(record.id, |r| {
            r.webhook = Some(request.url.clone());
            r.webhook_events_filter.clone_from(&request.events);
            true
        })
        .await;
    match stored {
        Ok(Some(stored)) => {
            // A job that ended first was final without a webhook: its worker emitted
            // nothing, so this write's events include `completed`.
            tandem_core::webhook::emit_logged(&jetstream.js, &stored.record).await;
            stored.record
        }
        Ok(None) => record,
        Err(e) => {
            tracing::warn!(error = %e, job_id = %record.id, "webhook not stored in the job record");
            record
        }
    }
}

fn split_list(list: &str) -> Vec<String> {
    list.split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(allow: &str) -> WebhookConfig {
        let mut env = Env::from_pairs([
            ("TANDEM_WEBHOOK_ALLOW", allow),
            (
                "TANDEM_WEBHOOK_SECRET",
                "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
            ),
        ]);
        let config = WebhookConfig::from_env(&mut env);
        env.finish().unwrap();
        config
    }

    #[test]
    fn a_webhook_needs_a_secret_and_sane_values() {
        let mut env = Env::from_pairs([("TANDEM_WEBHOOK_ALLOW", "example.com")]);
        let _ = WebhookConfig::from_env(&mut env);
        assert!(
            env.finish()
                .unwrap_err()
                .to_string()
                .contains("TANDEM_WEBHOOK_SECRET")
        );
        let mut env = Env::from_pairs([("TANDEM_WEBHOOK_ALLOW", "10.0.0.0/33")]);
        let _ = WebhookConfig::from_env(&mut env);
        assert!(env.finish().is_err());
        let off = WebhookConfig::from_env(&mut Env::from_pairs::<&str, &str>([]));
        assert!(!off.enabled());
    }

    #[test]
    fn retry_delays_double_and_cap() {
        let config = config("*");
        let delays: Vec<u64> = (1..=10).map(|n| config.retry_delay(n).as_secs()).collect();
        assert_eq!(delays, [1, 2, 4, 8, 16, 32, 64, 128, 256, 300]);
    }

    #[test]
    fn query_and_json_forms_read_the_same() {
        let query = WebhookParams::from_query(Some(
            "webhook=https%3A%2F%2Fh.example.com%2Fx&webhook_events_filter=completed,changed",
        ));
        let json = WebhookParams::from_json(
            Some(Value::from("https://h.example.com/x")),
            Some(serde_json::json!(["completed", "changed"])),
        )
        .unwrap();
        assert_eq!(query, json);
        assert!(WebhookParams::from_json(Some(Value::from(3)), None).is_err());
        assert!(WebhookParams::from_json(None, Some(serde_json::json!({"a": 1}))).is_err());
    }

    #[tokio::test]
    async fn checks_say_what_is_wrong() {
        let on = config("*.example.com");
        let params = |url: &str, events: Option<&[&str]>| WebhookParams {
            url: Some(url.to_owned()),
            events: events.map(|e| e.iter().map(|s| (*s).to_owned()).collect()),
        };
        let off = WebhookConfig::from_env(&mut Env::from_pairs::<&str, &str>([]));
        assert!(matches!(
            params("https://h.example.com/", None).check(&off).await,
            Err(ApiError::WebhooksDisabled)
        ));
        assert!(matches!(
            params("https://h.example.com/", Some(&["done"]))
                .check(&on)
                .await,
            Err(ApiError::InvalidWebhookEventsFilter(_))
        ));
        assert!(matches!(
            params("https://h.example.com/", Some(&[])).check(&on).await,
            Err(ApiError::InvalidWebhookEventsFilter(_))
        ));
        assert!(matches!(
            params("file:///etc/passwd", None).check(&on).await,
            Err(ApiError::InvalidWebhookUrl(_))
        ));
        assert!(matches!(
            params("https://evil.com/", None).check(&on).await,
            Err(ApiError::WebhookRefused(_))
        ));
        assert!(matches!(
            WebhookParams {
                url: None,
                events: Some(vec!["fast".into()])
            }
            .check(&on)
            .await,
            Err(ApiError::InvalidWebhookEventsFilter(_))
        ));
        let loopback = config("127.0.0.1/32");
        let checked = params("http://127.0.0.1:9/h", Some(&["changed", "fast", "fast"]))
            .check(&loopback)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(checked.events, [WebhookEvent::Fast, WebhookEvent::Changed]);
    }
}
