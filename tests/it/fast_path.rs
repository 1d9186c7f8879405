//! The fast path: `POST /predict` answers with the fast model's label at once, in every request
//! format the clients use, and turns bad input into a clear 4xx.

use reqwest::StatusCode;
use serde_json::Value;

use crate::support::{
    app::{AppOptions, TestApp, spawn_app, spawn_app_with},
    photo, png_claiming,
};

const FAST: &str = "efficientnet_lite0";

fn assert_fast_label(body: &Value, want: &str) {
    assert_eq!(body[FAST], want, "{body}");
    assert_eq!(body["fast"]["label"], want, "{body}");
    assert_eq!(body["fast"]["model"], FAST);
    assert_eq!(body["fast"]["top_k"].as_array().unwrap().len(), 5, "{body}");
    let score = body["fast"]["score"].as_f64().unwrap();
    assert!(score > 0.0 && score <= 1.0, "{body}");
    assert!(body["job_id"].as_str().unwrap().len() == 36, "{body}");
}

async fn ok_json(response: reqwest::Response) -> Value {
    let status = response.status();
    let body: Value = response.json().await.unwrap();
    assert_eq!(status, StatusCode::OK, "{body}");
    body
}

#[tokio::test]
async fn chelsea_and_coffee_are_labelled_through_each_request_format() {
    let app = spawn_app().await;
    for (file, mime, want) in [
        ("chelsea.jpg", "image/jpeg", "Egyptian cat"),
        ("coffee.jpg", "image/jpeg", "espresso"),
    ] {
        let body = ok_json(app.predict_json(&photo(file)).await).await;
        assert_fast_label(&body, want);

        let form = reqwest::multipart::Form::new().part(
            "image",
            reqwest::multipart::Part::bytes(photo(file))
                .file_name(file)
                .mime_str(mime)
                .unwrap(),
        );
        let response = app
            .http
            .post(app.url("/predict"))
            .multipart(form)
            .send()
            .await
            .unwrap();
        assert_fast_label(&ok_json(response).await, want);

        let body = ok_json(app.predict_raw(photo(file), mime).await).await;
        assert_fast_label(&body, want);
    }
    // PNG works the same way.
    let body = ok_json(app.predict_raw(photo("chelsea.png"), "image/png").await).await;
    assert_fast_label(&body, "Egyptian cat");
}

#[tokio::test]
async fn the_original_clients_curl_command_works_unchanged() {
    let app = spawn_app().await;
    let dir = tempfile::tempdir().unwrap();
    let cat = dir.path().join("cat.jpg");
    std::fs::write(&cat, photo("chelsea.jpg")).unwrap();
    let script = format!(
        r#"(echo -n '{{"image_data": "'; base64 cat.jpg; echo '"}}') | curl -s -X POST -H "Content-Type: application/json" -d @- {}/predict"#,
        app.base.trim_start_matches("http://")
    );
    let output = tokio::process::Command::new("bash")
        .arg("-c")
        .arg(&script)
        .current_dir(dir.path())
        .output()
        .await
        .expect("bash and curl");
    assert!(output.status.success(), "{output:?}");
    let body: Value = serde_json::from_slice(&output.stdout)
        .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&output.stdout)));
    assert_eq!(body[FAST], "Egyptian cat", "{body}");
    assert!(body["job_id"].is_string());
}

/// Sends a bad request, checks the error, then checks that a good request still succeeds.
async fn assert_rejected(
    app: &TestApp,
    response: reqwest::Response,
    status: StatusCode,
    code: &str,
    mentions: &str,
) {
    assert_eq!(response.status(), status);
    let body: Value = response.json().await.expect("error bodies are JSON");
    assert_eq!(body["error"]["code"], code, "{body}");
    let message = body["error"]["message"].as_str().unwrap();
    assert!(
        message.to_lowercase().contains(mentions),
        "message {message:?} should mention {mentions:?}"
    );
    let good = app.predict_raw(photo("coffee.jpg"), "image/jpeg").await;
    assert_eq!(good.status(), StatusCode::OK, "the gateway still serves");
}

