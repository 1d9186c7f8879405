//! Every JSON body the gateway answers with, as typed structs: the handlers return these, and
//! the OpenAPI document is generated from the same types, so the two cannot drift (the
//! integration suite also validates every reply it gets against the document).
//!
//! The original clients' keys are kept with `#[serde(flatten)]` maps: the fast model's name
//! holding its label in `POST /predict`'s reply (and in the 429/503 that carry the fast
//! answer), and `"<job id>": {"prediction": ...}` in the job view. In the schema they are the
//! object's `additionalProperties`: every other key is declared.

use std::{borrow::Cow, collections::BTreeMap};

use serde::Serialize;
use tandem_core::{
    escalation::DecidedBy,
    job::{JobId, JobRecord, JobStatus, Prediction},
};
use utoipa::{
    PartialSchema, ToSchema,
    openapi::{
        Ref, RefOr,
        schema::{AdditionalProperties, ObjectBuilder, Schema, Type},
    },
};

/// `"<fast model name>": "<label>"`, as the original service answered.
fn label_by_model(fast: &Prediction) -> BTreeMap<String, String> {
    BTreeMap::from([(fast.model.clone(), fast.label.clone())])
}

/// The reply to `POST /predict`: the fast label now, and where the better one will be. Beside
/// these fields it has one more, named after the fast model (e.g. `"efficientnet_lite0":
/// "Egyptian cat"`), holding its label, as the original service did.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct PredictReply {
    pub job_id: JobId,
    pub fast: Prediction,
    pub status: JobStatus,
    /// Whether the job goes on to the slow model (`escalate`).
    pub escalated: bool,
    /// Whose label is final: `fast` (not escalated; the job is final at once) or `slow`.
    pub decided_by: DecidedBy,
    /// Whether both answers came from the result cache (the job is final at once).
    pub cached: bool,
    /// `/job/<id>`.
    pub job_url: String,
    /// `/job/<id>/events`.
    pub events_url: String,
    /// Only with `Prefer: wait=N`, when the job became final within the wait: the final job
    /// as `GET /job/<id>` returns it (both answers, `changed`). Absent when the wait ran out
    /// (`status` then says where the job stands) and without `Prefer: wait`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub job: Option<Box<JobView>>,
    /// The fast model's name: its top-1 label.
    #[serde(flatten)]
    pub label_by_model: BTreeMap<String, String>,
}

impl PredictReply {
    pub fn new(record: &JobRecord, fast: Prediction) -> Self {
        Self {
            job_id: record.id,
            label_by_model: label_by_model(&fast),
            fast,
            status: record.status,
            escalated: record.escalated,
            decided_by: record.decided_by,
            cached: record.cached,
            job_url: format!("/job/{}", record.id),
            events_url: format!("/job/{}/events", record.id),
            job: None,
        }
    }

    /// After a `Prefer: wait`: the job as it now stands, carried whole once final.
    pub fn waited(mut self, record: &JobRecord) -> Self {
        self.status = record.status;
        self.decided_by = record.decided_by;
        if record.status.is_terminal() {
            self.job = Some(Box::new(JobView::new(record)));
        }
        self
    }
}

/// Where a queued job stands (see the README's `GET /job/<id>`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, ToSchema)]
pub struct QueuePosition {
    /// Jobs waiting ahead of this one (not yet handed to a worker).
    pub ahead: u64,
    /// Expected milliseconds until the slow answer, from the measured drain rate; `null` while
    /// no rate is known or no worker is taking jobs.
    pub eta_ms: Option<u64>,
}

/// Whether the final label differs from the fast one: `Some` once the job is final (`false`
/// when the fast model decided), `None` before.
pub fn changed(record: &JobRecord) -> Option<bool> {
    record.status.is_terminal().then(|| {
        record.decided_by == DecidedBy::Slow
            && matches!((&record.fast, &record.slow), (Some(fast), Some(slow)) if fast.label != slow.label)
    })
}

/// The original clients' view of the answer: the final label (the slow one, or the fast one
/// when the fast model decided), or `""` while there is none.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct OriginalPrediction {
    pub prediction: String,
}

/// A job as `GET /job/<id>` returns it (and each SSE event carries): the record's fields plus,
/// for the original clients, `"<id>": {"prediction": "<final label or empty>"}`.
#[derive(Debug, Clone, Serialize)]
pub struct JobView {
    #[serde(flatten)]
    pub record: JobRecord,
    /// While `queued`, when the job's place is known.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub queue: Option<QueuePosition>,
    /// Once final.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub changed: Option<bool>,
    /// One key, the job id.
    #[serde(flatten)]
    pub by_id: BTreeMap<String, OriginalPrediction>,
}

