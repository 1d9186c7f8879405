//! The `tandem` command-line client: the real binary against the real service.
//!
//! `tandem predict IMAGE...` prints each image's fast label at once and, with `--wait`, its
//! slow label as it arrives; `tandem job ID` prints a job; `tandem watch ID` follows one to its
//! end. Exit codes: 0 all well, 1 a job failed or the gateway refused, 2 usage, files, network.

use std::{process::Output, time::Duration};

use serde_json::Value;

use crate::support::{
    app::{AppOptions, spawn_app, spawn_app_with},
    process::{assert_exit, stderr, stdout},
    workspace_root,
};

/// Longest a command may take (a slow label comes within seconds on 2 busy cores).
const LIMIT: Duration = Duration::from_secs(120);

/// Runs `tandem ARGS...` from the workspace root (asynchronously: the service runs on this
/// test's runtime) with `TANDEM_URL` unset.
async fn tandem(args: &[&str]) -> Output {
    let mut command =
        tokio::process::Command::new(crate::support::process::service_binary("tandem"));
    command
        .args(args)
        .current_dir(workspace_root())
        .env_remove("TANDEM_URL")
        .kill_on_drop(true);
    tokio::time::timeout(LIMIT, command.output())
        .await
        .unwrap_or_else(|_| panic!("tandem {args:?} still running after {LIMIT:?}"))
        .expect("run tandem")
}

/// The lines of `text` that mention `file` and `kind` (`fast` or `slow`).
fn lines_of<'a>(text: &'a str, file: &str, kind: &str) -> Vec<&'a str> {
    text.lines()
        .filter(|line| line.starts_with(&format!("{file}: {kind} ")))
        .collect()
}

#[tokio::test]
async fn predict_wait_prints_the_fast_then_the_slow_label_of_each_image() {
    let app = spawn_app().await;
    let output = tandem(&[
        "predict",
        "--wait",
        "tests/data/chelsea.jpg",
        "tests/data/coffee.jpg",
        "--url",
        &app.base,
    ])
    .await;
    assert_exit(&output, 0);
    let text = stdout(&output);

    for (file, label) in [
        ("tests/data/chelsea.jpg", "Egyptian cat"),
        ("tests/data/coffee.jpg", "espresso"),
    ] {
        let fast = lines_of(&text, file, "fast");
        let slow = lines_of(&text, file, "slow");
        assert_eq!((fast.len(), slow.len()), (1, 1), "{text}");
        assert!(fast[0].contains(label) && slow[0].contains(label), "{text}");
        // The same job, named on both lines; its fast line first.
        let job_id = fast[0].rsplit(' ').next().unwrap();
        assert!(slow[0].ends_with(&format!("job {job_id}")), "{text}");
        assert!(slow[0].contains(" decided by slow model "), "{text}");
        let position = |line: &str| text.find(line).unwrap();
        assert!(position(fast[0]) < position(slow[0]), "{text}");

        let (_, record) = app.job(job_id).await;
        assert_eq!(record["status"], "succeeded");
        assert_eq!(record["slow"]["label"], label);
    }
    assert_eq!(text.lines().count(), 4, "{text}");
}

