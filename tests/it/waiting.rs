//! Waiting for the better answer: `Prefer: wait=N` on `POST /predict` (the final job in the
//! reply) and on `GET /job/<id>` (a long poll), and, while a job is queued, where it stands:
//! `queue: {ahead, eta_ms}`, counted down on a real backlog. Final records say whether the
//! slow label `changed`.

use std::time::{Duration, Instant};

use reqwest::StatusCode;
use serde_json::Value;

use crate::{
    slow_path::{FINAL, no_workers, submit},
    support::{app::TestApp, app::spawn_app, app::spawn_app_with, delay::DelayProxy, photo},
};

/// `POST /predict` of chelsea.jpg with `Prefer: <prefer>`.
async fn predict_preferring(app: &TestApp, prefer: &str) -> reqwest::Response {
    app.http
        .post(app.url("/predict"))
        .header("content-type", "image/jpeg")
        .header("prefer", prefer)
        .body(photo("chelsea.jpg"))
        .timeout(FINAL)
        .send()
        .await
        .unwrap()
}

/// `GET /job/<id>` with `Prefer: <prefer>`.
async fn get_preferring(app: &TestApp, id: &str, prefer: &str) -> reqwest::Response {
    app.http
        .get(app.url(&format!("/job/{id}")))
        .header("prefer", prefer)
        .timeout(FINAL)
        .send()
        .await
        .unwrap()
}

fn applied(response: &reqwest::Response) -> Option<&str> {
    response
        .headers()
        .get("preference-applied")
        .map(|v| v.to_str().unwrap())
}

#[tokio::test]
async fn prefer_wait_returns_the_slow_label_in_the_post_reply() {
    let app = spawn_app().await;
    let response = predict_preferring(&app, "wait=10").await;
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(applied(&response), Some("wait=10"));
    let reply: Value = response.json().await.unwrap();
    // The usual reply, and the final job with both answers.
    assert_eq!(reply["efficientnet_lite0"], "Egyptian cat");
    assert_eq!(reply["status"], "succeeded", "{reply}");
    let job = &reply["job"];
    assert_eq!(job["id"], reply["job_id"]);
    assert_eq!(job["status"], "succeeded");
    assert_eq!(job["fast"]["label"], "Egyptian cat");
    assert_eq!(job["slow"]["label"], "Egyptian cat");
    assert_eq!(job["slow"]["model"], "efficientnet_lite2");
    // Both models agree on chelsea.
    assert_eq!(job["changed"], false);
    assert!(job.get("queue").is_none());
    // GET says the same.
    let (_, record) = app.job(reply["job_id"].as_str().unwrap()).await;
    assert_eq!(record["changed"], false);
}

#[tokio::test]
async fn a_tiny_wait_returns_at_once_with_the_job_as_it_stands() {
    // No worker: the job cannot end, so the reply is the one the wait ran out with.
    let app = spawn_app_with(no_workers()).await;
    let response = predict_preferring(&app, "wait=0.01").await;
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(applied(&response), Some("wait=0.01"));
    let reply: Value = response.json().await.unwrap();
    assert_eq!(reply["status"], "queued");
    assert_eq!(reply["efficientnet_lite0"], "Egyptian cat");
    assert!(reply.get("job").is_none(), "{reply}");

    // Without Prefer, or with preferences the gateway does not know: no wait, no header.
    let response = predict_preferring(&app, "respond-async, return=minimal").await;
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(applied(&response), None);
}

#[tokio::test]
async fn get_with_prefer_wait_is_a_long_poll() {
    let mut app = spawn_app_with(no_workers()).await;
    let id = submit(&app, "chelsea.jpg").await["job_id"]
        .as_str()
        .unwrap()
        .to_owned();

    // Not final (no worker): the answer comes when the wait has passed, as the job stands.
    let response = get_preferring(&app, &id, "wait=0.5").await;
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(applied(&response), Some("wait=0.5"));
    let job: Value = response.json().await.unwrap();
    assert_eq!(job["status"], "queued");
    assert_eq!(job["queue"]["ahead"], 0, "{job}");
    assert!(job.get("changed").is_none());

    // A long poll in flight answers once the job is final: a worker starts meanwhile.
    let poll = tokio::spawn({
        let http = app.http.clone();
        let url = app.url(&format!("/job/{id}"));
        async move {
            let response = http
                .get(url)
                .header("prefer", "wait=60")
                .timeout(FINAL * 2)
                .send()
                .await
                .unwrap();
            let applied = response.headers().get("preference-applied").cloned();
            (applied, response.json::<Value>().await.unwrap())
        }
    });
    app.add_worker();
    let (applied, job) = poll.await.unwrap();
    assert_eq!(applied.unwrap(), "wait=60");
    assert_eq!(job["status"], "succeeded", "{job}");
    assert_eq!(job["slow"]["label"], "Egyptian cat");
    assert_eq!(job["changed"], false);
    assert!(job.get("queue").is_none());
}

