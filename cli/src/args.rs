//! The command line.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

/// Where the gateway is when neither `--url` nor `TANDEM_URL` says.
pub const DEFAULT_URL: &str = "http://127.0.0.1:8000";

/// Tandem: a fast image label now, a better one a moment later.
///
/// Talks to a Tandem gateway over its HTTP API. Exit codes: 0 when all went well, 1 when a job
/// failed or was cancelled or the gateway refused a request, 2 for bad usage, unreadable files
/// and an unreachable gateway.
#[derive(Debug, Parser)]
#[command(name = "tandem", version)]
pub struct Cli {
    /// The gateway's base URL (http only).
    #[arg(
        long,
        global = true,
        env = "TANDEM_URL",
        default_value = DEFAULT_URL,
        value_name = "URL"
    )]
    pub url: String,

    /// The API key, for a gateway that requires one (sent as `Authorization: Bearer <KEY>`).
    /// Prefer the environment variable: a command line is visible to other users.
    #[arg(
        long,
        global = true,
        env = "TANDEM_API_KEY",
        hide_env_values = true,
        value_name = "KEY"
    )]
    pub api_key: Option<String>,

    #[command(subcommand)]
    pub command: Command,
}

/// What to do.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Classify images: one line per image with its fast label at once; with --wait, the slow
    /// label of each as it arrives.
    Predict(PredictArgs),
    /// Print a job: a summary, or its JSON record with --json.
    Job(JobArgs),
    /// Follow a job's changes until it is final (reconnecting if the connection drops).
    Watch(WatchArgs),
}

/// `tandem predict`.
#[derive(Debug, Args)]
pub struct PredictArgs {
    /// Image files (JPEG, PNG, WebP, GIF, BMP, TIFF).
    #[arg(required = true, value_name = "IMAGE")]
    pub images: Vec<PathBuf>,

    /// Also wait for each image's slow label, printed as each arrives.
    #[arg(long, short)]
    pub wait: bool,

    /// Have the gateway hold each reply up to SECONDS (fractions allowed; the gateway caps it
    /// at its TANDEM_MAX_WAIT_SECS) until the slow label is there (`Prefer: wait`), and print
    /// it when it comes in time. With --wait, a job not final by then is followed as usual.
    #[arg(long, value_name = "SECONDS", value_parser = parse_wait_seconds)]
    pub wait_seconds: Option<f64>,

    /// Have the gateway POST each job's final record to URL, signed (Standard Webhooks); the
    /// gateway must allow it (TANDEM_WEBHOOK_ALLOW).
    #[arg(long, value_name = "URL")]
    pub webhook: Option<String>,

    /// One JSON object per line and event (fast, each job state, error), for scripts.
    #[arg(long)]
    pub json: bool,

    /// How many images to upload at once.
    #[arg(
        long,
        default_value_t = 4,
        value_name = "N",
        value_parser = clap::value_parser!(u16).range(1..=64)
    )]
    pub concurrency: u16,
}

/// `tandem job`.
#[derive(Debug, Args)]
pub struct JobArgs {
    /// The job id (`job_id` in the `predict` reply).
    #[arg(value_name = "ID")]
    pub id: String,

    /// Print the job's record as the gateway sent it (pretty JSON).
    #[arg(long)]
    pub json: bool,
}

/// `tandem watch`.
#[derive(Debug, Args)]
pub struct WatchArgs {
    /// The job id (`job_id` in the `predict` reply).
    #[arg(value_name = "ID")]
    pub id: String,

    /// One JSON object per line and event: {"event", "job_id", "revision", "record"}.
    #[arg(long)]
    pub json: bool,
}

/// `--wait-seconds`: a number of seconds from 0 to 3600.
fn parse_wait_seconds(raw: &str) -> Result<f64, String> {
    match raw.parse::<f64>() {
        Ok(seconds) if seconds.is_finite() && (0.0..=3600.0).contains(&seconds) => Ok(seconds),
        _ => Err(format!("{raw:?} is not a number of seconds from 0 to 3600")),
    }
}
