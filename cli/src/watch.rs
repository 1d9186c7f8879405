//! `tandem watch ID`: a job's changes as they happen, until it is final.

use serde_json::json;

use crate::{
    args::WatchArgs,
    client::Api,
    error::CliError,
    events::Update,
    follow::{self, Progress},
    job::exit_code,
    output::{Out, label_score},
};

/// Streams the job's events; exit code 1 when it failed or was cancelled.
pub async fn run(api: &Api, args: WatchArgs) -> Result<u8, CliError> {
    let out = Out::plain();
    let last = follow::follow(api, &args.id, |progress| match progress {
        Progress::Update(update) if args.json => out.json(&json!({
            "event": update.status,
            "job_id": update.record["id"].as_str().unwrap_or(&args.id),
            "revision": update.revision_number(),
            "record": update.record,
        })),
        Progress::Update(update) => out.line(&line(update)),
        Progress::Reconnecting(reconnecting) => out.note(&reconnecting.to_string()),
    })
    .await?;
    Ok(exit_code(&last.status))
}

/// `running    attempt 1`, `succeeded  Egyptian cat (0.912) (decided by slow model)`, ...
fn line(update: &Update) -> String {
    let record = &update.record;
    let error = record["error"].as_str();
    let detail = match update.status.as_str() {
        "queued" if record["fast"].is_object() => {
            format!("fast {}", label_score(&record["fast"]))
        }
        "running" => {
            let mut text = format!("attempt {}", record["attempts"].as_u64().unwrap_or(0));
            if let Some(error) = error {
                text.push_str(&format!(" (last try: {error})"));
            }
            text
        }
        "succeeded" | "expired" => {
            let (who, answer) = crate::predict::decided(record);
            format!("{} (decided by {who})", label_score(answer))
        }
        "failed" => error.unwrap_or("no reason given").to_owned(),
        _ => String::new(),
    };
    format!("{:<10} {detail}", update.status)
        .trim_end()
        .to_owned()
}
