//! `tandem-slow-worker`: reads its configuration, sets up telemetry, works until SIGINT/SIGTERM.

use tandem_slow_worker::WorkerConfig;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tandem_core::telemetry::init("tandem-slow-worker");
    let config = match WorkerConfig::from_env() {
        Ok(config) => config,
        Err(e) => {
            eprintln!("tandem-slow-worker: {e}");
            std::process::exit(2);
        }
    };
    Box::pin(tandem_slow_worker::run(
        config,
        tandem_core::shutdown::signal(),
    ))
    .await
}
