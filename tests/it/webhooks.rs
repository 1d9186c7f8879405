//! Webhooks: a job's events POSTed to the client's URL, signed as Standard Webhooks says (checked
//! by the PyPI `standardwebhooks` package, a real peer), each event delivered once, retried
//! until the receiver takes it, surviving a gateway killed mid-delivery, and never sent where
//! the operator did not allow (no SSRF).

use std::{collections::BTreeMap, time::Duration};

use base64::Engine as _;
use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::support::{
    app::{AppOptions, TestApp, spawn_app, spawn_app_with},
    eventually,
    gateway::Gateway,
    photo,
    process::ServiceProcess,
    webhook::{Answer, Received, Receiver, verify_with_reference},
};

mod allow_list;

const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
/// A second secret (rotation): every delivery carries a signature for each.
const OLD_SECRET: &str = "whsec_eHh4eHh4eHh4eHh4eHh4eHh4eHh4eHh4eHh4eHg=";
const LONG: Duration = Duration::from_secs(60);

fn webhook_env(allow: &str) -> Vec<(String, String)> {
    [
        ("TANDEM_WEBHOOK_ALLOW", allow.to_owned()),
        ("TANDEM_WEBHOOK_SECRET", format!("{SECRET} {OLD_SECRET}")),
        ("TANDEM_WEBHOOK_RETRY_BASE_MS", "100".to_owned()),
        ("TANDEM_WEBHOOK_RETRY_MAX_MS", "400".to_owned()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v))
    .collect()
}

async fn webhook_app(allow: &str, extra: &[(&str, &str)]) -> TestApp {
    let mut env = webhook_env(allow);
    env.extend(
        extra
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned())),
    );
    spawn_app_with(AppOptions {
        env,
        ..Default::default()
    })
    .await
}

/// `POST /predict` as JSON with the webhook fields; the reply.
async fn submit_json(gateway: &Gateway, file: &str, fields: Value) -> reqwest::Response {
    let mut body = json!({
        "image_data": base64::engine::general_purpose::STANDARD.encode(photo(file))
    });
    body.as_object_mut()
        .unwrap()
        .extend(fields.as_object().unwrap().clone());
    gateway
        .http
        .post(gateway.url("/predict"))
        .json(&body)
        .timeout(LONG)
        .send()
        .await
        .unwrap()
}

/// `/predict?<params>`.
fn predict_with(gateway: &Gateway, params: &[(&str, &str)]) -> reqwest::Url {
    reqwest::Url::parse_with_params(&gateway.url("/predict"), params).unwrap()
}

async fn job_id(response: reqwest::Response) -> String {
    let status = response.status();
    let body: Value = response.json().await.unwrap();
    assert_eq!(status, StatusCode::OK, "{body}");
    body["job_id"].as_str().unwrap().to_owned()
}

async fn refused(response: reqwest::Response, code: &str) -> String {
    let status = response.status();
    let body: Value = response.json().await.unwrap();
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert_eq!(body["error"]["code"], code, "{body}");
    body["error"]["message"].as_str().unwrap().to_owned()
}

/// The record's `webhooks` entry for `event`, once it satisfies `done`.
async fn delivery(
    gateway: &Gateway,
    id: &str,
    event: &str,
    what: &str,
    done: impl Fn(&Value) -> bool,
) -> Value {
    eventually(LONG, what, || async {
        let (_, job) = gateway.job(id).await;
        let entry = job["webhooks"]
            .as_array()
            .and_then(|all| all.iter().find(|d| d["event"] == event).cloned());
        match entry {
            Some(entry) if done(&entry) => Ok(entry),
            _ => Err(job.to_string()),
        }
    })
    .await
}

fn for_job<'a>(received: &'a [Received], id: &str) -> Vec<&'a Received> {
    received
        .iter()
        .filter(|r| r.header("webhook-id").starts_with(id))
        .collect()
}

