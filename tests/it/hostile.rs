//! Hostile input: every kind of bad request a client can send gets a clear 4xx with the JSON
//! body `{"error": {"code", "message"}}`, or its connection is cut off; and the gateway keeps
//! serving afterwards. The list, in one place:
//!
//! | input | answer | also in |
//! |---|---|---|
//! | not an image (raw, JSON, multipart) | 422 `not_an_image` | `fast_path` (raw) |
//! | truncated image: pixels cut / header cut | 422 `image_rejected` / `corrupt_image` | `fast_path` |
//! | a header that reads, then what no decoder accepts (a PNG's unknown critical chunk) | 422 `image_rejected` | |
//! | decompression bomb (header claims 2.5 G pixels) | 413 `image_too_large` | `fast_path` (raw) |
//! | JPEG with more scans than decoders allow (a decoding-time bomb) | 422 `image_rejected` | |
//! | body over the limit, announced or chunked, any format | 413 `body_too_large` | `fast_path` (raw) |
//! | bad base64 | 400 `invalid_base64` | `fast_path` |
//! | deeply nested JSON, huge JSON | 400 `invalid_json` (or skipped), 413 `body_too_large` | |
//! | wrong, missing or contradicted content type | 415 `unsupported_media_type`, 400 | `fast_path` |
//! | bad job ids: too long, path characters, not an id, not UTF-8 | 404 / 400 / 414 | `slow_path` |
//! | another method on a known route | 405 `method_not_allowed` | |
//! | not HTTP; a head over 64 KiB or with over 100 headers | bare 400 / 431, closed | |
//! | silent or slow request headers | connection closed after the header-read timeout | |
//! | an event-stream reader that stops reading | its connection closed; others unaffected | |
//!
//! Job ids, methods and malformed HTTP are in `requests`; the last two rows in `connections`.

mod connections;
mod requests;

use reqwest::StatusCode;
use serde_json::{Value, json};
use tandem_model_server::decode::MAX_SCANS;

use crate::support::{
    app::{AppOptions, TestApp, spawn_app_with},
    gateway::ApiRequest,
    photo, png_claiming,
};

/// No slow-worker (nothing here needs one) and optional settings.
pub async fn app_with(env: &[(&str, &str)]) -> TestApp {
    spawn_app_with(AppOptions {
        workers: 0,
        env: env
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect(),
        ..Default::default()
    })
    .await
}

/// Checks a refusal: its status, its JSON error code, a message for people. Returns the body.
#[track_caller]
pub fn assert_error(status: StatusCode, body: &str, want: StatusCode, code: &str) -> Value {
    assert_eq!(status, want, "{body}");
    let body: Value = serde_json::from_str(body)
        .unwrap_or_else(|e| panic!("the error body is not JSON ({e}): {body}"));
    assert_eq!(body["error"]["code"], code, "{body}");
    let message = body["error"]["message"].as_str().unwrap_or("");
    assert!(!message.is_empty(), "{body}");
    body
}

/// Sends `request` and checks the refusal.
pub async fn refused(request: ApiRequest, want: StatusCode, code: &str) -> Value {
    let response = request.send().await.expect("the gateway answers");
    let status = response.status();
    let text = response.text().await.unwrap();
    assert_error(status, &text, want, code)
}

/// The gateway still answers, and still classifies.
pub async fn assert_still_serves(app: &TestApp) {
    let (status, _) = app.get_json("/healthz").await;
    assert_eq!(status, StatusCode::OK);
    let good = app.predict_raw(photo("coffee.jpg"), "image/jpeg").await;
    assert_eq!(
        good.status(),
        StatusCode::OK,
        "the gateway still classifies"
    );
}

fn post(app: &TestApp) -> ApiRequest {
    app.http.post(app.url("/predict"))
}

fn json_image(bytes: &[u8]) -> Value {
    use base64::Engine as _;
    json!({ "image_data": base64::engine::general_purpose::STANDARD.encode(bytes) })
}

