//! Counting what came of a case's load: every accepted job must end `succeeded` with the right
//! label (else it is **lost**), and none may have its result written more than once or be
//! created twice for one submission (**duplicated**). One table row per case is printed (to
//! stderr, past the test harness's capture) and written to `target/tmp/faults/<case>.md`.

use std::{
    collections::{BTreeMap, BTreeSet},
    io::Write as _,
    time::{Duration, Instant},
};

use async_nats::jetstream;
use futures::StreamExt as _;
use serde_json::Value;
use tandem_core::nats::JOBS_BUCKET;

use crate::{gateway::Gateway, load::Submission};

/// How long accepted jobs may take to end once the load stopped.
const SETTLE: Duration = Duration::from_secs(90);

/// One case's numbers.
#[derive(Debug)]
pub struct Tally {
    pub case: &'static str,
    /// Jobs accepted (one per submission that got a job id).
    pub submitted: usize,
    /// Attempts the gateway refused or did not answer, retried by the client.
    pub retried: u32,
    pub succeeded: usize,
    pub lost: usize,
    pub duplicated: usize,
    /// Jobs delivered to a worker more than once (the record's `attempts` > 1).
    pub redelivered: usize,
    pub seconds: f64,
    /// What went wrong, job by job (empty when nothing did).
    pub problems: Vec<String>,
}

impl Tally {
    pub const HEADER: &str = "| case | submitted | retried | succeeded | lost | duplicated | redelivered | seconds | notes |\n|---|---|---|---|---|---|---|---|---|";

    /// The table row.
    pub fn row(&self, notes: &str) -> String {
        format!(
            "| {} | {} | {} | {} | {} | {} | {} | {:.1} | {notes} |",
            self.case,
            self.submitted,
            self.retried,
            self.succeeded,
            self.lost,
            self.duplicated,
            self.redelivered,
            self.seconds
        )
    }

    /// Prints the row, records it in the report file, and asserts the bar: every submission
    /// accepted, 0 lost, 0 duplicated.
    pub fn report_and_check(&self, notes: &str) {
        static HEADER: std::sync::Once = std::sync::Once::new();
        HEADER.call_once(|| {
            for line in Self::HEADER.lines() {
                let _ = writeln!(std::io::stderr(), "faults: {line}");
            }
        });
        let row = self.row(notes);
        let _ = writeln!(std::io::stderr(), "faults: {row}");
        // One file per case, rewritten each run: `cat target/tmp/faults/*.md` is the last table.
        let dir = target_tmp().join("faults");
        let slug: String = self
            .case
            .chars()
            .filter(char::is_ascii_alphanumeric)
            .take(1)
            .collect();
        let _ = std::fs::create_dir_all(&dir);
        let _ = std::fs::write(dir.join(format!("{slug}.md")), format!("{row}\n"));
        assert!(self.submitted > 0, "{}: no job was accepted", self.case);
        assert!(
            self.problems.is_empty() && self.lost == 0 && self.duplicated == 0,
            "{}: {} lost, {} duplicated:\n  {}",
            self.case,
            self.lost,
            self.duplicated,
            self.problems.join("\n  ")
        );
        assert_eq!(self.succeeded, self.submitted);
    }
}

/// Waits for every accepted job to end, then counts. `js` reads the records' history.
pub async fn tally(
    case: &'static str,
    started: Instant,
    gateway: &Gateway,
    js: &jetstream::Context,
    submissions: &[Submission],
    label: &str,
) -> Tally {
    let mut problems = Vec::new();
    let mut duplicated = 0;
    let mut jobs = BTreeSet::new();
    for submission in submissions {
        if let Some(failure) = &submission.failure {
            problems.push(format!("{}: {failure}", submission.key));
        }
        let ids: BTreeSet<&String> = submission.job_ids.iter().collect();
        if ids.len() > 1 {
            duplicated += 1;
            problems.push(format!("{}: two jobs for one key: {ids:?}", submission.key));
        }
        jobs.extend(ids.into_iter().cloned());
    }

    let finals = wait_all_final(gateway, &jobs).await;
    let (mut succeeded, mut lost, mut redelivered) = (0, 0, 0);
    for id in &jobs {
        let record = finals.get(id);
        let ok = record.is_some_and(|r| r["status"] == "succeeded" && r["slow"]["label"] == label);
        if ok {
            succeeded += 1;
        } else {
            lost += 1;
            let seen =
                record.map(|r| format!("{} {} {}", r["status"], r["slow"]["label"], r["error"]));
            let history = history(js, id).await;
            problems.push(format!(
                "job {id} did not succeed: {seen:?}; history: {history:?}"
            ));
        }
        if record.and_then(|r| r["attempts"].as_u64()).unwrap_or(0) > 1 {
            redelivered += 1;
        }
        let writes = result_writes(js, id).await;
        if writes > 1 {
            duplicated += 1;
            problems.push(format!("job {id}: its result was written {writes} times"));
        }
    }
    Tally {
        case,
        submitted: jobs.len(),
        retried: submissions.iter().map(|s| s.refused).sum(),
        succeeded,
        lost,
        duplicated,
        redelivered,
        seconds: started.elapsed().as_secs_f64(),
        problems,
    }
}

