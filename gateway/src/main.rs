//! `tandem-gateway`: reads its configuration, sets up telemetry, serves until SIGINT/SIGTERM.

use tandem_core::config::FromEnv as _;
use tandem_gateway::GatewayConfig;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let telemetry = tandem_core::telemetry::init("tandem-gateway");
    let config = GatewayConfig::from_env_or_exit("tandem-gateway");
    let listener = tokio::net::TcpListener::bind(config.addr).await?;
    let result = tandem_gateway::run(listener, config, tandem_core::shutdown::signal()).await;
    telemetry.shutdown().await;
    result
}
