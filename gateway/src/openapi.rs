//! `GET /openapi.json`: the OpenAPI 3.1 description of the HTTP API, generated from the handlers'
//! annotations and the types they return (so it cannot drift from the code unnoticed: a test
//! checks that every route of `router()` is described).

use axum::Json;
use serde::Serialize;
use tandem_core::job::{ClassScore, JobId, JobRecord, JobStatus, Prediction};
use utoipa::{
    Modify, OpenApi, ToSchema,
    openapi::{
        Content, Ref, ResponseBuilder,
        security::{HttpAuthScheme, HttpBuilder, SecurityRequirement, SecurityScheme},
    },
};

use crate::routes;

/// `POST /predict` with JSON: the original clients' request.
#[derive(Debug, ToSchema)]
#[allow(dead_code)] // documentation only: the handler reads the body itself
pub struct PredictJson {
    /// The image, base64 (standard or URL-safe, padding optional; a `data:` URL prefix is
    /// accepted).
    pub image_data: String,
}

/// `POST /predict` as a form upload.
#[derive(Debug, ToSchema)]
#[allow(dead_code)]
pub struct PredictUpload {
    /// The image file.
    #[schema(format = Binary, content_media_type = "application/octet-stream")]
    pub image: String,
}

/// The reply to `POST /predict`. Beside these fields it has one more, named after the fast model
/// (e.g. `"efficientnet_lite0": "Egyptian cat"`), holding its label, as the original service did.
#[derive(Debug, Serialize, ToSchema)]
pub struct PredictReply {
    pub job_id: JobId,
    pub fast: Prediction,
    pub status: JobStatus,
    /// `/job/<id>`.
    pub job_url: String,
    /// `/job/<id>/events`.
    pub events_url: String,
}

/// The reply to `DELETE /job/<id>` when the job was cancelled.
#[derive(Debug, Serialize, ToSchema)]
pub struct CancelReply {
    pub job_id: JobId,
    pub cancelled: bool,
    pub status: JobStatus,
}

/// Every error: `{"error": {"code", "message"}}`; 429/503 from `POST /predict` also carry the
/// fast model's answer (`fast` and the model-name key), 409 carries `cancelled` and `status`.
#[derive(Debug, Serialize, ToSchema)]
pub struct ErrorReply {
    pub error: ErrorBody,
}

/// The error itself.
#[derive(Debug, Serialize, ToSchema)]
pub struct ErrorBody {
    /// Stable, for programs (see the README's error table).
    pub code: String,
    /// For people.
    pub message: String,
}

/// Readiness and its checks.
#[derive(Debug, Serialize, ToSchema)]
pub struct ReadyReply {
    pub ready: bool,
    pub checks: ReadyChecks,
}

/// One flag per dependency.
#[derive(Debug, Serialize, ToSchema)]
pub struct ReadyChecks {
    pub nats_connected: bool,
    pub jetstream_ready: bool,
    pub stream_present: bool,
    /// The workers' durable consumer; reported, but not required for readiness.
    pub consumer_present: bool,
    pub bucket_present: bool,
    pub fast_model_ready: bool,
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
    modifiers(&ApiKeyAuth),
    components(schemas(
        PredictJson,
        PredictUpload,
        PredictReply,
        CancelReply,
        ErrorReply,
        ErrorBody,
        ReadyReply,
        ReadyChecks,
        JobRecord,
        JobStatus,
        Prediction,
        ClassScore,
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

/// This document.
#[utoipa::path(get, path = "/openapi.json", tag = "meta",
    responses((status = 200, description = "The OpenAPI document", content_type = "application/json")))]
pub async fn serve() -> Json<utoipa::openapi::OpenApi> {
    Json(ApiDoc::openapi())
}
