//! The command line.

use std::path::PathBuf;

use clap::{
    Args, Parser, Subcommand,
    builder::{PossibleValuesParser, TypedValueParser as _},
};
use tandem_core::escalation::Escalate;

/// Where the gateway is when neither `--url` nor `TANDEM_URL` says.
pub const DEFAULT_URL: &str = "http://127.0.0.1:8000";

/// Tandem: a fast image label now, a better one a moment later.
///
/// Talks to a Tandem gateway over its HTTP API (`calibrate`: to the model server). Exit codes: 0
/// when all went well (a job that ended `expired`, its deadline passed with the fast label
/// final, counts as well), 1 when a job failed or was cancelled or the gateway refused a
/// request, 2 for bad usage, unreadable files and an unreachable gateway or model server.
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
    /// Run a folder of images through both models and choose the escalation threshold that
    /// keeps the skipped jobs' agreement with the slow model at --target (talks to the model
    /// server, not the gateway).
    Calibrate(CalibrateArgs),
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

    /// Whether each job goes on to the slow model: `always`, `auto` (only when the fast score
    /// is below the gateway's threshold) or `never` (the fast label is final at once). Without
    /// it, the gateway's default (TANDEM_ESCALATE) applies.
    #[arg(long, value_name = "POLICY", value_parser = parse_escalate())]
    pub escalate: Option<Escalate>,

    /// Milliseconds after submission when the slow label stops being wanted: a job not final
    /// by then ends `expired`, its fast label final (exit 0). At most the gateway's job TTL.
    #[arg(
        long,
        value_name = "MS",
        value_parser = clap::value_parser!(u64).range(1..)
    )]
    pub deadline_ms: Option<u64>,

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

/// `tandem calibrate`.
#[derive(Debug, Args)]
pub struct CalibrateArgs {
    /// The folder of images, searched recursively (symbolic links to folders are not
    /// followed); files that are not images are skipped, with a note.
    #[arg(value_name = "DIR")]
    pub dir: PathBuf,

    /// The model server's gRPC URL (Open Inference Protocol).
    #[arg(
        long,
        env = "TANDEM_MODEL_SERVER_URL",
        default_value = "http://127.0.0.1:8001",
        value_name = "URL"
    )]
    pub model_server: String,

    /// The fast model (the gateway's).
    #[arg(
        long,
        env = "TANDEM_FAST_MODEL",
        default_value = "efficientnet_lite0",
        value_name = "NAME"
    )]
    pub fast_model: String,

    /// The slow model (the slow-workers').
    #[arg(
        long,
        env = "TANDEM_SLOW_MODEL",
        default_value = "efficientnet_lite2",
        value_name = "NAME"
    )]
    pub slow_model: String,

    /// The agreement with the slow model that the jobs left to the fast model must keep, in
    /// (0, 1].
    #[arg(long, default_value_t = 0.99, value_name = "SHARE", value_parser = parse_target)]
    pub target: f64,

    /// The fewest images a class (the fast model's label) needs for a threshold of its own;
    /// smaller classes use the global threshold.
    #[arg(
        long,
        default_value_t = 10,
        value_name = "N",
        value_parser = clap::value_parser!(u32).range(1..)
    )]
    pub min_class_images: u32,

    /// Write the thresholds file here (JSON, as the gateway's `auto` escalation reads it);
    /// without it, only the table is printed.
    #[arg(long, short, value_name = "FILE")]
    pub output: Option<PathBuf>,

    /// Draw the curve (agreement and slow compute saved by threshold) into this PNG file.
    #[arg(long, value_name = "FILE.png")]
    pub plot: Option<PathBuf>,

    /// How many images are classified at once. Timings are round trips measured here: with
    /// more than 1 they include waiting on a busy model server.
    #[arg(
        long,
        default_value_t = 1,
        value_name = "N",
        value_parser = clap::value_parser!(u16).range(1..=64)
    )]
    pub concurrency: u16,
}

/// `--target`: a share in (0, 1].
fn parse_target(raw: &str) -> Result<f64, String> {
    match raw.parse::<f64>() {
        Ok(target) if target > 0.0 && target <= 1.0 => Ok(target),
        _ => Err(format!("{raw:?} is not a share in (0, 1], such as 0.99")),
    }
}

/// `--wait-seconds`: a number of seconds from 0 to 3600.
fn parse_wait_seconds(raw: &str) -> Result<f64, String> {
    match raw.parse::<f64>() {
        Ok(seconds) if seconds.is_finite() && (0.0..=3600.0).contains(&seconds) => Ok(seconds),
        _ => Err(format!("{raw:?} is not a number of seconds from 0 to 3600")),
    }
}

/// `--escalate`: one of the gateway's policies (the shared `Escalate`), listed in `--help`.
fn parse_escalate() -> impl clap::builder::TypedValueParser<Value = Escalate> {
    PossibleValuesParser::new(["always", "auto", "never"])
        .try_map(|policy| policy.parse::<Escalate>())
}
