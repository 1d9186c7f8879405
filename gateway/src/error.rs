//! `ApiError`: every way a request can fail, and the one place that turns it into HTTP.
//!
//! Bodies are `{"error": {"code": "...", "message": "..."}}`; `code` is stable for programs,
//! `message` is for people. Internal details are logged, never sent.

use std::time::Duration;

use axum::{
    Json,
    extract::Request,
    http::{HeaderValue, StatusCode, header},
    middleware::Next,
    response::{IntoResponse, Response},
};
use http_body_util::BodyExt as _;

use tandem_core::job::Prediction;

use crate::replies::{CancelReply, ErrorBody, ErrorReply};

/// `Retry-After` of a 429 while no drain rate is known (the queue is full: it drains at the slow
/// model's pace; with a measured rate, `progress::QueueProgress::retry_after` says when).
pub const QUEUE_FULL_RETRY_AFTER: Duration = Duration::from_secs(5);
/// `Retry-After` of a 503 for the queue (NATS reconnecting, JetStream not answering).
pub const QUEUE_UNAVAILABLE_RETRY_AFTER: Duration = Duration::from_secs(2);
/// `Retry-After` of a 503 for the fast model.
pub const MODEL_UNAVAILABLE_RETRY_AFTER: Duration = Duration::from_secs(1);

/// A failed request.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("the request body is empty: send an image")]
    EmptyBody,
    #[error("the request body is larger than the limit of {limit} bytes")]
    BodyTooLarge { limit: usize },
    #[error(
        "unsupported content type {0:?}: send application/json with {{\"image_data\": \"<base64>\"}}, multipart/form-data with a file, or a raw image/* body"
    )]
    UnsupportedMediaType(String),
    #[error("the body is not valid JSON: {0}")]
    InvalidJson(String),
    #[error("the JSON body has no \"image_data\" string field (base64 of the image)")]
    MissingImageData,
    #[error("\"image_data\" is not valid base64: {0}")]
    InvalidBase64(String),
    #[error("the multipart body is invalid: {0}")]
    InvalidMultipart(String),
    #[error("the request body could not be read: {0}")]
    UnreadableBody(String),
    #[error("the multipart body has no file part (send the image as a form field named \"image\")")]
    NoFilePart,
    #[error("the data is not an image in a supported format (JPEG, PNG, WebP, GIF, BMP, TIFF)")]
    NotAnImage,
    #[error("the image is corrupt or truncated: {0}")]
    CorruptImage(String),
    #[error("the image is {width}x{height} ({pixels} pixels), over the limit of {limit} pixels")]
    ImageTooLarge {
        width: u32,
        height: u32,
        pixels: u64,
        limit: u64,
    },
    #[error("the model could not use this image: {0}")]
    ImageRejected(String),
    #[error("the Idempotency-Key header must be 1 to 256 visible ASCII characters")]
    InvalidIdempotencyKey,
    #[error("webhooks are off on this gateway (TANDEM_WEBHOOK_ALLOW is empty): send no webhook")]
    WebhooksDisabled,
    #[error("the webhook URL is invalid: {0}")]
    InvalidWebhookUrl(String),
    #[error("the webhook URL is refused: {0}")]
    WebhookRefused(String),
    #[error("webhook_events_filter is invalid: {0}")]
    InvalidWebhookEventsFilter(String),
    #[error("the Prefer header is invalid: {0}")]
    InvalidPrefer(String),
    #[error("{0}")]
    InvalidEscalate(String),
    #[error("{0}")]
    InvalidDeadline(String),
    #[error("no such route")]
    NotFound,
    #[error("this route does not allow this method")]
    MethodNotAllowed,
    #[error("the request is malformed: {0}")]
    BadRequest(String),
    #[error("this route needs an API key: send the header `Authorization: Bearer <key>`")]
    MissingApiKey,
    #[error("{0}")]
    InvalidApiKey(&'static str),
    #[error("this API key may only read jobs: submitting and cancelling need a submit key")]
    InsufficientScope,
    #[error("no job with id {0:?}")]
    JobNotFound(String),
    #[error("too late to cancel: the job has already {}", .0.status.as_str())]
    TooLate(CancelReply),
    /// With the fast answer, when there is one, and when to retry.
    #[error("the job queue is full; retry later")]
    QueueFull(Option<Box<Prediction>>, Duration),
    /// With the fast answer, when there is one.
    #[error("the job queue is unavailable; the job was not accepted")]
    QueueUnavailable(Option<Box<Prediction>>),
    #[error("the fast model is unavailable; retry later")]
    ModelUnavailable,
    #[error("the fast model did not answer in time")]
    ModelTimeout,
    #[error("the fast model {0:?} is not served by the model server")]
    ModelMissing(String),
    #[error("internal error")]
    Internal(String),
}

