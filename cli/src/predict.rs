//! `tandem predict IMAGE...`: each image's fast label at once; with `--wait`, each slow label
//! as it arrives, every image's events streamed concurrently; with `--wait-seconds N`, the
//! gateway holds each reply up to N s for the slow label (`Prefer: wait`). `--escalate` and
//! `--deadline-ms` are passed on as query parameters; a job the gateway made final at once (not
//! escalated, or answered from its result cache) has its final line printed at once, and each
//! final line says who decided the label (the fast model, the cache or the slow model).

use std::{
    cell::RefCell,
    hash::{BuildHasher as _, Hasher as _},
    path::{Path, PathBuf},
    pin::pin,
    time::Duration,
};

use futures::{StreamExt as _, stream::FuturesUnordered};
use serde_json::{Map, Value, json};
use tokio::sync::Notify;

use crate::{
    args::PredictArgs,
    client::Api,
    error::{CliError, EXIT_FAILED, EXIT_OK},
    events::Update,
    follow::{self, Progress},
    media,
    output::{Out, label_score},
};

/// Times a submission refused with 429 or 503 (queue full, model busy) is tried again.
const SUBMIT_RETRIES: u32 = 3;
/// The longest `Retry-After` honoured between two tries.
const MAX_RETRY_AFTER: Duration = Duration::from_secs(30);

/// Runs `predict`; returns the exit code (the worst of every image's).
pub async fn run(api: &Api, args: PredictArgs) -> u8 {
    let api = &api
        .clone()
        .with_predict_param("escalate", args.escalate.map(|e| e.as_str().to_owned()))
        .with_predict_param("deadline_ms", args.deadline_ms.map(|ms| ms.to_string()));
    let out = Out::with_progress(args.images.len(), args.wait || args.wait_seconds.is_some());
    let printer = Printer {
        out: &out,
        json: args.json,
    };

    // Every file must be there before anything is sent.
    if let Some(exit) = printer.unreadable(&args.images) {
        return exit;
    }

    let nonce = nonce();
    let uploads = futures::stream::iter(args.images.iter().enumerate())
        .map(|(index, path)| async move {
            let key = format!("tandem-cli-{nonce:016x}-{index}");
            let submitted = submit(api, &printer, path, &key, args.wait_seconds).await;
            let submitted = match submitted {
                Ok(reply) => {
                    let job = final_job(api, &reply).await;
                    Ok((reply, job))
                }
                Err(error) => Err(error),
            };
            (path, submitted)
        })
        .buffer_unordered(usize::from(args.concurrency))
        .fuse();
    let mut uploads = pin!(uploads);
    let mut watches = FuturesUnordered::new();
    let mut exit = EXIT_OK;
    loop {
        tokio::select! {
            Some((path, submitted)) = uploads.next() => {
                let file = path.display().to_string();
                // A job final in time (--wait-seconds) or at once (not escalated, cached).
                let fast = submitted.and_then(|(reply, job)| {
                    printer.fast(&file, reply).map(|job_id| (job_id, job))
                });
                match fast {
                    Ok((job_id, job)) => {
                        out.count(|c| c.fast += 1);
                        match job {
                            Some(record) => exit = exit.max(printer.waited(&file, &job_id, record)),
                            None if args.wait => watches.push(watch(api, printer, file, job_id)),
                            None => {}
                        }
                    }
                    Err(error) => {
                        out.count(|c| c.failed += 1);
                        printer.error(&file, &error);
                        exit = exit.max(error.exit_code());
                    }
                }
            }
            Some(code) = watches.next() => {
                exit = exit.max(code);
            }
            else => break,
        }
    }
    out.finish();
    exit
}

/// The statuses after which a job changes no more.
const FINAL_STATES: [&str; 4] = ["succeeded", "failed", "cancelled", "expired"];

/// The final job of a `POST /predict` reply, when it has one: the reply's `job` (`Prefer:
/// wait`), or, for a job the gateway made final at once, the fast answer (not escalated) or the
/// record as the gateway has it (answered from the cache: both answers). An escalated job that
/// happens to be final already (the slow model beat the fast reply) is left to `--wait`, as
/// any escalated job.
async fn final_job(api: &Api, reply: &Value) -> Option<Value> {
    if let Some(job) = reply.get("job").filter(|job| job.is_object()) {
        return Some(job.clone());
    }
    let status = reply["status"].as_str()?;
    if !FINAL_STATES.contains(&status) {
        return None;
    }
    if reply["cached"] == true || status == "expired" {
        let job_id = reply["job_id"].as_str()?;
        return api.job(job_id).await.ok();
    }
    (reply["decided_by"] == "fast" && reply["escalated"] == false).then(|| {
        json!({
            "id": reply["job_id"],
            "status": status,
            "fast": reply["fast"],
            "escalated": false,
            "decided_by": "fast",
            "cached": false,
        })
    })
}