#[tokio::test]
async fn each_filtered_event_arrives_once_signed_for_every_secret() {
    let receiver = Receiver::start().await;
    let app = webhook_app("127.0.0.1/32", &[]).await;
    // JSON fields: every event.
    let all = job_id(
        submit_json(
            &app,
            "chelsea.jpg",
            json!({"webhook": receiver.url(), "webhook_events_filter": ["fast", "completed", "changed"]}),
        )
        .await,
    )
    .await;
    // A raw body, the webhook as query parameters: the default filter, `completed` only.
    let raw = job_id(
        app.http
            .post(predict_with(&app, &[("webhook", &receiver.url())]))
            .header("content-type", "image/jpeg")
            .body(photo("coffee.jpg"))
            .send()
            .await
            .unwrap(),
    )
    .await;
    // A form upload with a filter in the query.
    let form = reqwest::multipart::Form::new().part(
        "image",
        reqwest::multipart::Part::bytes(photo("rocket.jpg")).file_name("rocket.jpg"),
    );
    let upload = job_id(
        app.http
            .post(predict_with(
                &app,
                &[
                    ("webhook", &receiver.url()),
                    ("webhook_events_filter", "fast,completed"),
                ],
            ))
            .multipart(form)
            .send()
            .await
            .unwrap(),
    )
    .await;

    let final_all = app.wait_final(&all, LONG).await;
    let changed = final_all["fast"]["label"] != final_all["slow"]["label"];
    let mut expected: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
    expected.insert(
        &all,
        if changed {
            vec!["changed", "completed", "fast"]
        } else {
            vec!["completed", "fast"]
        },
    );
    expected.insert(&raw, vec!["completed"]);
    expected.insert(&upload, vec!["completed", "fast"]);
    for (id, events) in &expected {
        for event in events {
            delivery(&app, id, event, "delivered", |d| d["delivered"] == true).await;
        }
    }
    let received = receiver.received();
    for (id, events) in &expected {
        let got: Vec<&Received> = for_job(&received, id);
        let mut ids: Vec<&str> = got.iter().map(|r| r.header("webhook-id")).collect();
        ids.sort_unstable();
        let want: Vec<String> = events.iter().map(|e| format!("{id}-{e}")).collect();
        assert_eq!(
            ids, want,
            "each filtered event once, nothing else, for {id}"
        );
        for request in got {
            assert_eq!(request.path, "/hook");
            assert_eq!(request.header("content-type"), "application/json");
            // Two secrets, two `v1,` signatures.
            assert_eq!(request.header("webhook-signature").split(' ').count(), 2);
            let body = request.json();
            assert_eq!(body["id"], *id);
            // The job view, as GET /job/<id> returns it (original clients' key included).
            assert!(body[*id]["prediction"].is_string(), "{body}");
            crate::support::openapi::schema_problems("JobView", &body).unwrap();
        }
    }
    let completed = received
        .iter()
        .find(|r| r.header("webhook-id") == format!("{all}-completed"))
        .unwrap()
        .json();
    assert_eq!(completed["status"], "succeeded");
    assert_eq!(completed["slow"], final_all["slow"]);

    // The reference implementation accepts each delivery with either secret alone.
    for secret in [SECRET, OLD_SECRET] {
        verify_with_reference(secret, &received).unwrap();
    }
    assert!(verify_with_reference("whsec_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA", &received).is_err());
}

#[tokio::test]
async fn a_receiver_down_for_a_while_gets_every_delivery_with_the_same_id() {
    // A port nobody listens on yet.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let url = format!("http://127.0.0.1:{port}/hook");
    let app = webhook_app("127.0.0.1/32", &[("TANDEM_WEBHOOK_MAX_ATTEMPTS", "100")]).await;
    let mut ids = Vec::new();
    for file in ["chelsea.jpg", "coffee.jpg", "astronaut.jpg"] {
        ids.push(job_id(submit_json(&app, file, json!({"webhook": url})).await).await);
    }
    // Refused connections, retried and recorded.
    for id in &ids {
        let entry = delivery(&app, id, "completed", "failed attempts recorded", |d| {
            d["attempts"].as_u64() >= Some(2)
        })
        .await;
        assert_eq!(entry["delivered"], false);
        assert!(
            entry["last_error"]
                .as_str()
                .unwrap()
                .contains("could not connect"),
            "{entry}"
        );
    }
    // Up, but failing twice more (a 503, then a 500) before it takes them.
    let receiver = Receiver::start_on(port).await;
    receiver.answer(&[
        Answer::Status(503),
        Answer::Status(500),
        Answer::Status(200),
    ]);
    for id in &ids {
        let entry = delivery(&app, id, "completed", "delivered", |d| {
            d["delivered"] == true
        })
        .await;
        assert_eq!(entry["last_status"], 200);
        assert!(entry["attempts"].as_u64().unwrap() >= 3, "{entry}");
    }
    let received = receiver.received();
    for id in &ids {
        let got = for_job(&received, id);
        assert!(!got.is_empty());
        // Every attempt of one event carries the same webhook-id (and the same body).
        assert!(
            got.iter()
                .all(|r| r.header("webhook-id") == format!("{id}-completed"))
        );
        assert!(got.iter().all(|r| r.body == got[0].body));
        assert_eq!(got.iter().filter(|r| r.answered == 200).count(), 1);
    }
    assert_eq!(received.iter().filter(|r| r.answered >= 500).count(), 2);
    verify_with_reference(SECRET, &received).unwrap();
}

