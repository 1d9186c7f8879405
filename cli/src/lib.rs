//! `tandem`, the command-line client of a Tandem gateway (two-speed image classification: a
//! fast label now, a better one a moment later). Its commands `predict`, `job` and `watch` use
//! the gateway's public HTTP API only (`POST /predict`, `GET /job/<id>`,
//! `GET /job/<id>/events`); `calibrate` talks to the model server instead (Open Inference
//! Protocol gRPC, through `tandem_core`'s model client) and writes a thresholds file in
//! `tandem_core::escalation`'s format. The services are the workspace's other packages.
//!
//! The modules:
//! - `args`: the command line (clap);
//! - `client`: the HTTP API;
//! - `events`: one connection to a job's event stream (Server-Sent Events), each event a
//!   change of the job; `follow`: that stream followed to the job's end, reconnecting;
//! - `predict`, `job`, `watch`: the gateway's commands; `calibrate`: escalation thresholds;
//! - `output`: what they print; `media`: the content type of an image file;
//! - `error`: what can go wrong, and the exit code each means.
//!
//! [`main`] is the whole program; the binary (`src/main.rs`) only calls it.

mod args;
mod calibrate;
mod client;
mod error;
mod events;
mod follow;
mod job;
mod media;
mod output;
mod predict;
mod watch;

use std::process::ExitCode;

use clap::Parser as _;

pub use args::{Cli, Command, DEFAULT_URL};
use client::Api;
pub use error::{CliError, EXIT_FAILED, EXIT_OK, EXIT_USAGE};

/// Parses the command line, runs the command and says how it went.
pub fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            // Help and version go to stdout with 0; usage errors to stderr with 2.
            let _ = e.print();
            return ExitCode::from(u8::try_from(e.exit_code()).unwrap_or(EXIT_USAGE));
        }
    };
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("tandem: error: cannot start: {e}");
            return ExitCode::from(EXIT_USAGE);
        }
    };
    ExitCode::from(runtime.block_on(run(cli)))
}

/// Runs a parsed command line; returns the exit code.
pub async fn run(cli: Cli) -> u8 {
    let result = match (cli.command, Api::new(&cli.url, cli.api_key.as_deref())) {
        // The model server's, not the gateway's: `--url` plays no part.
        (Command::Calibrate(args), _) => calibrate::run(args).await,
        (_, Err(e)) => Err(e),
        (Command::Predict(args), Ok(api)) => {
            let api = api.with_webhook(args.webhook.clone());
            Ok(predict::run(&api, args).await)
        }
        (Command::Job(args), Ok(api)) => job::run(&api, args).await,
        (Command::Watch(args), Ok(api)) => watch::run(&api, args).await,
    };
    result.unwrap_or_else(|e| {
        eprintln!("tandem: error: {e}");
        e.exit_code()
    })
}
