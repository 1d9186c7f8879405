//! Turning a `POST /predict` request into checked image bytes.
//!
//! Three request formats carry an image: the original clients' JSON `{"image_data": "<base64>"}`,
//! a multipart upload, and a raw `image/*` body. Whatever the format, the result is the encoded
//! image, untouched, plus its size read from the header alone: the gateway never decodes pixels
//! (the model server does, once), yet refuses decompression bombs before anyone allocates them.

use axum::http::{HeaderMap, header};
use base64::Engine as _;
use bytes::Bytes;
use serde::Deserialize;
use tandem_core::image_header;

use crate::{error::ApiError, job_options::OptionParams, webhook::WebhookParams};

/// An image that passed the gateway's checks.
#[derive(Debug, Clone)]
pub struct ImageUpload {
    /// The encoded image as the client sent it.
    pub bytes: Bytes,
    /// The JSON form's `webhook` and `webhook_events_filter` fields (unchecked; the other
    /// forms give them as query parameters).
    pub webhook: WebhookParams,
    /// The JSON form's `escalate` and `deadline_ms` fields (unchecked).
    pub options: OptionParams,
}

#[derive(Deserialize)]
struct PredictJson {
    image_data: Option<String>,
    #[serde(default)]
    webhook: Option<serde_json::Value>,
    #[serde(default)]
    webhook_events_filter: Option<serde_json::Value>,
    #[serde(default)]
    escalate: Option<serde_json::Value>,
    #[serde(default)]
    deadline_ms: Option<serde_json::Value>,
}

/// Extracts the image from a request body of any supported format.
pub async fn extract(
    headers: &HeaderMap,
    body: Bytes,
    max_pixels: u64,
) -> Result<ImageUpload, ApiError> {
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_owned();
    let mime = content_type
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    if body.is_empty() {
        return Err(ApiError::EmptyBody);
    }
    let mut webhook = WebhookParams::default();
    let mut options = OptionParams::default();
    let bytes = match mime.as_str() {
        "application/json" => {
            let (bytes, fields, option_fields) = from_json(&body)?;
            webhook = fields;
            options = option_fields;
            bytes
        }
        "multipart/form-data" => from_multipart(&content_type, body).await?,
        m if m.starts_with("image/") || m == "application/octet-stream" => body,
        _ => return Err(ApiError::UnsupportedMediaType(content_type)),
    };
    let mut upload = check(bytes, max_pixels)?;
    upload.webhook = webhook;
    upload.options = options;
    Ok(upload)
}

fn from_json(body: &[u8]) -> Result<(Bytes, WebhookParams, OptionParams), ApiError> {
    let parsed: PredictJson =
        serde_json::from_slice(body).map_err(|e| ApiError::InvalidJson(e.to_string()))?;
    let webhook = WebhookParams::from_json(parsed.webhook, parsed.webhook_events_filter)?;
    let options = OptionParams::from_json(parsed.escalate, parsed.deadline_ms)?;
    let data = parsed.image_data.ok_or(ApiError::MissingImageData)?;
    Ok((decode_base64(&data).map(Bytes::from)?, webhook, options))
}

/// Standard or URL-safe base64, padded or not, line breaks allowed, `data:` URL prefix allowed.
fn decode_base64(data: &str) -> Result<Vec<u8>, ApiError> {
    use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};
    const LENIENT: GeneralPurposeConfig =
        GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent);
    const STANDARD: GeneralPurpose = GeneralPurpose::new(&base64::alphabet::STANDARD, LENIENT);
    const URL_SAFE: GeneralPurpose = GeneralPurpose::new(&base64::alphabet::URL_SAFE, LENIENT);
    let data = match data.split_once(";base64,") {
        Some((prefix, rest)) if prefix.starts_with("data:") => rest,
        _ => data,
    };
    let cleaned;
    let data = if data.bytes().any(|b| b.is_ascii_whitespace()) {
        cleaned = data
            .bytes()
            .filter(|b| !b.is_ascii_whitespace())
            .collect::<Vec<u8>>();
        cleaned.as_slice()
    } else {
        data.as_bytes()
    };
    if data.is_empty() {
        return Err(ApiError::EmptyBody);
    }
    STANDARD
        .decode(data)
        .or_else(|e| URL_SAFE.decode(data).map_err(|_| e))
        .map_err(|e| ApiError::InvalidBase64(e.to_string()))
}

