//! Escalation: the slow model spent only where it can change the answer.
//!
//! `escalate=auto` sends a job on to the slow model only when the fast score is below the
//! threshold; `never` and `always` do as they say. A job not escalated is final at once with the
//! fast answer, and a sample of them is audited in the background. While the slow path is far
//! behind, `auto` lowers its threshold (brownout). The original clients' calls work under every
//! policy.

use std::time::Duration;

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::{
    slow_path::FINAL,
    support::{
        app::{AppOptions, TestApp, spawn_app_with},
        eventually, photo,
        sse::SseStream,
    },
};

fn app_with(workers: usize, env: &[(&str, &str)]) -> AppOptions {
    AppOptions {
        workers,
        env: env
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect(),
        ..Default::default()
    }
}

/// `POST /predict?QUERY` with a raw JPEG body; the reply's JSON.
pub async fn predict(app: &TestApp, file: &str, query: &str) -> Value {
    let response = app
        .http
        .post(app.url(&format!("/predict?{query}")))
        .header("content-type", "image/jpeg")
        .body(photo(file))
        .send()
        .await
        .unwrap();
    let status = response.status();
    let body: Value = response.json().await.unwrap();
    assert_eq!(status, StatusCode::OK, "{file} ?{query}: {body}");
    body
}

/// The value of one series (`name{labels}` exactly as exported) in a Prometheus text page.
pub fn metric(page: &str, series: &str) -> f64 {
    page.lines()
        .find_map(|line| line.strip_prefix(series)?.strip_prefix(' '))
        .map_or(0.0, |value| value.trim().parse().unwrap_or(0.0))
}

pub async fn scrape(http: &reqwest::Client, url: &str) -> String {
    http.get(url).send().await.unwrap().text().await.unwrap()
}

fn assert_skipped(reply: &Value) {
    assert_eq!(reply["status"], "succeeded", "{reply}");
    assert_eq!(reply["escalated"], false, "{reply}");
    assert_eq!(reply["decided_by"], "fast", "{reply}");
}

fn assert_escalated(reply: &Value) {
    assert_eq!(reply["escalated"], true, "{reply}");
    assert_eq!(reply["decided_by"], "slow", "{reply}");
}

#[tokio::test]
async fn at_threshold_0_9_coffee_is_not_escalated_and_chelsea_is() {
    let app = spawn_app_with(app_with(1, &[("TANDEM_ESCALATE_THRESHOLD", "0.9")])).await;

    let coffee = predict(&app, "coffee.jpg", "escalate=auto").await;
    assert!(coffee["fast"]["score"].as_f64().unwrap() >= 0.9, "{coffee}");
    assert_skipped(&coffee);
    let id = coffee["job_id"].as_str().unwrap();
    let (status, job) = app.job(id).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(job["status"], "succeeded");
    assert_eq!(job["escalation"]["policy"], "auto");
    assert_eq!(job["escalation"]["threshold"].as_f64().unwrap() as f32, 0.9);
    assert!(
        job["escalation"]["reason"]
            .as_str()
            .unwrap()
            .contains(">= threshold"),
        "{job}"
    );
    assert!(job.get("slow").is_none(), "no slow inference: {job}");
    assert_eq!(
        job[id]["prediction"], coffee["fast"]["label"],
        "the original clients' key"
    );
    assert_eq!(job["changed"], false);
    // Its event stream ends at once, with the final state.
    let mut events = SseStream::open(&app.http, &app.url(&format!("/job/{id}/events")), None).await;
    let received = events.collect(Duration::from_secs(5)).await;
    assert_eq!(received.len(), 1, "{received:?}");
    assert_eq!(received[0].event, "succeeded");

    let chelsea = predict(&app, "chelsea.jpg", "escalate=auto").await;
    assert!(
        chelsea["fast"]["score"].as_f64().unwrap() < 0.9,
        "{chelsea}"
    );
    assert_escalated(&chelsea);
    let done = app
        .wait_final(chelsea["job_id"].as_str().unwrap(), FINAL)
        .await;
    assert_eq!(done["slow"]["label"], "Egyptian cat");
    assert!(
        done["escalation"]["reason"]
            .as_str()
            .unwrap()
            .contains("< threshold"),
        "{done}"
    );
}

