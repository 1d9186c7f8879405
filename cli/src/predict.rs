//! `tandem predict IMAGE...`: each image's fast label at once; with `--wait`, each slow label
//! as it arrives, every image's events streamed concurrently; with `--wait-seconds N`, the
//! gateway holds each reply up to N s for the slow label (`Prefer: wait`).

use std::{
    hash::{BuildHasher as _, Hasher as _},
    path::{Path, PathBuf},
    pin::pin,
    time::Duration,
};

use futures::{StreamExt as _, stream::FuturesUnordered};
use serde_json::{Map, Value, json};

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
            (
                path,
                submit(api, &printer, path, &key, args.wait_seconds).await,
            )
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
                // With --wait-seconds, a job final in time is in the reply (`job`).
                let fast = submitted.and_then(|reply| {
                    let job = reply.get("job").filter(|job| job.is_object()).cloned();
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
    let result = follow::follow(api, &job_id, |progress| match progress {
        Progress::Update(update) => printer.change(&file, &job_id, update),
        Progress::Reconnecting(reconnecting) => {
            printer.out.note(&format!("{file}: {reconnecting}"));
        }
    })
    .await;
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
        if update.status == "succeeded" {
            let slow = &update.record["slow"];
            event["label"] = slow["label"].clone();
            event["score"] = slow["score"].clone();
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
        let (code, line) = match last.status.as_str() {
            "succeeded" => (
                EXIT_OK,
                format!("{file}: slow {} job {job_id}", label_score(&record["slow"])),
            ),
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