fn multipart(bytes: Vec<u8>) -> reqwest::multipart::Form {
    reqwest::multipart::Form::new().part(
        "image",
        reqwest::multipart::Part::bytes(bytes).file_name("upload.jpg"),
    )
}

#[tokio::test]
async fn data_that_is_not_an_image_is_refused_in_every_format() {
    let app = app_with(&[]).await;
    let text = b"GIF89 is not enough: this is plain text".to_vec();
    let body = refused(
        post(&app).json(&json_image(&text)),
        StatusCode::UNPROCESSABLE_ENTITY,
        "not_an_image",
    )
    .await;
    assert!(body.get("job_id").is_none(), "no job for a refused image");
    refused(
        post(&app).multipart(multipart(text.clone())),
        StatusCode::UNPROCESSABLE_ENTITY,
        "not_an_image",
    )
    .await;
    refused(
        post(&app)
            .header("content-type", "application/octet-stream")
            .body(text),
        StatusCode::UNPROCESSABLE_ENTITY,
        "not_an_image",
    )
    .await;
    assert_still_serves(&app).await;
}

#[tokio::test]
async fn truncated_images_are_refused() {
    let app = app_with(&[]).await;
    // Pixels cut off: the header reads, the model server cannot decode it.
    let jpeg = photo("chelsea.jpg");
    let body = refused(
        post(&app).json(&json_image(&jpeg[..jpeg.len() / 3])),
        StatusCode::UNPROCESSABLE_ENTITY,
        "image_rejected",
    )
    .await;
    assert!(body.get("job_id").is_none(), "{body}");
    // Cut inside the header: refused by the gateway without calling the model.
    let png = photo("chelsea.png");
    refused(
        post(&app)
            .header("content-type", "image/png")
            .body(png[..20].to_vec()),
        StatusCode::UNPROCESSABLE_ENTITY,
        "corrupt_image",
    )
    .await;
    assert_still_serves(&app).await;
}

/// A 2 x 2 PNG with a chunk before its pixels that no decoder knows and none may skip (`DIAT`:
/// an upper-case first letter marks a chunk critical).
fn png_with_unknown_critical_chunk() -> Vec<u8> {
    use tandem_test_images::{PNG_SIGNATURE, png_chunk};
    let claimed = png_claiming(2, 2);
    let ihdr_end = PNG_SIGNATURE.len() + 12 + 13;
    [
        &claimed[..ihdr_end],
        &png_chunk(b"DIAT", b"unknown")[..],
        &claimed[ihdr_end..],
    ]
    .concat()
}

#[tokio::test]
async fn an_image_whose_header_reads_but_the_decoder_refuses_is_refused_and_withdrawn() {
    // The gateway reads a PNG's size from IHDR alone and lets it through; the model server's
    // decoder refuses the unknown critical chunk, and the client hears why, with no job.
    let app = app_with(&[]).await;
    let png = png_with_unknown_critical_chunk();
    for message in rejected_as_json_and_raw(&app, &png, "image/png").await {
        assert!(
            message.contains("DIAT"),
            "the reason names the chunk: {message}"
        );
    }
    assert_still_serves(&app).await;
}

/// Sends `image` as the JSON form and as a raw `content_type` body; both must be refused with
/// 422 `image_rejected` and no job id. Returns the two error messages.
async fn rejected_as_json_and_raw(app: &TestApp, image: &[u8], content_type: &str) -> Vec<String> {
    let mut messages = Vec::new();
    for request in [
        post(app).json(&json_image(image)),
        post(app)
            .header("content-type", content_type)
            .body(image.to_vec()),
    ] {
        let body = refused(request, StatusCode::UNPROCESSABLE_ENTITY, "image_rejected").await;
        assert!(
            body.get("job_id").is_none(),
            "no job for a refused image: {body}"
        );
        messages.push(body["error"]["message"].as_str().unwrap().to_owned());
    }
    messages
}

