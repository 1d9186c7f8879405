//! `tandem-slow-worker`: reads its configuration, sets up telemetry, works until SIGINT/SIGTERM.

use tandem_core::config::FromEnv as _;
use tandem_slow_worker::WorkerConfig;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let telemetry = tandem_core::telemetry::init("tandem-slow-worker");
    let config = WorkerConfig::from_env_or_exit("tandem-slow-worker");
    let ops = tokio::net::TcpListener::bind(config.http_addr).await?;
    let result = Box::pin(tandem_slow_worker::run_with_ops(
        config,
        Some(ops),
        tandem_core::shutdown::signal(),
    ))
    .await;
    telemetry.shutdown().await;
    result
}