#[tokio::test]
async fn a_bad_prefer_wait_is_refused_with_400() {
    let app = spawn_app_with(no_workers()).await;
    for bad in ["wait=abc", "wait=-1", "wait", "wait=1e3"] {
        let response = predict_preferring(&app, bad).await;
        assert_eq!(response.status(), StatusCode::BAD_REQUEST, "{bad}");
        let body: Value = response.json().await.unwrap();
        assert_eq!(body["error"]["code"], "invalid_prefer", "{bad}");
        assert!(
            body["error"]["message"].as_str().unwrap().contains("wait"),
            "{body}"
        );
    }
    let id = submit(&app, "chelsea.jpg").await["job_id"]
        .as_str()
        .unwrap()
        .to_owned();
    let response = get_preferring(&app, &id, "wait=soon").await;
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["error"]["code"], "invalid_prefer");
}

/// How long each slow job takes behind the delaying proxy (the null model itself is instant).
const JOB_TIME: Duration = Duration::from_millis(250);
/// Jobs in the backlog.
const BACKLOG: usize = 24;

#[tokio::test]
async fn the_queue_position_counts_down_and_the_eta_matches_the_wait() {
    let mut app = spawn_app_with(no_workers()).await;
    let mut ids = Vec::new();
    for _ in 0..BACKLOG {
        ids.push(
            submit(&app, "chelsea.jpg").await["job_id"]
                .as_str()
                .unwrap()
                .to_owned(),
        );
    }
    let last = ids.last().unwrap().clone();
    let position = |job: &Value| job["queue"]["ahead"].as_u64();

    // No worker yet: every job before it is ahead; no rate, so no ETA.
    let (_, job) = app.job(&last).await;
    assert_eq!(job["status"], "queued");
    assert_eq!(position(&job), Some(BACKLOG as u64 - 1), "{job}");
    assert!(job["queue"]["eta_ms"].is_null(), "{job}");
    let (_, first) = app.job(&ids[0]).await;
    assert_eq!(position(&first), Some(0));

    // Its event stream says the same, and then each new place.
    let mut events = app.events(&last).await;
    let opening = events.next_event(FINAL).await.expect("the current state");
    assert_eq!(opening.event, "queued");
    assert_eq!(position(&opening.json()), Some(BACKLOG as u64 - 1));
    let stream = tokio::spawn(async move { events.collect(FINAL).await });

    // One worker of a known pace: the slow model is the null model behind a slow link.
    let proxy = DelayProxy::start(&app.model_server_url, JOB_TIME).await;
    let slow_link = proxy.url();
    app.add_worker_with(&[
        ("TANDEM_MODEL_SERVER_URL", slow_link.as_str()),
        ("TANDEM_SLOW_MODEL", "null"),
    ]);

    // Poll: the place only goes down; once a few jobs have gone (the rate measured over a
    // while), take the ETA and measure the wait for the answer.
    let mut seen = vec![BACKLOG as u64 - 1];
    let (eta, asked) = loop {
        let (_, job) = app.job(&last).await;
        assert_eq!(job["status"], "queued", "the last job ran early: {job}");
        let ahead = position(&job).expect("a queued job's place");
        assert!(ahead <= *seen.last().unwrap(), "{seen:?} then {ahead}");
        if ahead < *seen.last().unwrap() {
            seen.push(ahead);
        }
        if let Some(eta) = job["queue"]["eta_ms"].as_u64()
            && ahead + 8 <= BACKLOG as u64
        {
            break (Duration::from_millis(eta), Instant::now());
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    };
    let done = app.wait_final(&last, FINAL).await;
    let waited = asked.elapsed();
    assert!(
        eta / 2 <= waited && waited <= eta * 2,
        "ETA {eta:?}, waited {waited:?} (places seen {seen:?})"
    );
    assert!(seen.len() >= 3, "the place counted down: {seen:?}");

    // The null model's label differs from the fast one's.
    assert_eq!(done["status"], "succeeded");
    assert_eq!(done["slow"]["label"], "null");
    assert_eq!(done["changed"], true);
    assert!(done.get("queue").is_none());

    // The stream sent the job's place again as it moved (same revision), then the end.
    let received = stream.await.unwrap();
    let places: Vec<u64> = received
        .iter()
        .filter(|e| e.event == "queued")
        .filter_map(|e| position(&e.json()))
        .collect();
    assert!(!places.is_empty(), "{received:?}");
    assert!(places.windows(2).all(|w| w[0] > w[1]), "{places:?}");
    let end = received.last().unwrap().json();
    assert_eq!(end["changed"], true);
}
