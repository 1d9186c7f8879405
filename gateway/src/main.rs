//! `tandem-gateway`: reads its configuration, sets up telemetry, serves until SIGINT/SIGTERM.

use tandem_gateway::GatewayConfig;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tandem_core::telemetry::init("tandem-gateway");
    let config = match GatewayConfig::from_env() {
        Ok(config) => config,
        Err(e) => {
            eprintln!("tandem-gateway: {e}");
            std::process::exit(2);
        }
    };
    let listener = tokio::net::TcpListener::bind(config.addr).await?;
    tandem_gateway::run(listener, config, tandem_core::shutdown::signal()).await
}