async fn from_multipart(content_type: &str, body: Bytes) -> Result<Bytes, ApiError> {
    let boundary = multer::parse_boundary(content_type)
        .map_err(|e| ApiError::InvalidMultipart(e.to_string()))?;
    let stream = futures::stream::once(async move { Ok::<_, std::convert::Infallible>(body) });
    let mut multipart = multer::Multipart::new(stream, boundary);
    let mut fallback = None;
    while let Some(field) = multipart
        .next_field()
        .await
        .map_err(|e| ApiError::InvalidMultipart(e.to_string()))?
    {
        let preferred = matches!(field.name(), Some("image" | "file" | "image_data"));
        let is_file = field.file_name().is_some();
        if !(preferred || is_file) {
            continue;
        }
        let bytes = field
            .bytes()
            .await
            .map_err(|e| ApiError::InvalidMultipart(e.to_string()))?;
        if preferred {
            return Ok(bytes);
        }
        fallback.get_or_insert(bytes);
    }
    fallback.ok_or(ApiError::NoFilePart)
}

/// Reads format and size from the header only, and enforces the pixel limit.
pub fn check(bytes: Bytes, max_pixels: u64) -> Result<ImageUpload, ApiError> {
    if bytes.is_empty() {
        return Err(ApiError::EmptyBody);
    }
    // The size from the header alone, read as the model server reads it too: no decoder here.
    let (width, height) = image_header::size(&bytes)?;
    let pixels = u64::from(width) * u64::from(height);
    if pixels > max_pixels {
        return Err(ApiError::ImageTooLarge {
            width,
            height,
            pixels,
            limit: max_pixels,
        });
    }
    Ok(ImageUpload {
        bytes,
        webhook: WebhookParams::default(),
        options: OptionParams::default(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_accepts_the_forms_clients_send() {
        let want = b"\x89PNG\r\n\x1a\n".to_vec();
        for text in [
            "iVBORw0KGgo=",
            "iVBORw0KGgo",
            "iVBO\nRw0K\r\nGgo=",
            "data:image/png;base64,iVBORw0KGgo=",
        ] {
            assert_eq!(decode_base64(text).unwrap(), want, "{text:?}");
        }
        assert!(matches!(
            decode_base64("not base64!!"),
            Err(ApiError::InvalidBase64(_))
        ));
        assert!(matches!(decode_base64("  "), Err(ApiError::EmptyBody)));
    }

    #[test]
    fn json_without_image_data_is_named() {
        assert!(matches!(
            from_json(br#"{"image": "x"}"#),
            Err(ApiError::MissingImageData)
        ));
        assert!(matches!(from_json(b"{"), Err(ApiError::InvalidJson(_))));
    }

    #[test]
    fn check_refuses_non_images() {
        // Which signatures are served: `tandem_core::image_header`'s tests.
        for not_served in [
            &b"hello world, not an image"[..],
            b"RIFF\x24\x00\x00\x00WAVEfmt \x10\x00\x00\x00",
        ] {
            assert!(
                matches!(
                    check(Bytes::copy_from_slice(not_served), 1000),
                    Err(ApiError::NotAnImage)
                ),
                "{not_served:?}"
            );
        }
    }

    #[test]
    fn check_reads_the_size_from_the_header_alone() {
        let png = tandem_test_images::png_claiming(100_000, 100_000);
        match check(Bytes::from(png), 40_000_000) {
            Err(ApiError::ImageTooLarge { width, height, .. }) => {
                assert_eq!((width, height), (100_000, 100_000));
            }
            other => panic!("expected image_too_large, got {other:?}"),
        }
    }
}