/// Who decided a final job's label, and that label: `("fast model", fast)`, `("cache",
/// slow)` or `("slow model", slow)`.
pub(crate) fn decided(record: &Value) -> (&'static str, &Value) {
    if record["cached"] == true {
        ("cache", &record["slow"])
    } else if record["decided_by"] == "fast" || record["status"] == "expired" {
        ("fast model", &record["fast"])
    } else {
        ("slow model", &record["slow"])
    }
}

/// A file that is there and not a directory (read later, when its turn comes).
fn check(path: &Path) -> Result<(), CliError> {
    let io = |source| CliError::Io {
        path: path.to_owned(),
        source,
    };
    let metadata = std::fs::metadata(path).map_err(io)?;
    if metadata.is_dir() {
        return Err(io(std::io::Error::other(
            "is a directory, not an image file",
        )));
    }
    Ok(())
}

/// Reads and sends one image; tries again, with the same idempotency key, while the gateway
/// says 429 or 503 with `Retry-After`.
async fn submit(
    api: &Api,
    printer: &Printer<'_>,
    path: &PathBuf,
    key: &str,
    wait_seconds: Option<f64>,
) -> Result<Value, CliError> {
    let image = tokio::fs::read(path).await.map_err(|source| CliError::Io {
        path: path.clone(),
        source,
    })?;
    let content_type = media::content_type(path, &image[..image.len().min(64)]);
    let mut tries = 0;
    loop {
        match api
            .predict(image.clone(), content_type, key, wait_seconds)
            .await
        {
            Err(CliError::Api {
                status: 429 | 503,
                retry_after: Some(after),
                message,
                ..
            }) if tries < SUBMIT_RETRIES => {
                tries += 1;
                let after = after.min(MAX_RETRY_AFTER);
                printer.out.note(&format!(
                    "{}: {message}; trying again in {} s",
                    path.display(),
                    after.as_secs()
                ));
                tokio::time::sleep(after).await;
            }
            result => return result,
        }
    }
}

/// Follows one job to its end, printing its slow label (or why there is none); returns its
/// exit code.
async fn watch(api: &Api, printer: Printer<'_>, file: String, job_id: String) -> u8 {
    // `follow` ends on succeeded, failed and cancelled; an `expired` job ends here.
    let expired: RefCell<Option<Update>> = RefCell::new(None);
    let seen_expired = Notify::new();
    let followed = follow::follow(api, &job_id, |progress| match progress {
        Progress::Update(update) => {
            printer.change(&file, &job_id, update);
            if update.status == "expired" {
                *expired.borrow_mut() = Some(update.clone());
                seen_expired.notify_one();
            }
        }
        Progress::Reconnecting(reconnecting) => {
            if expired.borrow().is_none() {
                printer.out.note(&format!("{file}: {reconnecting}"));
            }
        }
    });
    let result = tokio::select! {
        result = followed => result,
        () = seen_expired.notified() => Ok(expired.take().expect("set before the notification")),
    };
    match result {
        Ok(last) => printer.slow(&file, &job_id, &last),
        Err(error) => {
            printer.out.count(|c| c.failed += 1);
            printer.error(&file, &error);
            error.exit_code()
        }
    }
}

/// Prints per-image results as text or JSON lines.
#[derive(Debug, Clone, Copy)]
struct Printer<'a> {
    out: &'a Out,
    json: bool,
}