#[tokio::test]
async fn predict_json_then_job_and_watch_show_the_job() {
    let app = spawn_app().await;

    // --json: one object per line; without --wait, just the fast label.
    let output = tandem(&[
        "--url",
        &app.base,
        "predict",
        "--json",
        "tests/data/chelsea.jpg",
    ])
    .await;
    assert_exit(&output, 0);
    let text = stdout(&output);
    let events: Vec<Value> = text
        .lines()
        .map(|line| serde_json::from_str(line).expect("a JSON line"))
        .collect();
    assert_eq!(events.len(), 1, "{text}");
    assert_eq!(events[0]["event"], "fast");
    assert_eq!(events[0]["file"], "tests/data/chelsea.jpg");
    assert_eq!(events[0]["label"], "Egyptian cat");
    let id = events[0]["job_id"].as_str().unwrap().to_owned();
    assert_eq!(events[0]["reply"]["job_id"], id.as_str());

    // watch: every change until the final one; the slow label last.
    let output = tandem(&["watch", &id, "--url", &app.base]).await;
    assert_exit(&output, 0);
    let text = stdout(&output);
    let last = text.lines().last().unwrap_or_default();
    assert!(last.starts_with("succeeded"), "{text}");
    assert!(
        last.contains("Egyptian cat") && last.contains("decided by slow model"),
        "{text}"
    );

    // watch a finished job: just its final state.
    let output = tandem(&["watch", &id, "--json", "--url", &app.base]).await;
    assert_exit(&output, 0);
    let text = stdout(&output);
    let events: Vec<Value> = text
        .lines()
        .map(|line| serde_json::from_str(line).unwrap())
        .collect();
    assert_eq!(events.len(), 1, "{text}");
    assert_eq!(events[0]["event"], "succeeded");
    assert_eq!(events[0]["record"]["slow"]["label"], "Egyptian cat");
    assert!(events[0]["revision"].is_u64(), "{text}");

    // job: a summary, or the record as JSON.
    let output = tandem(&["job", &id, "--url", &app.base]).await;
    assert_exit(&output, 0);
    let text = stdout(&output);
    assert!(text.contains(&format!("job        {id}")), "{text}");
    assert!(text.contains("status     succeeded"), "{text}");
    assert!(text.contains("fast       Egyptian cat"), "{text}");
    assert!(text.contains("slow       Egyptian cat"), "{text}");

    let output = tandem(&["job", "--json", &id, "--url", &app.base]).await;
    assert_exit(&output, 0);
    let record: Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(record["id"], id.as_str());
    assert_eq!(record["slow"]["label"], "Egyptian cat");
    assert_eq!(record[&id]["prediction"], "Egyptian cat");

    // An unknown job: the gateway's message, exit 1.
    let unknown = "00000000-0000-4000-8000-000000000000";
    for command in ["job", "watch"] {
        let output = tandem(&[command, unknown, "--url", &app.base]).await;
        assert_exit(&output, 1);
        assert!(output.stdout.is_empty(), "{}", stdout(&output));
        let message = stderr(&output);
        assert!(
            message.contains(&format!("no job with id \"{unknown}\"")) && message.contains("404"),
            "{message}"
        );
    }

    // An image the gateway refuses: its message, exit 1.
    let output = tandem(&["predict", "Cargo.toml", "--url", &app.base]).await;
    assert_exit(&output, 1);
    assert!(
        stderr(&output).contains("Cargo.toml: the data is not an image"),
        "{}",
        stderr(&output)
    );
}

#[tokio::test]
async fn a_missing_file_is_a_clear_error_and_nothing_is_sent() {
    // Nothing listens at this URL: the files are checked first.
    let output = tandem(&[
        "predict",
        "tests/data/chelsea.jpg",
        "tests/data/no-such-image.jpg",
        "--url",
        "http://127.0.0.1:9",
    ])
    .await;
    assert_exit(&output, 2);
    assert!(output.stdout.is_empty(), "{}", stdout(&output));
    let message = stderr(&output);
    assert_eq!(
        message.trim(),
        "tandem: error: tests/data/no-such-image.jpg: file not found"
    );
}

#[tokio::test]
async fn an_unreachable_gateway_and_bad_usage_exit_2() {
    let port = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap().port()
    };
    let url = format!("http://127.0.0.1:{port}");
    let output = tandem(&["job", "00000000-0000-4000-8000-000000000000", "--url", &url]).await;
    assert_exit(&output, 2);
    let message = stderr(&output);
    assert!(
        message.contains(&format!("the Tandem gateway at {url} is unreachable")),
        "{message}"
    );

    let output = tandem(&["predict", "tests/data/chelsea.jpg", "--url", &url]).await;
    assert_exit(&output, 2);
    assert!(
        stderr(&output).contains("unreachable"),
        "{}",
        stderr(&output)
    );

    // No image, an unknown flag, a URL that is not http.
    for args in [
        &["predict"][..],
        &["predict", "--frobnicate", "x.jpg"],
        &["job", "x", "--url", "https://example.com"],
        &["predict", "--escalate", "sometimes", "x.jpg"],
        &["predict", "--escalate=", "x.jpg"],
        &["predict", "--deadline-ms", "0", "x.jpg"],
        &["predict", "--deadline-ms", "soon", "x.jpg"],
    ] {
        let output = tandem(args).await;
        assert_exit(&output, 2);
        assert!(!stderr(&output).is_empty());
    }
}