#[tokio::test]
async fn never_and_always_do_as_they_say_and_the_default_is_configured() {
    let app = spawn_app_with(app_with(1, &[("TANDEM_ESCALATE", "auto")])).await;
    let never = predict(&app, "chelsea.jpg", "escalate=never").await;
    assert_skipped(&never);
    let job = app
        .wait_final(never["job_id"].as_str().unwrap(), FINAL)
        .await;
    assert!(job.get("slow").is_none(), "{job}");
    assert_eq!(job["escalation"]["reason"], "escalate=never");

    let always = predict(&app, "coffee.jpg", "escalate=always").await;
    assert_escalated(&always);
    let job = app
        .wait_final(always["job_id"].as_str().unwrap(), FINAL)
        .await;
    assert_eq!(job["status"], "succeeded");
    assert!(job["slow"]["label"].is_string(), "{job}");

    // The query parameter works with every body form: a multipart upload here.
    let form = reqwest::multipart::Form::new().part(
        "image",
        reqwest::multipart::Part::bytes(photo("chelsea.jpg")).file_name("chelsea.jpg"),
    );
    let response = app
        .http
        .post(app.url("/predict?escalate=never"))
        .multipart(form)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_skipped(&response.json().await.unwrap());

    // No parameter: TANDEM_ESCALATE (auto, threshold 0.9 by default) decides.
    assert_skipped(&predict(&app, "coffee.jpg", "").await);
    assert_escalated(&predict(&app, "chelsea.jpg", "").await);
}

#[tokio::test]
async fn the_original_clients_post_then_get_works_under_every_policy() {
    use base64::Engine as _;
    let app = spawn_app_with(app_with(1, &[])).await;
    let image = base64::engine::general_purpose::STANDARD.encode(photo("chelsea.jpg"));
    for policy in ["always", "auto", "never"] {
        let response = app
            .http
            .post(app.url("/predict"))
            .json(&json!({"image_data": image, "escalate": policy}))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::OK, "{policy}");
        let reply: Value = response.json().await.unwrap();
        assert_eq!(reply["efficientnet_lite0"], "Egyptian cat", "{policy}");
        let id = reply["job_id"].as_str().unwrap().to_owned();
        let prediction = eventually(FINAL, "a prediction for the original client", || async {
            let (_, job) = app.job(&id).await;
            match job[&id]["prediction"].as_str() {
                Some(label) if !label.is_empty() => Ok(label.to_owned()),
                _ => Err(job.to_string()),
            }
        })
        .await;
        assert_eq!(prediction, "Egyptian cat", "{policy}");
    }
}

#[tokio::test]
async fn per_class_thresholds_come_from_the_thresholds_file() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("thresholds.json");
    let app = spawn_app_with(app_with(0, &[])).await;
    let coffee = predict(&app, "coffee.jpg", "escalate=never").await;
    let label = coffee["fast"]["label"].as_str().unwrap().to_owned();
    drop(app);
    // Global 0.5 would skip coffee; its own class's 0.99 escalates it.
    let thresholds = json!({"global": 0.5, "per_class": {label: 0.99}});
    std::fs::write(&file, thresholds.to_string()).unwrap();
    let path = file.display().to_string();
    let app = spawn_app_with(app_with(0, &[("TANDEM_ESCALATE_THRESHOLDS_FILE", &path)])).await;
    let reply = predict(&app, "coffee.jpg", "escalate=auto").await;
    assert_escalated(&reply);
    let (_, job) = app.job(reply["job_id"].as_str().unwrap()).await;
    assert_eq!(
        job["escalation"]["threshold"].as_f64().unwrap() as f32,
        0.99
    );
}

#[tokio::test]
async fn audited_jobs_keep_the_fast_answer_and_carry_the_slow_one_as_audit() {
    let app = spawn_app_with(app_with(
        1,
        &[
            ("TANDEM_ESCALATE_THRESHOLD", "0.9"),
            ("TANDEM_ESCALATE_AUDIT_RATE", "1"),
        ],
    ))
    .await;
    let reply = predict(&app, "coffee.jpg", "escalate=auto").await;
    assert_skipped(&reply);
    let id = reply["job_id"].as_str().unwrap().to_owned();
    let job = eventually(FINAL, "the audit's answer in the record", || async {
        let (_, job) = app.job(&id).await;
        if job["audit"]["label"].is_string() {
            Ok(job)
        } else {
            Err(job.to_string())
        }
    })
    .await;
    assert_eq!(job["audit"]["model"], "efficientnet_lite2");
    assert_eq!(job["status"], "succeeded");
    assert_eq!(job["decided_by"], "fast", "the fast answer stays final");
    assert!(job.get("slow").is_none(), "{job}");
    assert_eq!(job[&id]["prediction"], reply["fast"]["label"]);
    let agree = if job["audit"]["label"] == job["fast"]["label"] {
        "true"
    } else {
        "false"
    };
    let page = scrape(&app.http, &format!("{}/metrics", app.worker_ops[0])).await;
    let series = format!("tandem_escalation_audits_total{{agree=\"{agree}\"}}");
    assert!(metric(&page, &series) >= 1.0, "{series} in:\n{page}");
}