#[tokio::test]
async fn text_that_is_not_an_image_is_refused() {
    let app = spawn_app().await;
    let response = app
        .predict_raw(b"this is not an image at all".to_vec(), "image/jpeg")
        .await;
    assert_rejected(
        &app,
        response,
        StatusCode::UNPROCESSABLE_ENTITY,
        "not_an_image",
        "not an image",
    )
    .await;
}

#[tokio::test]
async fn a_truncated_jpeg_is_refused() {
    let app = spawn_app().await;
    let jpeg = photo("chelsea.jpg");
    let response = app
        .predict_raw(jpeg[..jpeg.len() / 2].to_vec(), "image/jpeg")
        .await;
    assert_rejected(
        &app,
        response,
        StatusCode::UNPROCESSABLE_ENTITY,
        "image_rejected",
        "truncated",
    )
    .await;
}

#[tokio::test]
async fn an_empty_body_is_refused() {
    let app = spawn_app().await;
    let response = app.predict_raw(Vec::new(), "image/jpeg").await;
    assert_rejected(
        &app,
        response,
        StatusCode::BAD_REQUEST,
        "empty_body",
        "empty",
    )
    .await;
}

#[tokio::test]
async fn bad_base64_is_refused() {
    let app = spawn_app().await;
    let response = app
        .http
        .post(app.url("/predict"))
        .json(&serde_json::json!({ "image_data": "%%% not base64 %%%" }))
        .send()
        .await
        .unwrap();
    assert_rejected(
        &app,
        response,
        StatusCode::BAD_REQUEST,
        "invalid_base64",
        "base64",
    )
    .await;
}

#[tokio::test]
async fn json_without_image_data_is_refused() {
    let app = spawn_app().await;
    let response = app
        .http
        .post(app.url("/predict"))
        .json(&serde_json::json!({ "image": "abc" }))
        .send()
        .await
        .unwrap();
    assert_rejected(
        &app,
        response,
        StatusCode::BAD_REQUEST,
        "missing_image_data",
        "image_data",
    )
    .await;
}

#[tokio::test]
async fn a_body_over_the_limit_is_refused() {
    let app = spawn_app_with(AppOptions {
        env: vec![("TANDEM_MAX_BODY_BYTES".into(), "200000".into())],
        ..Default::default()
    })
    .await;
    // coffee.png is 466 KB.
    let response = app.predict_raw(photo("coffee.png"), "image/png").await;
    assert_rejected(
        &app,
        response,
        StatusCode::PAYLOAD_TOO_LARGE,
        "body_too_large",
        "limit",
    )
    .await;
    // Also when the client does not announce the length (chunked upload).
    let stream = futures::stream::iter(vec![Ok::<_, std::io::Error>(photo("coffee.png"))]);
    let response = app
        .http
        .post(app.url("/predict"))
        .header("content-type", "image/png")
        .body(reqwest::Body::wrap_stream(stream))
        .send()
        .await
        .unwrap();
    assert_rejected(
        &app,
        response,
        StatusCode::PAYLOAD_TOO_LARGE,
        "body_too_large",
        "limit",
    )
    .await;
}

#[tokio::test]
async fn a_png_claiming_50000_by_50000_pixels_is_refused_before_decoding() {
    let app = spawn_app().await;
    let response = app
        .predict_raw(png_claiming(50_000, 50_000), "image/png")
        .await;
    assert_rejected(
        &app,
        response,
        StatusCode::PAYLOAD_TOO_LARGE,
        "image_too_large",
        "50000x50000",
    )
    .await;
}

#[tokio::test]
async fn an_unsupported_content_type_is_refused() {
    let app = spawn_app().await;
    let response = app.predict_raw(photo("chelsea.jpg"), "text/plain").await;
    assert_rejected(
        &app,
        response,
        StatusCode::UNSUPPORTED_MEDIA_TYPE,
        "unsupported_media_type",
        "content type",
    )
    .await;
}

#[tokio::test]
async fn a_multipart_body_without_a_file_is_refused() {
    let app = spawn_app().await;
    let form = reqwest::multipart::Form::new().text("note", "no file here");
    let response = app
        .http
        .post(app.url("/predict"))
        .multipart(form)
        .send()
        .await
        .unwrap();
    assert_rejected(
        &app,
        response,
        StatusCode::BAD_REQUEST,
        "no_file_part",
        "file",
    )
    .await;
}
