//! The job schema: what a job is, its states, and the record kept in the KV bucket.
//!
//! The record is JSON so that `nats kv get tandem_jobs <id>` reads well; its shape is part of the
//! HTTP contract too (`GET /job/<id>` returns it as is).

use std::{fmt, str::FromStr};

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
use uuid::Uuid;

use crate::escalation::{DecidedBy, EscalationDecision};

fn yes() -> bool {
    true
}

fn slow() -> DecidedBy {
    DecidedBy::Slow
}

/// A job's id: a random (v4) UUID, 122 random bits, so ids neither collide nor can be guessed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(try_from = "String", into = "String")]
#[schema(value_type = String, format = Uuid)]
pub struct JobId(Uuid);

impl JobId {
    /// A fresh random id.
    pub fn new() -> Self {
        Self(Uuid::new_v4())
    }

    /// The UUID itself.
    pub fn uuid(&self) -> Uuid {
        self.0
    }
}

impl Default for JobId {
    fn default() -> Self {
        Self::new()
    }
}

impl fmt::Display for JobId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.as_hyphenated().fmt(f)
    }
}

/// Why a string is not a job id.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("not a job id: expected a UUID like 3f2b8c1e-6a1d-4c2e-9f4b-2a7d9e0c5b11")]
pub struct InvalidJobId;

impl FromStr for JobId {
    type Err = InvalidJobId;

    /// Only the canonical hyphenated form (36 characters) is accepted: one spelling per job, so
    /// a KV key can never be reached through another form of the same id.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s.len() != 36 {
            return Err(InvalidJobId);
        }
        Uuid::try_parse(s).map(Self).map_err(|_| InvalidJobId)
    }
}

impl TryFrom<String> for JobId {
    type Error = InvalidJobId;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        s.parse()
    }
}

impl From<JobId> for String {
    fn from(id: JobId) -> Self {
        id.to_string()
    }
}

/// Where a job is in its life. `succeeded`, `failed`, `cancelled` and `expired` are final.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum JobStatus {
    /// Stored on the queue, waiting for a worker.
    Queued,
    /// A worker is running the slow model. (After a transient failure the job goes back to
    /// `queued`, with `error` saying why, until its next delivery.)
    Running,
    /// The slow model answered; `slow` holds its result.
    Succeeded,
    /// The job cannot succeed; `error` says why.
    Failed,
    /// The client cancelled it before it finished.
    Cancelled,
    /// Its `deadline_ms` passed before the slow answer: the fast answer is final.
    Expired,
}

impl JobStatus {
    /// No more changes will come.
    pub fn is_terminal(self) -> bool {
        matches!(
            self,
            Self::Succeeded | Self::Failed | Self::Cancelled | Self::Expired
        )
    }

    /// The name used in JSON and as the SSE event name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Queued => "queued",
            Self::Running => "running",
            Self::Succeeded => "succeeded",
            Self::Failed => "failed",
            Self::Cancelled => "cancelled",
            Self::Expired => "expired",
        }
    }
}

/// One class of a classifier's top k.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ClassScore {
    pub label: String,
    pub score: f32,
    /// The class index in the model's label file.
    pub index: usize,
}

/// What one model said about one image.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Prediction {
    /// The model's name in the model server.
    pub model: String,
    /// Top-1 label.
    pub label: String,
    /// Top-1 probability.
    pub score: f32,
    /// The best classes, best first (top-1 included).
    pub top_k: Vec<ClassScore>,
    /// Wall time of the model call as seen by the caller (gRPC round trip included).
    pub inference_ms: f64,
    /// The model's identity on the model server (`sha256:` of its ONNX file and preprocessing
    /// configuration): answers are cached under it, so a changed model never serves an old one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model_digest: Option<String>,
}