/// A gateway as a real process, with webhooks on, on a free port.
async fn gateway_process(app: &TestApp, extra: &[(&str, &str)]) -> (ServiceProcess, Gateway) {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut env: Vec<(&str, String)> = vec![
        ("TANDEM_GATEWAY_ADDR", format!("127.0.0.1:{port}")),
        ("TANDEM_NATS_URL", app.nats.url()),
        ("TANDEM_MODEL_SERVER_URL", app.model_server_url.clone()),
        ("TANDEM_ACK_WAIT_MS", "1000".to_owned()),
    ];
    let webhooks = webhook_env("127.0.0.1/32");
    env.extend(webhooks.iter().map(|(k, v)| (k.as_str(), v.clone())));
    env.extend(extra.iter().map(|(k, v)| (*k, (*v).to_owned())));
    let process = ServiceProcess::spawn("tandem-gateway", &env);
    let gateway = Gateway::new(&format!("http://127.0.0.1:{port}"), reqwest::Client::new());
    gateway.wait_ready().await;
    (process, gateway)
}

#[tokio::test]
async fn a_gateway_killed_mid_delivery_loses_nothing() {
    // The in-process gateway has webhooks off: only the processes deliver.
    let app = spawn_app().await;
    let receiver = Receiver::start().await;
    receiver.answer(&[Answer::Hang]);
    let slow = [("TANDEM_WEBHOOK_TIMEOUT_MS", "60000")];
    let (first, first_api) = gateway_process(&app, &slow).await;
    let id = job_id(
        submit_json(
            &first_api,
            "chelsea.jpg",
            json!({"webhook": receiver.url()}),
        )
        .await,
    )
    .await;
    // The delivery is under way: the receiver holds the request, unanswered.
    eventually(LONG, "the first attempt reaches the receiver", || async {
        match receiver.received().len() {
            0 => Err("no request yet"),
            _ => Ok(()),
        }
    })
    .await;
    drop(first); // SIGKILL
    receiver.answer(&[Answer::Status(200)]);
    let (_second, second_api) = gateway_process(&app, &slow).await;
    let entry = delivery(
        &second_api,
        &id,
        "completed",
        "delivered by the second gateway",
        |d| d["delivered"] == true,
    )
    .await;
    assert!(entry["attempts"].as_u64().unwrap() >= 2, "{entry}");
    let received = receiver.received();
    assert!(received.len() >= 2);
    assert!(
        received
            .iter()
            .all(|r| r.header("webhook-id") == format!("{id}-completed"))
    );
    assert_eq!(received.iter().filter(|r| r.answered == 200).count(), 1);
    verify_with_reference(SECRET, &received).unwrap();
}

#[tokio::test]
async fn the_cli_asks_for_a_webhook() {
    let receiver = Receiver::start().await;
    let app = webhook_app("127.0.0.1/32", &[]).await;
    let output = tokio::process::Command::new(crate::support::process::service_binary("tandem"))
        .args([
            "--url",
            &app.base,
            "predict",
            "--json",
            "--webhook",
            &receiver.url(),
        ])
        .arg(crate::support::workspace_root().join("tests/data/chelsea.jpg"))
        .env_remove("TANDEM_URL")
        .kill_on_drop(true)
        .output()
        .await
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let fast: Value = serde_json::from_str(stdout.lines().next().unwrap()).unwrap();
    let id = fast["job_id"].as_str().unwrap().to_owned();
    delivery(&app, &id, "completed", "delivered", |d| {
        d["delivered"] == true
    })
    .await;
    let received = receiver.delivered();
    assert_eq!(received.len(), 1);
    assert_eq!(received[0].header("webhook-id"), format!("{id}-completed"));
    verify_with_reference(SECRET, &received).unwrap();
}
