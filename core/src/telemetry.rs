//! One place where every Tandem binary sets up logging and tracing.
//!
//! `RUST_LOG` filters (default `info`); `TANDEM_LOG_FORMAT=json` switches to JSON lines for log
//! shippers. Safe to call more than once (tests start several services in one process).

use tracing_subscriber::{EnvFilter, fmt, prelude::*};

/// Installs the global subscriber for `service`; later calls are no-ops.
pub fn init(service: &'static str) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let json = std::env::var("TANDEM_LOG_FORMAT").is_ok_and(|v| v.eq_ignore_ascii_case("json"));
    let registry = tracing_subscriber::registry().with(filter);
    let result = if json {
        registry
            .with(fmt::layer().json().with_current_span(true))
            .try_init()
    } else {
        // Colour only for a person at a terminal: log files and collectors get plain text.
        let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr())
            && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty());
        registry
            .with(
                fmt::layer()
                    .compact()
                    .with_ansi(ansi)
                    .with_writer(std::io::stderr),
            )
            .try_init()
    };
    if result.is_ok() {
        tracing::debug!(service, "telemetry initialised");
    }
}
