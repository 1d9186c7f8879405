//! Access control: with API keys configured, the job routes need `Authorization: Bearer <key>`.
//! A submit key may submit, cancel and read; a read key may only read. Missing or wrong keys get
//! 401 with `WWW-Authenticate: Bearer`, a read key on a submit route 403; the page, health,
//! metrics and the API description stay open. (Without keys every route is open: every other
//! test runs so.)

use std::time::Duration;

use reqwest::{Method, StatusCode};
use serde_json::Value;

use crate::{
    hostile::assert_error,
    support::{
        app::{AppOptions, TestApp, spawn_app_with},
        gateway::ApiRequest as RequestBuilder,
        photo, workspace_root,
    },
};

const SUBMIT: &str = "submit-key-7f3a9c1e5b2d4f60";
const SUBMIT_2: &str = "submit-key-second-0123456789";
const READ: &str = "read-key-0a1b2c3d4e5f6789";

async fn app_with_keys() -> TestApp {
    spawn_app_with(AppOptions {
        workers: 0,
        env: vec![
            (
                "TANDEM_API_KEYS_SUBMIT".into(),
                format!("{SUBMIT}, {SUBMIT_2}"),
            ),
            ("TANDEM_API_KEYS_READ".into(), READ.into()),
        ],
        ..Default::default()
    })
    .await
}

fn predict(app: &TestApp) -> RequestBuilder {
    app.http
        .post(app.url("/predict"))
        .header("content-type", "image/jpeg")
        .body(photo("coffee.jpg"))
}

/// The four job routes, for job `id`.
fn job_routes(app: &TestApp, id: &str) -> Vec<RequestBuilder> {
    vec![
        predict(app),
        app.http.delete(app.url(&format!("/job/{id}"))),
        app.http.get(app.url(&format!("/job/{id}"))),
        app.http.get(app.url(&format!("/job/{id}/events"))),
    ]
}

/// Sends `request`; checks the refusal and its challenge; the body must name no key.
async fn refused(request: RequestBuilder, want: StatusCode, code: &str) -> Value {
    let response = request.send().await.unwrap();
    let status = response.status();
    let challenge = response
        .headers()
        .get("www-authenticate")
        .map(|v| v.to_str().unwrap().to_owned())
        .unwrap_or_default();
    let text = response.text().await.unwrap();
    for key in [SUBMIT, SUBMIT_2, READ, "wrong-key"] {
        assert!(!text.contains(key), "the error shows a key: {text}");
    }
    assert!(challenge.starts_with("Bearer"), "{status}: {challenge:?}");
    assert_error(status, &text, want, code)
}

async fn submit_with(app: &TestApp, key: &str) -> String {
    let response = predict(app).bearer_auth(key).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let body: Value = response.json().await.unwrap();
    body["job_id"].as_str().unwrap().to_owned()
}

#[tokio::test]
async fn without_a_key_every_job_route_says_401_with_a_bearer_challenge() {
    let app = app_with_keys().await;
    let id = submit_with(&app, SUBMIT).await;
    for request in job_routes(&app, &id) {
        refused(request, StatusCode::UNAUTHORIZED, "missing_api_key").await;
    }
    // Even for ids that are not jobs: the key is checked first, so ids cannot be probed.
    for request in job_routes(&app, "not-a-job") {
        refused(request, StatusCode::UNAUTHORIZED, "missing_api_key").await;
    }
}