/// `jpeg` with `count` more scans before its end marker: each a start-of-scan segment (one
/// component, the AC band, successive approximation) and one byte of entropy-coded data.
fn with_extra_scans(jpeg: &[u8], count: usize) -> Vec<u8> {
    const SCAN: [u8; 11] = [0xFF, 0xDA, 0, 8, 1, 1, 0, 1, 63, 0x10, 0x00];
    let (body, eoi) = jpeg.split_at(jpeg.len() - 2);
    assert_eq!(eoi, [0xFF, 0xD9]);
    [body, &SCAN.repeat(count), eoi].concat()
}

#[tokio::test]
async fn a_jpeg_with_too_many_scans_is_refused_before_decoding() {
    let app = app_with(&[]).await;
    // chelsea.jpg has one scan: MAX_SCANS more are one over the limit.
    let crafted = with_extra_scans(&photo("chelsea.jpg"), MAX_SCANS);
    for message in rejected_as_json_and_raw(&app, &crafted, "image/jpeg").await {
        assert!(
            message.contains(&format!("more than {MAX_SCANS} scans")),
            "{message}"
        );
    }
    assert_still_serves(&app).await;
}

#[tokio::test]
async fn a_decompression_bomb_is_refused_before_decoding_in_every_format() {
    let app = app_with(&[]).await;
    let bomb = png_claiming(50_000, 50_000);
    for request in [
        post(&app).json(&json_image(&bomb)),
        post(&app).multipart(multipart(bomb.clone())),
    ] {
        let body = refused(request, StatusCode::PAYLOAD_TOO_LARGE, "image_too_large").await;
        let message = body["error"]["message"].as_str().unwrap();
        assert!(message.contains("50000x50000"), "{message}");
    }
    assert_still_serves(&app).await;
}

#[tokio::test]
async fn a_body_over_the_limit_is_refused_in_every_format_announced_or_not() {
    let app = app_with(&[("TANDEM_MAX_BODY_BYTES", "100000")]).await;
    let big = photo("coffee.png"); // 466 KB
    refused(
        post(&app).json(&json_image(&big)),
        StatusCode::PAYLOAD_TOO_LARGE,
        "body_too_large",
    )
    .await;
    refused(
        post(&app).multipart(multipart(big.clone())),
        StatusCode::PAYLOAD_TOO_LARGE,
        "body_too_large",
    )
    .await;
    // Chunked, no Content-Length: counted as it arrives.
    let chunks = big
        .chunks(16 * 1024)
        .map(|c| Ok::<_, std::io::Error>(c.to_vec()));
    refused(
        post(&app)
            .header("content-type", "image/png")
            .body(reqwest::Body::wrap_stream(futures::stream::iter(
                chunks.collect::<Vec<_>>(),
            ))),
        StatusCode::PAYLOAD_TOO_LARGE,
        "body_too_large",
    )
    .await;
    assert_still_serves(&app).await;
}

#[tokio::test]
async fn bad_base64_is_refused() {
    let app = app_with(&[]).await;
    for data in ["%%% not base64 %%%", "iVBORw0KGgo=====x", "ü€"] {
        let body = refused(
            post(&app).json(&json!({ "image_data": data })),
            StatusCode::BAD_REQUEST,
            "invalid_base64",
        )
        .await;
        assert!(
            body["error"]["message"]
                .as_str()
                .unwrap()
                .contains("base64")
        );
    }
    // Not a string at all.
    refused(
        post(&app).json(&json!({ "image_data": 12345 })),
        StatusCode::BAD_REQUEST,
        "invalid_json",
    )
    .await;
    assert_still_serves(&app).await;
}

