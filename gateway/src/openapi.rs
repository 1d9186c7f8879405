//! `GET /openapi.json`: the OpenAPI 3.1 description of the HTTP API, generated from the handlers'
//! annotations and the types they return (so it cannot drift from the code unnoticed: a test
//! checks that every route of `router()` is described).

use axum::Json;
use tandem_core::{
    job::{ClassScore, JobRecord, JobStatus, Prediction},
    ops::{HealthReply, ReadyReply},
};
use utoipa::{
    Modify, OpenApi, ToSchema,
    openapi::{
        Content, Ref, ResponseBuilder,
        security::{HttpAuthScheme, HttpBuilder, SecurityRequirement, SecurityScheme},
    },
};

use crate::{
    replies::{
        CancelReply, ErrorBody, ErrorReply, JobView, OriginalPrediction, PredictReply,
        QueuePosition,
    },
    routes,
};

/// The `Prefer` request header, as `POST /predict` and `GET /job/{id}` read it.
pub const PREFER: &str = "RFC 7240 preferences; `wait=N` (seconds, fractions allowed, e.g. \
`wait=0.5`) waits up to min(N, `TANDEM_MAX_WAIT_SECS`) for the job to become final. Other \
preferences are ignored; a `wait` that is not a number of seconds gets 400 `invalid_prefer`.";
/// `POST /predict` with JSON: the original clients' request.
#[derive(Debug, ToSchema)]
#[allow(dead_code)] // documentation only: the handler reads the body itself
pub struct PredictJson {
    /// The image, base64 (standard or URL-safe, padding optional; a `data:` URL prefix is
    /// accepted).
    #[schema(min_length = 1)]
    pub image_data: String,
    /// Where to POST the job's events, signed (Standard Webhooks); `http` or `https`, allowed
    /// by the gateway's `TANDEM_WEBHOOK_ALLOW`. Also the query parameter `webhook`.
    #[schema(format = "uri", max_length = 2048)]
    pub webhook: Option<String>,
    /// The events to POST (default `["completed"]`); needs `webhook`. Also the query parameter
    /// `webhook_events_filter` (comma-separated).
    #[schema(min_items = 1)]
    pub webhook_events_filter: Option<Vec<tandem_core::webhook::WebhookEvent>>,
    /// Whether the job goes on to the slow model (default `TANDEM_ESCALATE`). Also the query
    /// parameter `escalate`.
    pub escalate: Option<tandem_core::escalation::Escalate>,
    /// Milliseconds after submission when the slow answer stops being wanted: a job not final
    /// by then ends `expired`, the fast answer final. Also the query parameter `deadline_ms`.
    #[schema(minimum = 1)]
    pub deadline_ms: Option<u64>,
}

/// `POST /predict` as a form upload.
#[derive(Debug, ToSchema)]
#[allow(dead_code)]
pub struct PredictUpload {
    /// The image file.
    #[schema(format = Binary, content_media_type = "application/octet-stream")]
    pub image: String,
}

/// The generated document.
#[derive(OpenApi)]
#[openapi(
    info(
        title = "Tandem",
        description = "Two-speed image classification: a fast label now, a better one a moment later."
    ),
    paths(
        routes::page::index,
        routes::page::page_asset,
        routes::page::sample,
        routes::predict::predict,
        routes::jobs::get_job,
        routes::jobs::cancel_job,
        routes::jobs::job_events,
        routes::health::healthz,
        routes::health::readyz,
        routes::metrics::metrics,
        serve,
    ),
    modifiers(&ApiKeyAuth, &PredictLinks),
    components(schemas(
        PredictJson,
        PredictUpload,
        PredictReply,
        JobView,
        OriginalPrediction,
        QueuePosition,
        CancelReply,
        ErrorReply,
        ErrorBody,
        ReadyReply,
        HealthReply,
        JobRecord,
        JobStatus,
        Prediction,
        ClassScore,
        tandem_core::escalation::Escalate,
        tandem_core::escalation::DecidedBy,
        tandem_core::escalation::EscalationDecision,
    ))
)]
#[derive(Debug)]
pub struct ApiDoc;

/// The optional API keys (see `auth`): the `api_key` bearer scheme on the job routes, with the
/// role each needs, and their 401/403 answers.
#[derive(Debug)]
struct ApiKeyAuth;

/// The routes that take a key, and the kind of key each needs.
const PROTECTED: &[(&str, &str, &str)] = &[
    ("/predict", "post", "submit"),
    ("/job/{id}", "delete", "submit"),
    ("/job/{id}", "get", "read"),
    ("/job/{id}/events", "get", "read"),
];

impl Modify for ApiKeyAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "api_key",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .description(Some(
                        "`Authorization: Bearer <key>`, needed only when the gateway has keys \
                     configured (TANDEM_API_KEYS_SUBMIT / TANDEM_API_KEYS_READ). A submit key \
                     may also read; a read key may only read.",
                    ))
                    .build(),
            ),
        );
        let error = |description: &str| {
            ResponseBuilder::new()
                .description(description)
                .content(
                    "application/json",
                    Content::new(Some(Ref::from_schema_name("ErrorReply"))),
                )
                .build()
        };
        for (path, method, role) in PROTECTED {
            let Some(item) = openapi.paths.paths.get_mut(*path) else {
                continue;
            };
            let operation = match *method {
                "post" => item.post.as_mut(),
                "delete" => item.delete.as_mut(),
                _ => item.get.as_mut(),
            };
            let Some(operation) = operation else {
                continue;
            };
            // Either a key with this role, or none at all when the gateway has no keys.
            operation.security = Some(vec![
                SecurityRequirement::new("api_key", [*role]),
                SecurityRequirement::default(),
            ]);
            let responses = &mut operation.responses.responses;
            responses.insert(
                "401".into(),
                error("Keys are configured and the request has no valid one (`WWW-Authenticate: Bearer`)").into(),
            );
            if *role == "submit" {
                responses.insert(
                    "403".into(),
                    error("A read key: submitting and cancelling need a submit key").into(),
                );
            }
        }
    }
}

/// OpenAPI links from `POST /predict`'s reply to the routes its `job_id` opens.
#[derive(Debug)]
struct PredictLinks;

impl Modify for PredictLinks {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::{RefOr, link::LinkBuilder};
        let Some(post) = openapi
            .paths
            .paths
            .get_mut("/predict")
            .and_then(|item| item.post.as_mut())
        else {
            return;
        };
        let Some(RefOr::T(ok)) = post.responses.responses.get_mut("200") else {
            return;
        };
        for (name, operation, description) in [
            (
                "GetJob",
                "get_job",
                "The job, with the better label once it is there",
            ),
            (
                "JobEvents",
                "job_events",
                "The job's changes as Server-Sent Events",
            ),
            ("CancelJob", "cancel_job", "Cancel the job"),
        ] {
            let link = LinkBuilder::new()
                .operation_id(operation)
                .parameter("id", "$response.body#/job_id")
                .description(description)
                .build();
            ok.links.insert(name.to_owned(), RefOr::T(link));
        }
    }
}

/// This document.
#[utoipa::path(get, path = "/openapi.json", tag = "meta",
    responses((status = 200, description = "The OpenAPI document", content_type = "application/json")))]
pub async fn serve() -> Json<utoipa::openapi::OpenApi> {
    Json(ApiDoc::openapi())
}