#[tokio::test]
async fn a_wrong_or_malformed_key_says_401_and_leaks_nothing() {
    let app = app_with_keys().await;
    let id = submit_with(&app, SUBMIT).await;
    let near_miss = format!("{}X", &SUBMIT[..SUBMIT.len() - 1]);
    for authorization in [
        "Bearer wrong-key".to_owned(),
        format!("Bearer {near_miss}"),
        format!("Bearer {SUBMIT}{SUBMIT}"),
        format!("Basic {SUBMIT}"),
        SUBMIT.to_owned(),
        "Bearer".to_owned(),
        format!("Bearer {SUBMIT} {SUBMIT}"),
    ] {
        for request in job_routes(&app, &id) {
            let body = refused(
                request.header("authorization", &authorization),
                StatusCode::UNAUTHORIZED,
                "invalid_api_key",
            )
            .await;
            let message = body["error"]["message"].as_str().unwrap();
            assert!(!message.contains(&near_miss), "{message}");
            assert!(!message.contains("submit-key"), "{message}");
        }
    }
    // Two Authorization headers are not a way around it.
    let response = predict(&app)
        .header("authorization", "Bearer wrong-key")
        .header("authorization", format!("Bearer {SUBMIT}"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn a_read_key_reads_but_cannot_submit_or_cancel() {
    let app = app_with_keys().await;
    let id = submit_with(&app, SUBMIT).await;
    let body = refused(
        predict(&app).bearer_auth(READ),
        StatusCode::FORBIDDEN,
        "insufficient_scope",
    )
    .await;
    assert!(body.get("job_id").is_none());
    refused(
        app.http
            .delete(app.url(&format!("/job/{id}")))
            .bearer_auth(READ),
        StatusCode::FORBIDDEN,
        "insufficient_scope",
    )
    .await;
    // It reads the job, which is still queued: the cancel did not happen.
    let response = app
        .http
        .get(app.url(&format!("/job/{id}")))
        .bearer_auth(READ)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let record: Value = response.json().await.unwrap();
    assert_eq!(record["status"], "queued", "{record}");
}

#[tokio::test]
async fn a_submit_key_submits_reads_and_cancels() {
    let app = app_with_keys().await;
    for key in [SUBMIT, SUBMIT_2] {
        let id = submit_with(&app, key).await;
        let read = app
            .http
            .get(app.url(&format!("/job/{id}")))
            .bearer_auth(key)
            .send()
            .await
            .unwrap();
        assert_eq!(read.status(), StatusCode::OK);
        // The scheme's case does not matter.
        let cancel = app
            .http
            .delete(app.url(&format!("/job/{id}")))
            .header("authorization", format!("bearer {key}"))
            .send()
            .await
            .unwrap();
        assert_eq!(cancel.status(), StatusCode::OK);
        let body: Value = cancel.json().await.unwrap();
        assert_eq!(body["cancelled"], true, "{body}");
    }
}

#[tokio::test]
async fn an_idempotency_key_belongs_to_the_api_key_that_sent_it() {
    let app = app_with_keys().await;
    let send = |key: &'static str| {
        predict(&app)
            .bearer_auth(key)
            .header("idempotency-key", "order-42")
            .send()
    };
    let mut ids = Vec::new();
    for key in [SUBMIT, SUBMIT, SUBMIT_2] {
        let response = send(key).await.unwrap();
        assert_eq!(response.status(), StatusCode::OK);
        let body: Value = response.json().await.unwrap();
        ids.push(body["job_id"].as_str().unwrap().to_owned());
    }
    assert_eq!(
        ids[0], ids[1],
        "a retry with the same API key gets the same job"
    );
    assert_ne!(
        ids[0], ids[2],
        "another API key's idempotency key is its own"
    );
    // An invalid idempotency key is still refused as such.
    let response = predict(&app)
        .bearer_auth(SUBMIT)
        .header("idempotency-key", "k".repeat(300))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn event_streams_need_a_key_too() {
    let app = app_with_keys().await;
    let id = submit_with(&app, SUBMIT).await;
    let url = app.url(&format!("/job/{id}/events"));
    refused(
        app.http.get(&url).header("accept", "text/event-stream"),
        StatusCode::UNAUTHORIZED,
        "missing_api_key",
    )
    .await;
    for key in [READ, SUBMIT] {
        let response = app
            .http
            .get(&url)
            .header("accept", "text/event-stream")
            .bearer_auth(key)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::OK);
        let mut body = response.bytes_stream();
        let first =
            tokio::time::timeout(Duration::from_secs(10), futures::StreamExt::next(&mut body))
                .await
                .expect("the first event at once")
                .unwrap()
                .unwrap();
        let text = String::from_utf8_lossy(&first);
        assert!(text.contains("event: queued"), "{text}");
    }
}

#[tokio::test]
async fn the_page_health_metrics_and_the_api_description_stay_open() {
    let app = app_with_keys().await;
    for path in [
        "/",
        "/assets/app.js",
        "/samples/chelsea.jpg",
        "/healthz",
        "/readyz",
        "/metrics",
        "/openapi.json",
    ] {
        let response = app.http.get(app.url(path)).send().await.unwrap();
        assert_eq!(response.status(), StatusCode::OK, "{path}");
    }
    // Unknown routes are not found, not unauthorized.
    let response = app
        .http
        .request(Method::GET, app.url("/admin"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::NOT_FOUND);
    // The description says which routes take which key.
    let (_, doc) = app.get_json("/openapi.json").await;
    assert_eq!(
        doc["components"]["securitySchemes"]["api_key"]["scheme"],
        "bearer"
    );
    assert_eq!(
        doc["paths"]["/predict"]["post"]["security"][0]["api_key"][0],
        "submit"
    );
    assert_eq!(
        doc["paths"]["/job/{id}/events"]["get"]["security"][0]["api_key"][0],
        "read"
    );
    assert!(doc["paths"]["/healthz"]["get"]["security"].is_null());
}

/// Runs the `tandem` CLI against `app` with `args` and extra environment.
async fn tandem(app: &TestApp, args: &[&str], env: &[(&str, &str)]) -> std::process::Output {
    let mut command =
        tokio::process::Command::new(crate::support::process::service_binary("tandem"));
    command
        .args(args)
        .current_dir(workspace_root())
        .env("TANDEM_URL", &app.base)
        .env_remove("TANDEM_API_KEY")
        .envs(env.iter().copied())
        .kill_on_drop(true);
    tokio::time::timeout(Duration::from_secs(120), command.output())
        .await
        .expect("tandem finishes")
        .expect("tandem runs")
}

#[tokio::test]
async fn the_cli_sends_its_key_from_the_flag_or_the_environment() {
    let app = app_with_keys().await;
    let out = tandem(&app, &["predict", "tests/data/coffee.jpg"], &[]).await;
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("missing_api_key") && stderr.contains("--api-key"),
        "{stderr}"
    );

    let out = tandem(
        &app,
        &[
            "--api-key",
            SUBMIT,
            "predict",
            "--json",
            "tests/data/coffee.jpg",
        ],
        &[],
    )
    .await;
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    let line: Value =
        serde_json::from_slice(out.stdout.split(|b| *b == b'\n').next().unwrap()).unwrap();
    let id = line["job_id"].as_str().unwrap().to_owned();

    let out = tandem(&app, &["job", &id], &[("TANDEM_API_KEY", READ)]).await;
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    let out = tandem(
        &app,
        &["predict", "tests/data/coffee.jpg"],
        &[("TANDEM_API_KEY", READ)],
    )
    .await;
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    assert!(String::from_utf8_lossy(&out.stderr).contains("insufficient_scope"));

    // Help never shows the key taken from the environment.
    let out = tandem(&app, &["--help"], &[("TANDEM_API_KEY", READ)]).await;
    let help = String::from_utf8_lossy(&out.stdout);
    assert!(help.contains("--api-key") && !help.contains(READ), "{help}");
}

#[tokio::test]
async fn in_a_browser_the_page_asks_for_the_key_then_works_with_it() {
    let app = spawn_app_with(AppOptions {
        workers: 1,
        env: vec![("TANDEM_API_KEYS_SUBMIT".into(), SUBMIT.into())],
        ..Default::default()
    })
    .await;
    let root = workspace_root();
    let run = tokio::process::Command::new("node")
        .arg(root.join("tests/browser/api_key.mjs"))
        .arg(&app.base)
        .arg(root.join("tests/data/chelsea.jpg"))
        .arg(SUBMIT)
        .current_dir(&root)
        .stdin(std::process::Stdio::null())
        .kill_on_drop(true)
        .output();
    let output = tokio::time::timeout(Duration::from_secs(200), run)
        .await
        .expect("the browser test ends within 200 s")
        .expect("node runs (see tests/browser/install.sh)");
    let transcript = format!(
        "--- stdout\n{}--- stderr\n{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(output.status.success(), "{transcript}");
    assert!(transcript.contains("refined: Egyptian cat"), "{transcript}");
}