impl JobView {
    pub fn new(record: &JobRecord) -> Self {
        let prediction = record
            .final_answer()
            .map_or_else(String::new, |answer| answer.label.clone());
        Self {
            by_id: BTreeMap::from([(record.id.to_string(), OriginalPrediction { prediction })]),
            queue: None,
            changed: changed(record),
            record: record.clone(),
        }
    }

    /// With the job's place in the queue.
    pub fn with_queue(self, queue: Option<QueuePosition>) -> Self {
        Self { queue, ..self }
    }
}

/// `JobRecord`'s object, whose other keys (the one job id) are `OriginalPrediction`s: written
/// by hand because utoipa renders a flattened struct as an `allOf`, where no branch could say
/// "any other key".
impl PartialSchema for JobView {
    fn schema() -> RefOr<Schema> {
        let mut schema = JobRecord::schema();
        if let RefOr::T(Schema::Object(object)) = &mut schema {
            object.description = Some(
                "A job: the record's fields plus, for the original clients, \
                 `\"<id>\": {\"prediction\": \"<final label or empty>\"}`."
                    .into(),
            );
            object.additional_properties = Some(Box::new(AdditionalProperties::RefOr(RefOr::Ref(
                Ref::from_schema_name(OriginalPrediction::name()),
            ))));
            let mut queue = Ref::from_schema_name(QueuePosition::name());
            queue.description =
                "While `queued`: the jobs ahead of it and the expected wait.".into();
            object.properties.insert("queue".into(), RefOr::Ref(queue));
            object.properties.insert(
                "changed".into(),
                ObjectBuilder::new()
                    .schema_type(Type::Boolean)
                    .description(Some(
                        "Once final: whether the final (slow) label differs from the fast one \
                         (`false` without a slow answer).",
                    ))
                    .into(),
            );
        }
        schema
    }
}

impl ToSchema for JobView {
    fn name() -> Cow<'static, str> {
        Cow::Borrowed("JobView")
    }

    fn schemas(schemas: &mut Vec<(String, RefOr<Schema>)>) {
        schemas.push((JobRecord::name().into(), JobRecord::schema()));
        <JobRecord as ToSchema>::schemas(schemas);
        schemas.push((
            OriginalPrediction::name().into(),
            OriginalPrediction::schema(),
        ));
        schemas.push((QueuePosition::name().into(), QueuePosition::schema()));
    }
}

/// The reply to `DELETE /job/<id>` (200 when cancelled; the same fields in the 409 error when
/// the job had already ended).
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct CancelReply {
    pub job_id: JobId,
    pub cancelled: bool,
    pub status: JobStatus,
}

/// Every error: `{"error": {"code", "message"}}`. A 409 from `DELETE /job/<id>` also carries
/// `job_id`, `cancelled` and `status`; a 429 or 503 from `POST /predict` the fast model's
/// answer, computed anyway (`fast`, and the key named after the fast model).
#[derive(Debug, Clone, Default, Serialize, ToSchema)]
pub struct ErrorReply {
    pub error: ErrorBody,
    /// 409: the job.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub job_id: Option<JobId>,
    /// 409: `false`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cancelled: Option<bool>,
    /// 409: the final status the job had already reached.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub status: Option<JobStatus>,
    /// 429, 503: the fast model's answer.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fast: Option<Prediction>,
    /// 429, 503: the fast model's name, holding its top-1 label.
    #[serde(flatten)]
    pub label_by_model: BTreeMap<String, String>,
}

impl ErrorReply {
    pub fn new(error: ErrorBody) -> Self {
        Self {
            error,
            ..Self::default()
        }
    }

    /// With where the job stands (409).
    pub fn with_job(self, job: CancelReply) -> Self {
        Self {
            job_id: Some(job.job_id),
            cancelled: Some(job.cancelled),
            status: Some(job.status),
            ..self
        }
    }

    /// With the fast answer (429, 503).
    pub fn with_fast(self, fast: Prediction) -> Self {
        Self {
            label_by_model: label_by_model(&fast),
            fast: Some(fast),
            ..self
        }
    }
}

/// The error itself.
#[derive(Debug, Clone, Default, Serialize, ToSchema)]
pub struct ErrorBody {
    /// Stable, for programs (see the README's error table).
    pub code: String,
    /// For people.
    pub message: String,
}
