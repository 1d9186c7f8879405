//! `SlowJob`: the message a gateway publishes and a slow-worker consumes.
//!
//! The payload is the encoded image itself (no base64, no JSON wrapping: one copy of the bytes);
//! everything else travels in headers, which `nats stream view TANDEM_JOBS` shows. An image too
//! big for one message is put in the images object store and named by a header instead.

use async_nats::HeaderMap;
use bytes::Bytes;
use time::{OffsetDateTime, format_description::well_known::Rfc3339};

use crate::{job::JobId, nats::headers};

/// Where the job's image is.
#[derive(Debug, Clone, PartialEq)]
pub enum ImageRef {
    /// In the message payload.
    Inline(Bytes),
    /// In the images object store, under this name.
    Object(String),
}

/// One slow job as it travels on the queue.
#[derive(Debug, Clone, PartialEq)]
pub struct SlowJob {
    pub id: JobId,
    pub image: ImageRef,
    pub submitted_at: OffsetDateTime,
    /// W3C `traceparent` of the submitting request.
    pub traceparent: Option<String>,
    /// When the slow answer stops being wanted (`deadline_ms`).
    pub deadline_at: Option<OffsetDateTime>,
    /// With the result cache on: the image's SHA-256 (hex), its key in the results bucket.
    pub image_sha256: Option<String>,
}

/// Why a message is not a valid job (it is terminated, not retried).
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SlowJobError {
    #[error("message has no {0} header")]
    MissingHeader(&'static str),
    #[error("header {0} is invalid")]
    InvalidHeader(&'static str),
    #[error(
        "message has no image: empty payload and no {} header",
        headers::IMAGE_OBJECT
    )]
    NoImage,
}

impl SlowJob {
    /// Headers and payload to publish.
    pub fn to_message(&self) -> (HeaderMap, Bytes) {
        let mut map = HeaderMap::new();
        // The de-duplication id is the job id: a retried submission under the same
        // `Idempotency-Key` reuses the job id, so JetStream drops the second publish.
        let id = self.id.to_string();
        map.insert(headers::MSG_ID, id.as_str());
        map.insert(headers::JOB_ID, id.as_str());
        let submitted = self.submitted_at.format(&Rfc3339).unwrap_or_default();
        map.insert(headers::SUBMITTED_AT, submitted.as_str());
        if let Some(traceparent) = &self.traceparent {
            map.insert(headers::TRACEPARENT, traceparent.as_str());
        }
        if let Some(deadline) = self.deadline_at.and_then(|d| d.format(&Rfc3339).ok()) {
            map.insert(headers::DEADLINE, deadline.as_str());
        }
        if let Some(digest) = &self.image_sha256 {
            map.insert(headers::IMAGE_SHA256, digest.as_str());
        }
        let payload = match &self.image {
            ImageRef::Inline(bytes) => bytes.clone(),
            ImageRef::Object(name) => {
                map.insert(headers::IMAGE_OBJECT, name.as_str());
                Bytes::new()
            }
        };
        (map, payload)
    }

    /// Reads a consumed message back.
    pub fn from_message(map: Option<&HeaderMap>, payload: Bytes) -> Result<Self, SlowJobError> {
        let get = |name: &'static str| map.and_then(|m| m.get(name)).map(|v| v.as_str().to_owned());
        let id: JobId = get(headers::JOB_ID)
            .ok_or(SlowJobError::MissingHeader(headers::JOB_ID))?
            .parse()
            .map_err(|_| SlowJobError::InvalidHeader(headers::JOB_ID))?;
        let time = |name: &'static str| {
            get(name)
                .map(|text| {
                    OffsetDateTime::parse(&text, &Rfc3339)
                        .map_err(|_| SlowJobError::InvalidHeader(name))
                })
                .transpose()
        };
        let submitted_at = time(headers::SUBMITTED_AT)?.unwrap_or_else(OffsetDateTime::now_utc);
        let deadline_at = time(headers::DEADLINE)?;
        let image = match get(headers::IMAGE_OBJECT) {
            Some(name) => ImageRef::Object(name),
            None if payload.is_empty() => return Err(SlowJobError::NoImage),
            None => ImageRef::Inline(payload),
        };
        Ok(Self {
            id,
            image,
            submitted_at,
            traceparent: get(headers::TRACEPARENT),
            deadline_at,
            image_sha256: get(headers::IMAGE_SHA256),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn job(image: ImageRef) -> SlowJob {
        SlowJob {
            id: JobId::new(),
            image,
            submitted_at: OffsetDateTime::from_unix_timestamp(1_700_000_000).unwrap(),
            traceparent: Some("00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01".into()),
            deadline_at: Some(OffsetDateTime::from_unix_timestamp(1_700_000_060).unwrap()),
            image_sha256: Some("ab".repeat(32)),
        }
    }

    #[test]
    fn inline_and_object_jobs_round_trip() {
        for image in [
            ImageRef::Inline(Bytes::from_static(b"\xff\xd8jpeg")),
            ImageRef::Object("some-object".into()),
        ] {
            let job = job(image);
            let (map, payload) = job.to_message();
            assert_eq!(SlowJob::from_message(Some(&map), payload).unwrap(), job);
        }
    }

    #[test]
    fn malformed_messages_say_what_is_missing() {
        assert_eq!(
            SlowJob::from_message(None, Bytes::from_static(b"x")),
            Err(SlowJobError::MissingHeader(headers::JOB_ID))
        );
        let mut map = HeaderMap::new();
        map.insert(headers::JOB_ID, "not-an-id");
        assert_eq!(
            SlowJob::from_message(Some(&map), Bytes::from_static(b"x")),
            Err(SlowJobError::InvalidHeader(headers::JOB_ID))
        );
        let mut map = HeaderMap::new();
        map.insert(headers::JOB_ID, JobId::new().to_string().as_str());
        assert_eq!(
            SlowJob::from_message(Some(&map), Bytes::new()),
            Err(SlowJobError::NoImage)
        );
    }
}