impl ApiError {
    /// 503: the queue is not there, and no fast answer to go with it.
    pub fn queue_unavailable() -> Self {
        Self::QueueUnavailable(None)
    }

    /// The HTTP status this error is answered with (the one mapping, used by `IntoResponse`).
    pub fn status(&self) -> StatusCode {
        match self {
            Self::EmptyBody
            | Self::InvalidJson(_)
            | Self::MissingImageData
            | Self::InvalidBase64(_)
            | Self::InvalidMultipart(_)
            | Self::UnreadableBody(_)
            | Self::NoFilePart
            | Self::InvalidIdempotencyKey
            | Self::WebhooksDisabled
            | Self::InvalidWebhookUrl(_)
            | Self::WebhookRefused(_)
            | Self::InvalidWebhookEventsFilter(_)
            | Self::InvalidPrefer(_)
            | Self::InvalidEscalate(_)
            | Self::InvalidDeadline(_)
            | Self::BadRequest(_) => StatusCode::BAD_REQUEST,
            Self::MissingApiKey | Self::InvalidApiKey(_) => StatusCode::UNAUTHORIZED,
            Self::InsufficientScope => StatusCode::FORBIDDEN,
            Self::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            Self::BodyTooLarge { .. } | Self::ImageTooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            Self::UnsupportedMediaType(_) => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            Self::NotAnImage | Self::CorruptImage(_) | Self::ImageRejected(_) => {
                StatusCode::UNPROCESSABLE_ENTITY
            }
            Self::JobNotFound(_) | Self::NotFound => StatusCode::NOT_FOUND,
            Self::TooLate(_) => StatusCode::CONFLICT,
            Self::QueueFull(..) => StatusCode::TOO_MANY_REQUESTS,
            Self::QueueUnavailable(_) | Self::ModelUnavailable | Self::ModelMissing(_) => {
                StatusCode::SERVICE_UNAVAILABLE
            }
            Self::ModelTimeout => StatusCode::GATEWAY_TIMEOUT,
            Self::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// The stable machine-readable code.
    pub fn code(&self) -> &'static str {
        match self {
            Self::EmptyBody => "empty_body",
            Self::BodyTooLarge { .. } => "body_too_large",
            Self::UnsupportedMediaType(_) => "unsupported_media_type",
            Self::InvalidJson(_) => "invalid_json",
            Self::MissingImageData => "missing_image_data",
            Self::InvalidBase64(_) => "invalid_base64",
            Self::InvalidMultipart(_) => "invalid_multipart",
            Self::UnreadableBody(_) => "unreadable_body",
            Self::NoFilePart => "no_file_part",
            Self::NotAnImage => "not_an_image",
            Self::CorruptImage(_) => "corrupt_image",
            Self::ImageTooLarge { .. } => "image_too_large",
            Self::ImageRejected(_) => "image_rejected",
            Self::InvalidIdempotencyKey => "invalid_idempotency_key",
            Self::WebhooksDisabled => "webhooks_disabled",
            Self::InvalidWebhookUrl(_) => "invalid_webhook_url",
            Self::WebhookRefused(_) => "webhook_refused",
            Self::InvalidWebhookEventsFilter(_) => "invalid_webhook_events_filter",
            Self::InvalidPrefer(_) => "invalid_prefer",
            Self::InvalidEscalate(_) => "invalid_escalate",
            Self::InvalidDeadline(_) => "invalid_deadline",
            Self::NotFound => "not_found",
            Self::MethodNotAllowed => "method_not_allowed",
            Self::BadRequest(_) => "bad_request",
            Self::MissingApiKey => "missing_api_key",
            Self::InvalidApiKey(_) => "invalid_api_key",
            Self::InsufficientScope => "insufficient_scope",
            Self::JobNotFound(_) => "job_not_found",
            Self::TooLate(_) => "too_late",
            Self::QueueFull(..) => "queue_full",
            Self::QueueUnavailable(_) => "queue_unavailable",
            Self::ModelUnavailable => "model_unavailable",
            Self::ModelTimeout => "model_timeout",
            Self::ModelMissing(_) => "model_missing",
            Self::Internal(_) => "internal",
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = self.status();
        if let Self::Internal(detail) = &self {
            tracing::error!(detail, "internal error");
        } else if status.is_server_error() {
            tracing::warn!(code = self.code(), error = %self, "request failed");
        }
        let challenge = match &self {
            Self::MissingApiKey => Some("Bearer realm=\"tandem\""),
            Self::InvalidApiKey(_) => Some("Bearer realm=\"tandem\", error=\"invalid_token\""),
            Self::InsufficientScope => {
                Some("Bearer realm=\"tandem\", error=\"insufficient_scope\", scope=\"submit\"")
            }
            _ => None,
        };
        let retry_after = match &self {
            Self::QueueFull(_, after) => Some(*after),
            Self::QueueUnavailable(_) => Some(QUEUE_UNAVAILABLE_RETRY_AFTER),
            Self::ModelUnavailable => Some(MODEL_UNAVAILABLE_RETRY_AFTER),
            _ => None,
        };
        let error = ErrorBody {
            code: self.code().to_owned(),
            message: self.to_string(),
        };
        let body = match self {
            Self::TooLate(job) => ErrorReply::new(error).with_job(job),
            Self::QueueFull(Some(fast), _) | Self::QueueUnavailable(Some(fast)) => {
                ErrorReply::new(error).with_fast(*fast)
            }
            _ => ErrorReply::new(error),
        };
        let mut response = (status, Json(body)).into_response();
        if let Some(after) = retry_after
            && let Ok(value) = HeaderValue::from_str(&retry_after_secs(after).to_string())
        {
            response.headers_mut().insert(header::RETRY_AFTER, value);
        }
        if let Some(challenge) = challenge {
            response.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static(challenge),
            );
        }
        response
    }
}

/// Whole seconds, rounded up, at least 1 (`Retry-After` takes an integer).
fn retry_after_secs(after: Duration) -> u64 {
    let whole = after.as_secs() + u64::from(after.subsec_nanos() > 0);
    whole.max(1)
}

impl From<tandem_core::image_header::HeaderError> for ApiError {
    fn from(e: tandem_core::image_header::HeaderError) -> Self {
        use tandem_core::image_header::HeaderError;
        match e {
            HeaderError::NotAnImage => Self::NotAnImage,
            HeaderError::Corrupt(reason) => Self::CorruptImage(reason),
        }
    }
}

impl From<tandem_core::store::StoreError> for ApiError {
    fn from(e: tandem_core::store::StoreError) -> Self {
        tracing::warn!(error = %e, "job store error");
        Self::queue_unavailable()
    }
}

/// Makes the errors axum answers by itself JSON too: 405 (a known route, another method; its
/// `Allow` header is kept) and 400 (a path it cannot decode, e.g. `%FF` in a job id).
pub async fn json_errors(request: Request, next: Next) -> Response {
    let response = next.run(request).await;
    let status = response.status();
    let is_json = response
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"));
    if is_json || !matches!(status.as_u16(), 400 | 404 | 405) {
        return response;
    }
    let (parts, body) = response.into_parts();
    let error = match status {
        StatusCode::METHOD_NOT_ALLOWED => ApiError::MethodNotAllowed,
        StatusCode::NOT_FOUND => ApiError::NotFound,
        _ => {
            // axum's rejection texts are short and say what is wrong with the request.
            let text = http_body_util::Limited::new(body, 1024)
                .collect()
                .await
                .map(|c| String::from_utf8_lossy(&c.to_bytes()).trim().to_owned())
                .unwrap_or_default();
            ApiError::BadRequest(if text.is_empty() {
                "bad request".to_owned()
            } else {
                text
            })
        }
    };
    let mut replaced = error.into_response();
    if let Some(allow) = parts.headers.get(header::ALLOW) {
        replaced.headers_mut().insert(header::ALLOW, allow.clone());
    }
    replaced
}
