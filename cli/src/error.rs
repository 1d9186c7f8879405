//! `CliError`: everything that can go wrong, and the exit code each means.

use std::{fmt, path::PathBuf, time::Duration};

use serde_json::Value;

/// Everything went well.
pub const EXIT_OK: u8 = 0;
/// The server answered, but a job failed or was cancelled, or it refused a request (an image
/// that is not one, an unknown job id, a full queue).
pub const EXIT_FAILED: u8 = 1;
/// Bad usage, a local file that cannot be read, or a gateway or model server that cannot be
/// reached.
pub const EXIT_USAGE: u8 = 2;

/// A failed command.
#[derive(Debug)]
pub enum CliError {
    /// Bad arguments (a URL that is not one, say).
    Usage(String),
    /// A local file could not be read.
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    /// No connection to the gateway, or it broke, or it timed out.
    Unreachable { url: String, detail: String },
    /// An established connection broke (and reconnecting did not help).
    Disconnected(String),
    /// The gateway answered with an error (`{"error": {"code", "message"}}`).
    Api {
        status: u16,
        code: String,
        message: String,
        /// The whole reply (a 429 or 503 to `POST /predict` may carry the fast label).
        body: Value,
        retry_after: Option<Duration>,
    },
    /// The gateway answered something this client does not understand.
    Protocol(String),
    /// The model server (`calibrate`) cannot be reached, or lacks a model.
    ModelServer { url: String, detail: String },
}

impl CliError {
    /// The process exit code this error calls for.
    pub fn exit_code(&self) -> u8 {
        match self {
            Self::Api { .. } => EXIT_FAILED,
            Self::Usage(_)
            | Self::Io { .. }
            | Self::Unreachable { .. }
            | Self::Disconnected(_)
            | Self::Protocol(_)
            | Self::ModelServer { .. } => EXIT_USAGE,
        }
    }

    /// A short machine-readable name, for `--json` output.
    pub fn code(&self) -> &str {
        match self {
            Self::Usage(_) => "usage",
            Self::Io { source, .. } if source.kind() == std::io::ErrorKind::NotFound => {
                "file_not_found"
            }
            Self::Io { .. } => "io",
            Self::Unreachable { .. } => "unreachable",
            Self::Disconnected(_) => "disconnected",
            Self::Api { code, .. } => code,
            Self::Protocol(_) => "protocol",
            Self::ModelServer { .. } => "model_server",
        }
    }

    /// The HTTP status, for errors the gateway sent.
    pub fn http_status(&self) -> Option<u16> {
        match self {
            Self::Api { status, .. } => Some(*status),
            _ => None,
        }
    }

    /// Turns a transport error of a request to the gateway at `url` into a message a person
    /// can act on.
    pub fn transport(url: &str, error: &reqwest::Error) -> Self {
        Self::Unreachable {
            url: url.to_owned(),
            detail: describe_transport(error),
        }
    }
}

/// What went wrong with a request, in a few words: "cannot connect (Connection refused (os
/// error 111))", "no answer in time".
pub fn describe_transport(error: &reqwest::Error) -> String {
    let cause = root_cause(error);
    if error.is_timeout() {
        "no answer in time".to_owned()
    } else if error.is_connect() {
        format!("cannot connect ({cause})")
    } else {
        cause
    }
}

impl fmt::Display for CliError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Usage(message) | Self::Disconnected(message) | Self::Protocol(message) => {
                f.write_str(message)
            }
            Self::Io { path, source } if source.kind() == std::io::ErrorKind::NotFound => {
                write!(f, "{}: file not found", path.display())
            }
            Self::Io { path, source } => write!(f, "{}: {source}", path.display()),
            Self::Unreachable { url, detail } => write!(
                f,
                "the Tandem gateway at {url} is unreachable: {detail} (is it running? set --url or TANDEM_URL)"
            ),
            Self::Api {
                status,
                code,
                message,
                ..
            } => write!(f, "{message} ({code}, HTTP {status})"),
            Self::ModelServer { url, detail } => write!(f, "the model server at {url}: {detail}"),
        }
    }
}

impl std::error::Error for CliError {}

/// The innermost error's message: "Connection refused (os error 111)" rather than "error
/// sending request".
fn root_cause(error: &(dyn std::error::Error + 'static)) -> String {
    let mut current = error;
    while let Some(source) = current.source() {
        current = source;
    }
    current.to_string()
}