impl Printer<'_> {
    /// Reports the files of `images` that cannot be read, if any; returns the exit code then.
    fn unreadable(&self, images: &[PathBuf]) -> Option<u8> {
        let unreadable: Vec<CliError> = images.iter().filter_map(|p| check(p).err()).collect();
        let worst = unreadable.iter().map(CliError::exit_code).max()?;
        self.out.finish();
        for error in &unreadable {
            let file = match error {
                CliError::Io { path, .. } => path.display().to_string(),
                _ => String::new(),
            };
            self.error(&file, error);
        }
        Some(worst)
    }

    /// Prints the fast label of a `POST /predict` reply; returns the job id.
    fn fast(&self, file: &str, reply: Value) -> Result<String, CliError> {
        let Some(job_id) = reply["job_id"].as_str().map(str::to_owned) else {
            return Err(CliError::Protocol(format!(
                "the reply to POST /predict has no job_id: {reply}"
            )));
        };
        let fast = &reply["fast"];
        if self.json {
            self.out.json(&json!({
                "event": "fast",
                "file": file,
                "job_id": job_id,
                "label": fast["label"],
                "score": fast["score"],
                "reply": reply,
            }));
        } else {
            self.out
                .line(&format!("{file}: fast {} job {job_id}", label_score(fast)));
        }
        Ok(job_id)
    }

    /// With `--json`, a change of an image's job as a JSON line (the text shows only the end).
    fn change(&self, file: &str, job_id: &str, update: &Update) {
        if !self.json {
            return;
        }
        let mut event = json!({
            "event": update.status,
            "file": file,
            "job_id": job_id,
            "revision": update.revision_number(),
        });
        if matches!(update.status.as_str(), "succeeded" | "expired") {
            let (who, prediction) = decided(&update.record);
            event["label"] = prediction["label"].clone();
            event["score"] = prediction["score"].clone();
            event["decided_by"] = json!(who);
        }
        event["record"] = update.record.clone();
        self.out.json(&event);
    }

    /// Prints the final job a `Prefer: wait` reply carried, as a followed job's end would be;
    /// returns the exit code.
    fn waited(&self, file: &str, job_id: &str, record: Value) -> u8 {
        let update = Update {
            revision: None,
            status: record["status"].as_str().unwrap_or_default().to_owned(),
            record,
        };
        self.change(file, job_id, &update);
        self.slow(file, job_id, &update)
    }

    /// Prints how an image's job ended: its slow label, or why there is none; returns the
    /// exit code.
    fn slow(&self, file: &str, job_id: &str, last: &Update) -> u8 {
        let record = &last.record;
        let (who, prediction) = decided(record);
        let (code, line) = match last.status.as_str() {
            "succeeded" => {
                let kind = if who == "fast model" { "fast" } else { "slow" };
                (
                    EXIT_OK,
                    format!(
                        "{file}: {kind} {} decided by {who} job {job_id}",
                        label_score(prediction)
                    ),
                )
            }
            // The deadline passed before the slow label: the fast one is final.
            "expired" => {
                if !self.json {
                    let why = record["error"].as_str().unwrap_or("its deadline passed");
                    self.out
                        .note(&format!("{file}: job {job_id} expired: {why}"));
                }
                (
                    EXIT_OK,
                    format!(
                        "{file}: expired {} decided by {who} job {job_id}",
                        label_score(prediction)
                    ),
                )
            }
            "failed" => (
                EXIT_FAILED,
                format!(
                    "{file}: failed job {job_id}: {}",
                    record["error"].as_str().unwrap_or("no reason given")
                ),
            ),
            other => (EXIT_FAILED, format!("{file}: {other} job {job_id}")),
        };
        self.out.count(|c| {
            if code == EXIT_OK {
                c.refined += 1
            } else {
                c.failed += 1
            }
        });
        if !self.json {
            self.out.line(&line);
        }
        code
    }

    /// Reports an image's error: on stderr, and as a JSON line too with `--json`. A refusal
    /// that still carries the fast label (a full queue) prints that label first.
    fn error(&self, file: &str, error: &CliError) {
        let fast = match error {
            CliError::Api { body, .. } if body["fast"].is_object() => Some(&body["fast"]),
            _ => None,
        };
        if self.json {
            let mut event = Map::new();
            event.insert("event".into(), json!("error"));
            if !file.is_empty() {
                event.insert("file".into(), json!(file));
            }
            event.insert("code".into(), json!(error.code()));
            event.insert("message".into(), json!(error.to_string()));
            if let Some(status) = error.http_status() {
                event.insert("status".into(), json!(status));
            }
            if let Some(fast) = fast {
                event.insert("fast".into(), fast.clone());
            }
            self.out.json(&Value::Object(event));
        } else if let Some(fast) = fast {
            self.out
                .line(&format!("{file}: fast {} (not queued)", label_score(fast)));
        }
        if file.is_empty() || matches!(error, CliError::Io { .. }) {
            self.out.note(&format!("error: {error}"));
        } else {
            self.out.note(&format!("error: {file}: {error}"));
        }
    }
}

/// A number unique to this run, so idempotency keys of two runs never meet.
fn nonce() -> u64 {
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    hasher.write_u32(std::process::id());
    if let Ok(since) = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH) {
        hasher.write_u128(since.as_nanos());
    }
    hasher.finish()
}