#[tokio::test]
async fn deeply_nested_json_is_refused_or_skipped_without_exhausting_the_stack() {
    let app = app_with(&[]).await;
    for depth in [200, 100_000] {
        let nested = format!("{}1{}", "[".repeat(depth), "]".repeat(depth));
        for body in [
            nested.clone(),
            format!(r#"{{"image_data": {nested}}}"#),
            format!(r#"{{"image_data": {}"#, "{\"a\":".repeat(depth)),
            format!(r#"{{"x": {}, "image_data": "aGk="}}"#, "[".repeat(depth)),
        ] {
            refused(
                post(&app)
                    .header("content-type", "application/json")
                    .body(body),
                StatusCode::BAD_REQUEST,
                "invalid_json",
            )
            .await;
        }
        // Deep nesting in a member the gateway does not read is skipped, without recursion:
        // the request is judged on its image ("hi" is not one).
        refused(
            post(&app)
                .header("content-type", "application/json")
                .body(format!(r#"{{"x": {nested}, "image_data": "aGk="}}"#)),
            StatusCode::UNPROCESSABLE_ENTITY,
            "not_an_image",
        )
        .await;
    }
    assert_still_serves(&app).await;
}

#[tokio::test]
async fn huge_json_is_refused_by_size_before_it_is_parsed() {
    let app = app_with(&[("TANDEM_MAX_BODY_BYTES", "1000000")]).await;
    // Announced as 1 GB: refused on the header alone, before a byte of the body is read.
    let head = "POST /predict HTTP/1.1\r\nHost: tandem\r\nContent-Type: application/json\r\n\
                Content-Length: 1000000000\r\n\r\n{\"padding\": \"xxxx";
    let (status, body) = connections::exchange(&app, head.as_bytes(), &[]).await;
    assert_error(
        status,
        &body,
        StatusCode::PAYLOAD_TOO_LARGE,
        "body_too_large",
    );
    // Sent chunked without end: refused once the limit is reached, not at the end.
    let head = "POST /predict HTTP/1.1\r\nHost: tandem\r\nContent-Type: application/json\r\n\
                Transfer-Encoding: chunked\r\n\r\n";
    let chunk = format!("10000\r\n{}\r\n", "x".repeat(0x10000));
    let (status, body) = connections::exchange(&app, head.as_bytes(), chunk.as_bytes()).await;
    assert_error(
        status,
        &body,
        StatusCode::PAYLOAD_TOO_LARGE,
        "body_too_large",
    );
    // Big but under the limit, with many members and no image: parsed, and said so.
    let members: Vec<String> = (0..50_000).map(|n| format!(r#""k{n}": [1, 2]"#)).collect();
    refused(
        post(&app)
            .header("content-type", "application/json")
            .body(format!("{{{}}}", members.join(","))),
        StatusCode::BAD_REQUEST,
        "missing_image_data",
    )
    .await;
    assert_still_serves(&app).await;
}

#[tokio::test]
async fn a_wrong_missing_or_contradicted_content_type_is_refused() {
    let app = app_with(&[]).await;
    let jpeg = photo("chelsea.jpg");
    for content_type in [
        &b"text/plain"[..],
        b"application/x-www-form-urlencoded",
        b"image",
        b"\xe4/\xf6",
    ] {
        let content_type = reqwest::header::HeaderValue::from_bytes(content_type).unwrap();
        refused(
            post(&app)
                .header("content-type", content_type)
                .body(jpeg.clone()),
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
        )
        .await;
    }
    // No Content-Type at all.
    refused(
        post(&app).body(jpeg.clone()),
        StatusCode::UNSUPPORTED_MEDIA_TYPE,
        "unsupported_media_type",
    )
    .await;
    // The type says JSON, the body is a JPEG; multipart without its boundary.
    refused(
        post(&app)
            .header("content-type", "application/json")
            .body(jpeg.clone()),
        StatusCode::BAD_REQUEST,
        "invalid_json",
    )
    .await;
    refused(
        post(&app)
            .header("content-type", "multipart/form-data")
            .body(jpeg),
        StatusCode::BAD_REQUEST,
        "invalid_multipart",
    )
    .await;
    assert_still_serves(&app).await;
}