/// The record of one job in the results bucket (key: the job id).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct JobRecord {
    pub id: JobId,
    pub status: JobStatus,
    /// The fast model's answer, as the `POST /predict` reply carried it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fast: Option<Prediction>,
    /// The slow model's answer, once `succeeded` (of an escalated job).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub slow: Option<Prediction>,
    /// Whether the job goes to the slow model (`escalate`); records written before escalation
    /// existed were all escalated.
    #[serde(default = "yes")]
    pub escalated: bool,
    /// Which answer is the job's label: `slow` for an escalated job, `fast` for one that was
    /// not, or whose deadline passed first.
    #[serde(default = "slow")]
    pub decided_by: DecidedBy,
    /// Why the job was, or was not, escalated.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub escalation: Option<EscalationDecision>,
    /// Of a job `auto` did not escalate and the audit sampled: the slow model's answer, run
    /// in the background to measure what skipping costs. The fast answer stays the label.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub audit: Option<Prediction>,
    /// Whether the answers came from the result cache (the same image, the same models)
    /// instead of running a model.
    #[serde(default)]
    pub cached: bool,
    /// When the slow answer stops being wanted (`deadline_ms`): a job not final by then ends
    /// `expired`, with the fast answer as its label.
    #[serde(
        default,
        with = "time::serde::rfc3339::option",
        skip_serializing_if = "Option::is_none"
    )]
    #[schema(value_type = Option<String>, format = DateTime)]
    pub deadline_at: Option<OffsetDateTime>,
    /// Why the job failed, or the last transient error while it is retried.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// How many times a worker started the slow model on it.
    pub attempts: u32,
    /// The job message's sequence in the jobs stream (`TANDEM_JOBS`), stored with the fast
    /// answer: with the workers' consumer progress it says how many jobs are ahead of it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stream_seq: Option<u64>,
    #[serde(with = "time::serde::rfc3339")]
    #[schema(value_type = String, format = DateTime)]
    pub submitted_at: OffsetDateTime,
    #[serde(
        default,
        with = "time::serde::rfc3339::option",
        skip_serializing_if = "Option::is_none"
    )]
    #[schema(value_type = Option<String>, format = DateTime)]
    pub started_at: Option<OffsetDateTime>,
    #[serde(
        default,
        with = "time::serde::rfc3339::option",
        skip_serializing_if = "Option::is_none"
    )]
    #[schema(value_type = Option<String>, format = DateTime)]
    pub finished_at: Option<OffsetDateTime>,
    #[serde(with = "time::serde::rfc3339")]
    #[schema(value_type = String, format = DateTime)]
    pub updated_at: OffsetDateTime,
    /// W3C `traceparent` of the step that wrote this version of the record, present when that
    /// service exports traces: the trace to look the job up by in a tracing backend.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub traceparent: Option<String>,
    /// Where the job's webhook events are POSTed (`POST /predict`'s `webhook`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub webhook: Option<String>,
    /// The events the webhook is sent (with a `webhook`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub webhook_events_filter: Vec<crate::webhook::WebhookEvent>,
    /// How each event's delivery stands, once its first attempt is made.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub webhooks: Vec<crate::webhook::WebhookDelivery>,
}

impl JobRecord {
    /// A job just accepted.
    pub fn queued(id: JobId, submitted_at: OffsetDateTime) -> Self {
        Self {
            id,
            status: JobStatus::Queued,
            fast: None,
            slow: None,
            escalated: true,
            decided_by: DecidedBy::Slow,
            escalation: None,
            audit: None,
            cached: false,
            deadline_at: None,
            error: None,
            attempts: 0,
            stream_seq: None,
            submitted_at,
            started_at: None,
            finished_at: None,
            updated_at: submitted_at,
            traceparent: None,
            webhook: None,
            webhook_events_filter: Vec::new(),
            webhooks: Vec::new(),
        }
    }

