//! `gateway_extract`: the gateway's request parsing and its header-only size check.

use std::io::Cursor;

use bytes::Bytes;
use tandem_gateway::image_input;

use http::header::{CONTENT_TYPE, HeaderMap, HeaderValue};

use crate::Outcome;

/// The gateway's default `TANDEM_MAX_IMAGE_PIXELS`.
const GATEWAY_MAX_PIXELS: u64 = 40_000_000;

/// Content types `gateway_extract` picks from with its first byte (low 7 bits); an index past
/// the end means "the content type is the input up to its first newline". `None`: no header.
pub const CONTENT_TYPES: [Option<&str>; 11] = [
    Some("application/json"),
    Some("application/json; charset=utf-8"),
    Some("multipart/form-data; boundary=XyZ"),
    Some("multipart/form-data; boundary=\"XyZ\""),
    Some("multipart/form-data"),
    Some("image/png"),
    Some("image/jpeg"),
    Some("IMAGE/WEBP"),
    Some("application/octet-stream"),
    Some("text/plain"),
    None,
];

/// Gateway request parsing (`image_input::extract`): byte 0 picks the content type (bit 7: a
/// 64-pixel limit instead of the default), the rest is the body. Accepted bytes must be in a
/// format the model server decodes and, if the decoders read their header, within the limit
/// (raw bodies untouched); every refusal must be a client error.
pub fn gateway_extract(data: &[u8]) -> Outcome {
    let Some((&selector, rest)) = data.split_first() else {
        return Err("no input".into());
    };
    let max_pixels = if selector & 0x80 != 0 {
        64
    } else {
        GATEWAY_MAX_PIXELS
    };
    let (content_type, body) = match CONTENT_TYPES.get(usize::from(selector & 0x7f)) {
        Some(content_type) => (content_type.map(|c| c.as_bytes().to_vec()), rest),
        None => match rest.iter().position(|&b| b == b'\n') {
            Some(end) => (Some(rest[..end].to_vec()), &rest[end + 1..]),
            None => (Some(rest.to_vec()), &[][..]),
        },
    };
    let mut headers = HeaderMap::new();
    if let Some(value) = content_type.and_then(|c| HeaderValue::from_bytes(&c).ok()) {
        headers.insert(CONTENT_TYPE, value);
    }
    let mime = headers
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .map(|v| v.trim().to_ascii_lowercase())
        .unwrap_or_default();
    let raw = mime.starts_with("image/") || mime == "application/octet-stream";

    let extracted = futures::executor::block_on(image_input::extract(
        &headers,
        Bytes::copy_from_slice(body),
        max_pixels,
    ));
    match extracted {
        Ok(upload) => {
            let format = image::guess_format(&upload.bytes)
                .expect("the gateway accepted bytes that are not an image");
            // The gateway reads the size only (a PNG's IHDR, not the chunks after it), so the
            // decoders may still refuse what it accepts: the model server then does, a 422
            // with no job (`tests/it/hostile.rs`). What it must never do is let through an
            // image that the decoders read as larger than the limit.
            let header =
                image::ImageReader::with_format(Cursor::new(upload.bytes.as_ref()), format)
                    .into_dimensions();
            // (A header the decoders read as empty is refused by the model server: no pixels.)
            if let Ok((width, height)) = header {
                let pixels = u64::from(width) * u64::from(height);
                assert!(
                    pixels <= max_pixels,
                    "the gateway accepted a {width}x{height} image (limit {max_pixels} pixels)"
                );
            }
            if raw {
                assert_eq!(upload.bytes, body, "a raw body must pass through untouched");
            }
            Ok(())
        }
        Err(error) => {
            let _ = error.to_string();
            assert!(
                error.status().is_client_error(),
                "request parsing failed with {error:?} ({}, {}), not a client error",
                error.code(),
                error.status()
            );
            Err(error.code().into())
        }
    }
}
