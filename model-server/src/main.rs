//! `tandem-model-server`: reads its configuration, sets up telemetry, serves until SIGINT/SIGTERM.

use anyhow::Context as _;
use tandem_core::config::FromEnv as _;
use tandem_model_server::ModelServerConfig;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let telemetry = tandem_core::telemetry::init("tandem-model-server");
    let config = ModelServerConfig::from_env_or_exit("tandem-model-server");
    let listener = tokio::net::TcpListener::bind(config.addr)
        .await
        .with_context(|| format!("cannot listen on {}", config.addr))?;
    let ops = tokio::net::TcpListener::bind(config.metrics_addr)
        .await
        .with_context(|| format!("cannot listen on {}", config.metrics_addr))?;
    let result = tandem_model_server::run_with_ops(
        listener,
        Some(ops),
        config,
        tandem_core::shutdown::signal(),
    )
    .await;
    telemetry.shutdown().await;
    result
}
