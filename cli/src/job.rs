//! `tandem job ID`: a job's record, as a summary or as JSON.

use crate::{
    args::JobArgs,
    client::Api,
    error::{CliError, EXIT_FAILED, EXIT_OK},
    output::{Out, summary},
};

/// Prints the job; exit code 1 when it failed or was cancelled.
pub async fn run(api: &Api, args: JobArgs) -> Result<u8, CliError> {
    let record = api.job(&args.id).await?;
    let out = Out::plain();
    if args.json {
        out.line(&serde_json::to_string_pretty(&record).unwrap_or_else(|_| record.to_string()));
    } else {
        out.line(&summary(&record));
    }
    Ok(exit_code(record["status"].as_str().unwrap_or("")))
}

/// 1 for a job that ended without a result, else 0.
pub fn exit_code(status: &str) -> u8 {
    match status {
        "failed" | "cancelled" => EXIT_FAILED,
        _ => EXIT_OK,
    }
}