    /// Moves to `to`, stamping the times that go with it; refuses (and changes nothing) once
    /// the job is final, so that no writer can undo a result, a failure or a cancellation.
    /// Every change of status goes through here.
    #[must_use = "a refused move means the record must not be written"]
    pub fn advance(&mut self, to: JobStatus) -> bool {
        if self.status.is_terminal() {
            return false;
        }
        let now = OffsetDateTime::now_utc();
        if to == JobStatus::Running && self.started_at.is_none() {
            self.started_at = Some(now);
        }
        if to.is_terminal() {
            self.finished_at = Some(now);
        }
        self.status = to;
        self.updated_at = now;
        true
    }

    /// The answer that is the job's label: the slow one once an escalated job has it, the
    /// fast one when the fast model decided (and the job is final).
    pub fn final_answer(&self) -> Option<&Prediction> {
        match self.decided_by {
            DecidedBy::Slow => self.slow.as_ref(),
            DecidedBy::Fast if self.status.is_terminal() => self.fast.as_ref(),
            DecidedBy::Fast => None,
        }
    }

    /// Whether the deadline has passed at `now`.
    pub fn past_deadline(&self, now: OffsetDateTime) -> bool {
        self.deadline_at.is_some_and(|deadline| now >= deadline)
    }

    /// Ends the job `expired` (the fast answer final), unless it is final already.
    #[must_use = "a refused move means the record must not be written"]
    pub fn expire(&mut self) -> bool {
        let expired = self.advance(JobStatus::Expired);
        if expired {
            self.decided_by = DecidedBy::Fast;
            self.error = Some("the deadline passed before the slow answer".into());
        }
        expired
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_final_state_is_never_left() {
        for last in [
            JobStatus::Succeeded,
            JobStatus::Failed,
            JobStatus::Cancelled,
        ] {
            let mut record = JobRecord::queued(JobId::new(), OffsetDateTime::now_utc());
            assert!(record.advance(JobStatus::Running));
            assert!(record.advance(last));
            let finished = record.clone();
            for next in [
                JobStatus::Queued,
                JobStatus::Running,
                JobStatus::Succeeded,
                JobStatus::Failed,
                JobStatus::Cancelled,
            ] {
                assert!(!record.advance(next), "{last:?} -> {next:?}");
                assert_eq!(record, finished, "a refused move changes nothing");
            }
        }
    }

    #[test]
    fn advancing_stamps_the_times() {
        let mut record = JobRecord::queued(JobId::new(), OffsetDateTime::now_utc());
        assert!(record.advance(JobStatus::Running));
        let started = record.started_at.expect("started_at");
        // A retry goes back to queued and runs again: the first start is kept.
        assert!(record.advance(JobStatus::Queued));
        assert!(record.advance(JobStatus::Running));
        assert_eq!(record.started_at, Some(started));
        assert!(record.finished_at.is_none());
        assert!(record.advance(JobStatus::Succeeded));
        assert!(record.finished_at.is_some());
    }

    #[test]
    fn job_ids_are_canonical_uuids_only() {
        let id = JobId::new();
        assert_eq!(id.to_string().parse::<JobId>(), Ok(id));
        for bad in [
            "",
            "abc123",
            "../../etc/passwd",
            "3f2b8c1e6a1d4c2e9f4b2a7d9e0c5b11",
            "{3f2b8c1e-6a1d-4c2e-9f4b-2a7d9e0c5b11}",
            "3f2b8c1e-6a1d-4c2e-9f4b-2a7d9e0c5b1z",
        ] {
            assert_eq!(bad.parse::<JobId>(), Err(InvalidJobId), "{bad:?}");
        }
    }

    #[test]
    fn record_json_uses_lowercase_status_and_rfc3339_times() {
        let mut record = JobRecord::queued(JobId::new(), OffsetDateTime::now_utc());
        assert!(record.advance(JobStatus::Running));
        let json = serde_json::to_value(&record).unwrap();
        assert_eq!(json["status"], "running");
        assert!(json["started_at"].as_str().unwrap().contains('T'));
        assert!(json.get("finished_at").is_none());
        let back: JobRecord = serde_json::from_value(json).unwrap();
        assert_eq!(back, record);
    }
}
