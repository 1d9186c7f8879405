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

/// `photo` as a BMP stored top to bottom: the rows flipped, the height negative (what some
/// Windows software writes). Found by fuzzing: the gateway read the height as 4 billion and
/// refused it as too large.
fn top_down_bmp(photo: &[u8]) -> Vec<u8> {
    let flipped = image::load_from_memory(photo).unwrap().flipv();
    let mut bmp = std::io::Cursor::new(Vec::new());
    flipped.write_to(&mut bmp, image::ImageFormat::Bmp).unwrap();
    let mut bmp = bmp.into_inner();
    let height = i32::from_le_bytes(bmp[22..26].try_into().unwrap());
    bmp[22..26].copy_from_slice(&(-height).to_le_bytes());
    bmp
}

#[tokio::test]
async fn a_bmp_stored_top_down_is_labelled() {
    let app = spawn_app().await;
    let bmp = top_down_bmp(&photo("chelsea.jpg"));
    let body = ok_json(app.predict_raw(bmp, "image/bmp").await).await;
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

/// What is wrong with the gateway's answer to a bad request, if anything: it must be refused
/// with `status` and the error `code`, a message that mentions `mentions`, and a good request
/// must still succeed afterwards.
async fn refusal_problem(
    app: &TestApp,
    response: reqwest::Response,
    status: StatusCode,
    code: &str,
    mentions: &str,
) -> Option<String> {
    let got = response.status();
    let text = response.text().await.unwrap_or_default();
    if got != status {
        return Some(format!("answered {got}, want {status}: {text}"));
    }
    let Ok(body) = serde_json::from_str::<Value>(&text) else {
        return Some(format!("the error body is not JSON: {text}"));
    };
    if body["error"]["code"] != code {
        return Some(format!(
            "error code {}, want {code:?}: {body}",
            body["error"]["code"]
        ));
    }
    let message = body["error"]["message"].as_str().unwrap_or_default();
    if !message.to_lowercase().contains(mentions) {
        return Some(format!("message {message:?} should mention {mentions:?}"));
    }
    let good = app.predict_raw(photo("coffee.jpg"), "image/jpeg").await;
    (good.status() != StatusCode::OK)
        .then(|| format!("the gateway no longer serves: {}", good.status()))
}

/// Each kind of bad input gets its 4xx, its error code and a message saying what was wrong,
/// and the gateway keeps serving. The body limit is 200 KB here: only coffee.png (466 KB) is
/// over it.
#[tokio::test]
async fn bad_input_is_refused_with_a_clear_error() {
    let app = spawn_app_with(AppOptions {
        env: vec![("TANDEM_MAX_BODY_BYTES".into(), "200000".into())],
        ..Default::default()
    })
    .await;
    let predict = || app.http.post(app.url("/predict"));
    let raw = |body: Vec<u8>, content_type: &str| {
        predict().header("content-type", content_type).body(body)
    };
    let jpeg = photo("chelsea.jpg");
    // Without an announced length: a chunked upload.
    let chunked = futures::stream::iter(vec![Ok::<_, std::io::Error>(photo("coffee.png"))]);
    let cases = [
        (
            "text that is not an image",
            raw(b"this is not an image at all".to_vec(), "image/jpeg"),
            StatusCode::UNPROCESSABLE_ENTITY,
            "not_an_image",
            "not an image",
        ),
        (
            "a truncated JPEG",
            raw(jpeg[..jpeg.len() / 2].to_vec(), "image/jpeg"),
            StatusCode::UNPROCESSABLE_ENTITY,
            "image_rejected",
            "truncated",
        ),
        (
            "an empty body",
            raw(Vec::new(), "image/jpeg"),
            StatusCode::BAD_REQUEST,
            "empty_body",
            "empty",
        ),
        (
            "bad base64",
            predict().json(&serde_json::json!({ "image_data": "%%% not base64 %%%" })),
            StatusCode::BAD_REQUEST,
            "invalid_base64",
            "base64",
        ),
        (
            "JSON without image_data",
            predict().json(&serde_json::json!({ "image": "abc" })),
            StatusCode::BAD_REQUEST,
            "missing_image_data",
            "image_data",
        ),
        (
            "a body over the limit",
            raw(photo("coffee.png"), "image/png"),
            StatusCode::PAYLOAD_TOO_LARGE,
            "body_too_large",
            "limit",
        ),
        (
            "a chunked body over the limit",
            predict()
                .header("content-type", "image/png")
                .body(reqwest::Body::wrap_stream(chunked)),
            StatusCode::PAYLOAD_TOO_LARGE,
            "body_too_large",
            "limit",
        ),
        (
            "a PNG claiming 50000 x 50000 pixels (refused before decoding)",
            raw(png_claiming(50_000, 50_000), "image/png"),
            StatusCode::PAYLOAD_TOO_LARGE,
            "image_too_large",
            "50000x50000",
        ),
        (
            "an unsupported content type",
            raw(jpeg.clone(), "text/plain"),
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
            "content type",
        ),
        (
            "a multipart body without a file",
            predict().multipart(reqwest::multipart::Form::new().text("note", "no file here")),
            StatusCode::BAD_REQUEST,
            "no_file_part",
            "file",
        ),
    ];
    let count = cases.len();
    let mut failures = Vec::new();
    for (case, request, status, code, mentions) in cases {
        let problem = match request.send().await {
            Ok(response) => refusal_problem(&app, response, status, code, mentions).await,
            Err(e) => Some(format!("no answer: {e}")),
        };
        if let Some(problem) = problem {
            failures.push(format!("{case}: {problem}"));
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {count} bad inputs were not refused as they should be:\n{}",
        failures.len(),
        failures.join("\n")
    );
}