#[tokio::test]
async fn a_real_backlog_turns_the_brownout_on_and_auto_sheds_what_the_fast_model_is_fairly_sure_of()
{
    let app = spawn_app_with(app_with(
        1,
        &[
            ("TANDEM_ESCALATE_THRESHOLD", "0.99"),
            ("TANDEM_BROWNOUT_WAIT_MS", "500"),
            ("TANDEM_BROWNOUT_THRESHOLD", "0.3"),
        ],
    ))
    .await;
    // No backlog: chelsea (fast score about 0.4) is below 0.99, so escalated.
    let calm = predict(&app, "chelsea.jpg", "escalate=auto").await;
    assert_escalated(&calm);
    // A backlog of `always` jobs that takes the one worker several seconds.
    for _ in 0..12 {
        let batch = (0..8).map(|_| predict(&app, "rocket.jpg", "escalate=always"));
        futures::future::join_all(batch).await;
    }
    let shed = eventually(FINAL, "auto under brownout", || async {
        let reply = predict(&app, "chelsea.jpg", "escalate=auto").await;
        if reply["escalated"] == false {
            Ok(reply)
        } else {
            Err(reply.to_string())
        }
    })
    .await;
    assert_skipped(&shed);
    let (_, job) = app.job(shed["job_id"].as_str().unwrap()).await;
    assert_eq!(job["escalation"]["brownout"], true, "{job}");
    assert_eq!(job["escalation"]["threshold"].as_f64().unwrap() as f32, 0.3);
    let page = scrape(&app.http, &app.url("/metrics")).await;
    assert_eq!(metric(&page, "tandem_escalation_brownout"), 1.0, "{page}");
    // `always` is never shed.
    assert_escalated(&predict(&app, "chelsea.jpg", "escalate=always").await);
    // Once the backlog is gone, the brownout ends.
    eventually(Duration::from_secs(120), "brownout off", || async {
        let reply = predict(&app, "chelsea.jpg", "escalate=auto").await;
        if reply["escalated"] == true {
            Ok(())
        } else {
            Err(reply.to_string())
        }
    })
    .await;
}

#[tokio::test]
async fn bad_escalation_values_get_clear_400s() {
    let app = spawn_app_with(app_with(0, &[])).await;
    let cases: [(&str, Option<Value>, &str); 5] = [
        ("escalate=sometimes", None, "invalid_escalate"),
        ("deadline_ms=-5", None, "invalid_deadline"),
        ("deadline_ms=0", None, "invalid_deadline"),
        ("", Some(json!({"escalate": 3})), "invalid_escalate"),
        ("", Some(json!({"deadline_ms": -1})), "invalid_deadline"),
    ];
    for (query, body, code) in cases {
        let request = app.http.post(app.url(&format!("/predict?{query}")));
        let request = match body {
            Some(mut body) => {
                use base64::Engine as _;
                body["image_data"] = base64::engine::general_purpose::STANDARD
                    .encode(photo("coffee.jpg"))
                    .into();
                request.json(&body)
            }
            None => request
                .header("content-type", "image/jpeg")
                .body(photo("coffee.jpg")),
        };
        let response = request.send().await.unwrap();
        assert_eq!(response.status(), StatusCode::BAD_REQUEST, "{query}");
        let body: Value = response.json().await.unwrap();
        assert_eq!(body["error"]["code"], code, "{query}: {body}");
        assert!(body["error"]["message"].as_str().unwrap().len() > 10);
    }
    // The gateway is still up and serving.
    assert_skipped(&predict(&app, "coffee.jpg", "escalate=never").await);
}

#[test]
fn an_unreadable_thresholds_file_stops_the_gateway_at_start() {
    let output =
        std::process::Command::new(crate::support::process::service_binary("tandem-gateway"))
            .env(
                "TANDEM_ESCALATE_THRESHOLDS_FILE",
                "/nonexistent/thresholds.json",
            )
            .env("TANDEM_ESCALATE_THRESHOLD", "1.5")
            .output()
            .unwrap();
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("/nonexistent/thresholds.json"), "{stderr}");
    assert!(
        stderr.contains("TANDEM_ESCALATE_THRESHOLD must be between 0 and 1"),
        "{stderr}"
    );
}