#[tokio::test]
async fn predict_wait_seconds_gets_the_slow_label_in_the_reply() {
    let app = spawn_app().await;
    // The gateway holds the reply (`Prefer: wait`) until the job is final: no event stream.
    let output = tandem(&[
        "predict",
        "--wait-seconds",
        "30",
        "tests/data/chelsea.jpg",
        "--url",
        &app.base,
    ])
    .await;
    assert_exit(&output, 0);
    let text = stdout(&output);
    let file = "tests/data/chelsea.jpg";
    let (fast, slow) = (lines_of(&text, file, "fast"), lines_of(&text, file, "slow"));
    assert_eq!((fast.len(), slow.len()), (1, 1), "{text}");
    assert!(slow[0].contains("Egyptian cat"), "{text}");

    // --json: the fast line's reply carries the final job.
    let output = tandem(&[
        "--url",
        &app.base,
        "predict",
        "--json",
        "--wait-seconds=30",
        "tests/data/chelsea.jpg",
    ])
    .await;
    assert_exit(&output, 0);
    let lines: Vec<Value> = stdout(&output)
        .lines()
        .map(|line| serde_json::from_str(line).unwrap())
        .collect();
    assert_eq!(lines[0]["event"], "fast");
    assert_eq!(lines[0]["reply"]["job"]["status"], "succeeded", "{lines:?}");
    assert_eq!(lines[1]["event"], "succeeded");
    assert_eq!(lines[1]["label"], "Egyptian cat");

    // Not a number of seconds: a usage error.
    let output = tandem(&[
        "predict",
        "--wait-seconds",
        "soon",
        "tests/data/chelsea.jpg",
    ])
    .await;
    assert_exit(&output, 2);
}

/// No slow-worker runs: a command that waited for a slow label would never end.
async fn app_without_workers() -> crate::support::app::TestApp {
    spawn_app_with(AppOptions {
        workers: 0,
        ..AppOptions::default()
    })
    .await
}

#[tokio::test]
async fn predict_escalate_never_prints_the_fast_label_as_final() {
    let app = app_without_workers().await;
    let file = "tests/data/chelsea.jpg";
    let output = tandem(&[
        "predict",
        "--wait",
        "--escalate",
        "never",
        file,
        "--url",
        &app.base,
    ])
    .await;
    assert_exit(&output, 0);
    let text = stdout(&output);
    let fast = lines_of(&text, file, "fast");
    assert_eq!(fast.len(), 2, "{text}");
    assert!(lines_of(&text, file, "slow").is_empty(), "{text}");
    // The fast label, then the same label as final, decided by the fast model.
    let job_id = fast[0].rsplit(' ').next().unwrap();
    assert!(fast[0].contains("Egyptian cat"), "{text}");
    assert!(
        fast[1].contains("Egyptian cat") && fast[1].contains(" decided by fast model "),
        "{text}"
    );
    assert!(fast[1].ends_with(&format!("job {job_id}")), "{text}");
    assert_eq!(text.lines().count(), 2, "{text}");

    let (_, record) = app.job(job_id).await;
    assert_eq!(record["status"], "succeeded", "{record}");
    assert_eq!(record["decided_by"], "fast", "{record}");
    assert_eq!(record["escalated"], false, "{record}");

    // Without --wait too: the job is final, so its final line comes at once; --json says who.
    let output = tandem(&[
        "--url",
        &app.base,
        "predict",
        "--json",
        "--escalate=never",
        file,
    ])
    .await;
    assert_exit(&output, 0);
    let lines: Vec<Value> = stdout(&output)
        .lines()
        .map(|line| serde_json::from_str(line).unwrap())
        .collect();
    assert_eq!(lines.len(), 2, "{lines:?}");
    assert_eq!(lines[0]["event"], "fast");
    assert_eq!(lines[0]["reply"]["decided_by"], "fast", "{lines:?}");
    assert_eq!(lines[1]["event"], "succeeded");
    assert_eq!(lines[1]["decided_by"], "fast model");
    assert_eq!(lines[1]["label"], "Egyptian cat");

    // `tandem job` says who decided.
    let output = tandem(&["job", job_id, "--url", &app.base]).await;
    assert_exit(&output, 0);
    assert!(
        stdout(&output).contains("decided    fast model"),
        "{}",
        stdout(&output)
    );
}

#[tokio::test]
async fn predict_deadline_ms_ends_expired_with_the_fast_label_and_exit_0() {
    let app = app_without_workers().await;
    let file = "tests/data/coffee.jpg";
    let output = tandem(&[
        "predict",
        "--wait",
        "--escalate",
        "always",
        "--deadline-ms",
        "300",
        file,
        "--url",
        &app.base,
    ])
    .await;
    assert_exit(&output, 0);
    let text = stdout(&output);
    let expired = lines_of(&text, file, "expired");
    assert_eq!(expired.len(), 1, "{text}\n{}", stderr(&output));
    assert!(
        expired[0].contains("espresso") && expired[0].contains(" decided by fast model "),
        "{text}"
    );
    let job_id = expired[0].rsplit(' ').next().unwrap();
    let (_, record) = app.job(job_id).await;
    assert_eq!(record["status"], "expired", "{record}");
    assert!(stderr(&output).contains("expired"), "{}", stderr(&output));
}