/// Each job's record once final (or as last seen, when `SETTLE` runs out).
async fn wait_all_final(gateway: &Gateway, jobs: &BTreeSet<String>) -> BTreeMap<String, Value> {
    let started = Instant::now();
    let mut last = BTreeMap::new();
    let mut pending: Vec<&String> = jobs.iter().collect();
    while !pending.is_empty() && started.elapsed() < SETTLE {
        let mut still = Vec::new();
        for id in pending {
            let response = gateway
                .http
                .get(gateway.url(&format!("/job/{id}")))
                .timeout(Duration::from_secs(5))
                .send()
                .await;
            let record = match response {
                Ok(r) if r.status().is_success() => r.json::<Value>().await.ok(),
                _ => None,
            };
            let done = record.as_ref().is_some_and(|r| {
                matches!(
                    r["status"].as_str(),
                    Some("succeeded" | "failed" | "cancelled")
                )
            });
            if let Some(record) = record {
                last.insert(id.clone(), record);
            }
            if !done {
                still.push(id);
            }
        }
        pending = still;
        if !pending.is_empty() {
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
    last
}

/// The record's revisions, `(revision, status, attempts)`, oldest first.
async fn history(js: &jetstream::Context, id: &str) -> Vec<(u64, String, u64)> {
    let kv = js
        .get_key_value(JOBS_BUCKET)
        .await
        .expect("the jobs bucket");
    let mut entries = kv.history(id).await.expect("the record's history");
    let mut revisions = Vec::new();
    while let Ok(Some(entry)) = tokio::time::timeout(Duration::from_secs(2), entries.next()).await {
        let entry = entry.expect("a history entry");
        let value: Value = serde_json::from_slice(&entry.value).unwrap_or(Value::Null);
        revisions.push((
            entry.revision,
            value["status"].as_str().unwrap_or_default().to_owned(),
            value["attempts"].as_u64().unwrap_or_default(),
        ));
        if entry.delta == 0 {
            break;
        }
    }
    revisions
}

/// How many times a slow result was written into the job's record, from the KV history (the
/// bucket keeps 10 revisions: queued, running, succeeded and a few retries fit). A revision
/// whose `slow` differs from the one before is a write; the gateway adding the fast answer after
/// the worker finished keeps `slow` as it was, so it is not one.
async fn result_writes(js: &jetstream::Context, id: &str) -> usize {
    let kv = js
        .get_key_value(JOBS_BUCKET)
        .await
        .expect("the jobs bucket");
    let mut entries = kv.history(id).await.expect("the record's history");
    let mut slow = vec![Value::Null];
    while let Ok(Some(entry)) = tokio::time::timeout(Duration::from_secs(2), entries.next()).await {
        let entry = entry.expect("a history entry");
        let value: Value = serde_json::from_slice(&entry.value).unwrap_or(Value::Null);
        slow.push(value["slow"].clone());
        if entry.delta == 0 {
            break;
        }
    }
    slow.windows(2)
        .filter(|w| !w[1].is_null() && w[1] != w[0])
        .count()
}

/// `target/tmp` (cargo's `CARGO_TARGET_TMPDIR`, which only test targets get at compile time):
/// found from the running test binary, `target/<profile>/deps/<test>`.
fn target_tmp() -> std::path::PathBuf {
    let exe = std::env::current_exe().unwrap_or_default();
    let target = exe
        .ancestors()
        .nth(3)
        .unwrap_or(std::path::Path::new("target"));
    target.join("tmp")
}
