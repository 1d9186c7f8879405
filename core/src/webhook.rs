//! Webhook events: which are due for a job record, and emitting them durably onto the
//! webhooks stream (see `nats/README.md`, "Webhooks").
//!
//! Whoever writes a transition of a job that has a `webhook` emits the events that transition
//! makes due, after its KV write and before acknowledging its own work: the gateway for `fast`
//! (and for a cancel), the slow-worker for `completed` and `changed` (before acknowledging the
//! job message; a redelivery that finds the job final emits again). Each event is published
//! with `Nats-Msg-Id: <job id>-<event>`, so the same event emitted twice within the duplicate
//! window is stored once; an event already recorded in the record's `webhooks` is not emitted
//! again at all. The gateways deliver them (their `webhook` module).

use std::fmt;

use async_nats::{HeaderMap, jetstream};
use bytes::Bytes;
use serde::{Deserialize, Serialize};

use crate::{
    job::{JobId, JobRecord},
    nats::{WEBHOOKS_SUBJECT, headers},
};

/// What a webhook can be told about a job (`webhook_events_filter`).
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    Hash,
    PartialOrd,
    Ord,
    Serialize,
    Deserialize,
    utoipa::ToSchema,
)]
#[serde(rename_all = "lowercase")]
pub enum WebhookEvent {
    /// The fast answer is stored.
    Fast,
    /// The job is final: `succeeded`, `failed`, `cancelled` or `expired`.
    Completed,
    /// The job is final and the slow label differs from the fast one.
    Changed,
}

impl WebhookEvent {
    /// Every event, in the order a job can reach them.
    pub const ALL: [Self; 3] = [Self::Fast, Self::Completed, Self::Changed];
    /// `webhook_events_filter` when none is given.
    pub const DEFAULT_FILTER: [Self; 1] = [Self::Completed];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Fast => "fast",
            Self::Completed => "completed",
            Self::Changed => "changed",
        }
    }

    /// Whether `record` is in the state this event announces.
    pub fn reached(self, record: &JobRecord) -> bool {
        match self {
            Self::Fast => record.fast.is_some(),
            Self::Completed => record.status.is_terminal(),
            Self::Changed => {
                record.status.is_terminal()
                    && record.decided_by == crate::escalation::DecidedBy::Slow
                    && matches!((&record.fast, &record.slow), (Some(f), Some(s)) if f.label != s.label)
            }
        }
    }

    /// The Standard Webhooks `webhook-id` of this event of job `id` (also its `Nats-Msg-Id`):
    /// the same on every retry and from every emitter.
    pub fn message_id(self, id: JobId) -> String {
        format!("{id}-{}", self.as_str())
    }
}

impl fmt::Display for WebhookEvent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for WebhookEvent {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::ALL
            .into_iter()
            .find(|e| e.as_str() == s)
            .ok_or_else(|| {
                format!("unknown webhook event {s:?}: expected fast, completed or changed")
            })
    }
}

/// How the delivery of one event stands (the record's `webhooks`, written by the gateway that
/// delivers it, after each attempt).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct WebhookDelivery {
    pub event: WebhookEvent,
    /// The `webhook-id` header sent with it (the same on every attempt).
    pub id: String,
    /// Whether the receiver answered 2xx.
    pub delivered: bool,
    /// Attempts made so far.
    pub attempts: u32,
    /// The HTTP status of the last answer, if one came.
    #[serde(default)]
    pub last_status: Option<u16>,
    /// Why the last attempt failed (or why delivery was given up).
    #[serde(default)]
    pub last_error: Option<String>,
}

/// The events of `record` to emit now: in its filter, reached, and not already being
/// delivered (no entry in `webhooks`). Empty for a job without a webhook.
pub fn due(record: &JobRecord) -> Vec<WebhookEvent> {
    if record.webhook.is_none() {
        return Vec::new();
    }
    let mut events: Vec<WebhookEvent> = record
        .webhook_events_filter
        .iter()
        .copied()
        .filter(|event| event.reached(record))
        .filter(|event| !record.webhooks.iter().any(|d| d.event == *event))
        .collect();
    events.sort_unstable();
    events.dedup();
    events
}

