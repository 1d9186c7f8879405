//! Steady load: a task submits one image every `1/rate` seconds through the gateway's public
//! API, as a careful client would: each submission has its own `Idempotency-Key`, and a refused
//! or unanswered attempt (429, 503, 504, connection refused or cut, timeout) is retried with the
//! same key, after `Retry-After` or a backoff, until the gateway accepts it. At most
//! `MAX_IN_FLIGHT` submissions are open at once (a tick that finds them all busy is skipped), so
//! an overloaded machine slows the load instead of drowning in retries. What every submission
//! got is kept for the tally.

use std::{
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use backon::{ExponentialBuilder, Retryable as _};
use bytes::Bytes;
use serde_json::Value;
use tokio::{sync::watch, task::JoinSet};

/// How long one submission keeps retrying before the client gives up.
const GIVE_UP_AFTER: Duration = Duration::from_secs(60);
/// First pause between attempts of one submission (doubling up to `MAX_RETRY_DELAY`, or what
/// `Retry-After` says).
const RETRY_DELAY: Duration = Duration::from_millis(250);
const MAX_RETRY_DELAY: Duration = Duration::from_secs(2);
/// Submissions open at once, at most.
const MAX_IN_FLIGHT: usize = 16;
/// Deadline of one attempt.
const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(10);

/// One logical submission and what came of it.
#[derive(Debug, Clone, Default)]
pub struct Submission {
    pub key: String,
    /// Every job id an attempt was answered with (one, unless idempotency failed).
    pub job_ids: Vec<String>,
    /// Attempts refused or not answered, then retried.
    pub refused: u32,
    /// Why it ended without a job: gave up, or an answer no retry can fix.
    pub failure: Option<String>,
}

/// The running load.
pub struct Load {
    stop: watch::Sender<bool>,
    task: tokio::task::JoinHandle<Vec<Submission>>,
    accepted: Arc<Mutex<Vec<String>>>,
}

impl Load {
    /// Starts submitting `image` to the gateway at `base`, `rate` submissions a second.
    pub fn start(case: &'static str, base: &str, image: Vec<u8>, rate: u32) -> Self {
        let (stop, mut stopped) = watch::channel(false);
        let accepted = Arc::new(Mutex::new(Vec::new()));
        let http = reqwest::Client::new();
        let url = format!("{base}/predict");
        let image = Bytes::from(image);
        let seen = accepted.clone();
        let task = tokio::spawn(async move {
            let mut running = JoinSet::new();
            let mut submissions = Vec::new();
            let mut ticker = tokio::time::interval(Duration::from_secs(1) / rate.max(1));
            ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            let mut n = 0u32;
            loop {
                tokio::select! {
                    _ = ticker.tick() => {}
                    _ = stopped.wait_for(|s| *s) => break,
                }
                while let Some(done) = running.try_join_next() {
                    submissions.push(done.expect("a submission task panicked"));
                }
                if running.len() >= MAX_IN_FLIGHT {
                    continue;
                }
                n += 1;
                let key = format!("faults-{case}-{n}");
                running.spawn(submit(
                    http.clone(),
                    url.clone(),
                    image.clone(),
                    key,
                    seen.clone(),
                ));
            }
            while let Some(done) = running.join_next().await {
                submissions.push(done.expect("a submission task panicked"));
            }
            submissions
        });
        Self {
            stop,
            task,
            accepted,
        }
    }

    /// The job ids accepted so far, in order.
    pub fn accepted(&self) -> Vec<String> {
        self.accepted.lock().unwrap().clone()
    }

    /// Waits until at least `n` jobs were accepted (at most `timeout`).
    pub async fn wait_accepted(&self, n: usize, timeout: Duration) -> Vec<String> {
        let started = Instant::now();
        loop {
            let accepted = self.accepted();
            if accepted.len() >= n {
                return accepted;
            }
            assert!(
                started.elapsed() < timeout,
                "only {} jobs accepted after {timeout:?}",
                accepted.len()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Stops submitting new jobs and waits for the submissions in flight to end.
    pub async fn stop(self) -> Vec<Submission> {
        let _ = self.stop.send(true);
        self.task.await.expect("the load task panicked")
    }
}

/// Why an attempt did not get a job.
enum Refusal {
    /// Refused or unanswered (429, 502, 503, 504, a connection error, a body cut off): worth
    /// another try, after `Retry-After` when the gateway said.
    Retry { after: Option<Duration> },
    /// An answer no retry can fix.
    Final(String),
}

/// One submission: attempts with the same key, retried with a doubling pause (or what
/// `Retry-After` says) until one is accepted, one gets an answer no retry can fix, or
/// `GIVE_UP_AFTER` has passed.
async fn submit(
    http: reqwest::Client,
    url: String,
    image: Bytes,
    key: String,
    accepted: Arc<Mutex<Vec<String>>>,
) -> Submission {
    let started = Instant::now();
    let attempt = || async {
        let answer = http
            .post(&url)
            .header("content-type", "image/jpeg")
            .header("idempotency-key", &key)
            .body(image.clone())
            .timeout(ATTEMPT_TIMEOUT)
            .send()
            .await;
        match answer {
            Ok(response) if response.status().is_success() => {
                // A body cut off mid-way counts as no answer.
                match response.json::<Value>().await {
                    Ok(body) if body["job_id"].is_string() => {
                        Ok(body["job_id"].as_str().unwrap_or_default().to_owned())
                    }
                    _ => Err(Refusal::Retry { after: None }),
                }
            }
            Ok(response) if matches!(response.status().as_u16(), 429 | 502 | 503 | 504) => {
                Err(Refusal::Retry {
                    after: response
                        .headers()
                        .get("retry-after")
                        .and_then(|v| v.to_str().ok())
                        .and_then(|v| v.trim().parse().ok())
                        .map(Duration::from_secs),
                })
            }
            Ok(response) => {
                let status = response.status();
                let body = response.text().await.unwrap_or_default();
                Err(Refusal::Final(format!("answered {status}: {body}")))
            }
            Err(_) => Err(Refusal::Retry { after: None }),
        }
    };
    let mut retries = 0;
    let outcome = attempt
        .retry(
            ExponentialBuilder::default()
                .with_min_delay(RETRY_DELAY)
                .with_max_delay(MAX_RETRY_DELAY)
                .without_max_times(),
        )
        .when(|refusal| {
            matches!(refusal, Refusal::Retry { .. }) && started.elapsed() <= GIVE_UP_AFTER
        })
        .adjust(|refusal, backoff| match refusal {
            Refusal::Retry { after: Some(after) } => Some(*after),
            _ => backoff,
        })
        .notify(|_, _| retries += 1)
        .await;
    let mut submission = Submission {
        refused: retries,
        ..Default::default()
    };
    match outcome {
        Ok(id) => {
            accepted.lock().unwrap().push(id.clone());
            submission.job_ids.push(id);
        }
        Err(Refusal::Final(failure)) => submission.failure = Some(failure),
        Err(Refusal::Retry { .. }) => {
            submission.refused += 1;
            submission.failure = Some(format!(
                "not accepted after {} attempts in {GIVE_UP_AFTER:?}",
                submission.refused
            ));
        }
    }
    submission.key = key;
    submission
}