/// Why events were not all stored.
#[derive(Debug, thiserror::Error)]
#[error("webhook event not stored: {0}")]
pub struct EmitError(String);

/// Publishes the [`due`] events of `record` to the webhooks stream and waits for JetStream to
/// store each; returns how many were due. The payload is the record as it is now: the
/// delivery's body is its job view, the same on every retry.
pub async fn emit(js: &jetstream::Context, record: &JobRecord) -> Result<usize, EmitError> {
    let events = due(record);
    if events.is_empty() {
        return Ok(0);
    }
    let payload = Bytes::from(serde_json::to_vec(record).map_err(|e| EmitError(e.to_string()))?);
    for event in &events {
        let mut map = HeaderMap::new();
        map.insert(headers::MSG_ID, event.message_id(record.id).as_str());
        map.insert(headers::JOB_ID, record.id.to_string().as_str());
        map.insert(headers::WEBHOOK_EVENT, event.as_str());
        let ack = js
            .publish_with_headers(WEBHOOKS_SUBJECT, map, payload.clone())
            .await
            .map_err(|e| EmitError(e.to_string()))?;
        ack.await.map_err(|e| EmitError(e.to_string()))?;
    }
    tracing::debug!(job_id = %record.id, ?events, "webhook events emitted");
    Ok(events.len())
}

/// [`emit`], logging a failure; `true` when every due event is stored.
pub async fn emit_logged(js: &jetstream::Context, record: &JobRecord) -> bool {
    match emit(js, record).await {
        Ok(_) => true,
        Err(e) => {
            tracing::warn!(error = %e, job_id = %record.id, "webhook events not emitted");
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use time::OffsetDateTime;

    use super::*;
    use crate::job::{JobStatus, Prediction};

    fn prediction(label: &str) -> Prediction {
        Prediction {
            model: "m".into(),
            label: label.into(),
            score: 0.5,
            top_k: Vec::new(),
            inference_ms: 1.0,
            model_digest: None,
        }
    }

    #[test]
    fn events_fall_due_as_the_job_moves() {
        let mut record = JobRecord::queued(JobId::new(), OffsetDateTime::now_utc());
        assert!(due(&record).is_empty(), "no webhook, no events");
        record.webhook = Some("https://example.com/hook".into());
        record.webhook_events_filter = WebhookEvent::ALL.to_vec();
        assert!(due(&record).is_empty());
        record.fast = Some(prediction("cat"));
        assert_eq!(due(&record), [WebhookEvent::Fast]);
        assert!(record.advance(JobStatus::Succeeded));
        record.slow = Some(prediction("cat"));
        assert_eq!(due(&record), [WebhookEvent::Fast, WebhookEvent::Completed]);
        record.slow = Some(prediction("dog"));
        assert_eq!(due(&record), WebhookEvent::ALL);
        record.webhooks.push(WebhookDelivery {
            event: WebhookEvent::Fast,
            id: WebhookEvent::Fast.message_id(record.id),
            delivered: true,
            attempts: 1,
            last_status: Some(200),
            last_error: None,
        });
        assert_eq!(
            due(&record),
            [WebhookEvent::Completed, WebhookEvent::Changed]
        );
        record.webhook_events_filter = WebhookEvent::DEFAULT_FILTER.to_vec();
        assert_eq!(due(&record), [WebhookEvent::Completed]);
    }

    #[test]
    fn event_names_parse_back() {
        for event in WebhookEvent::ALL {
            assert_eq!(event.as_str().parse::<WebhookEvent>(), Ok(event));
        }
        assert!("done".parse::<WebhookEvent>().is_err());
    }
}
