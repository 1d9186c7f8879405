//! `tandem-model-server`: reads its configuration, binds, serves until SIGINT/SIGTERM.

use std::process::ExitCode;

use tandem_core::config::FromEnv as _;
use tandem_model_server::ModelServerConfig;

#[tokio::main]
async fn main() -> ExitCode {
    let config = ModelServerConfig::from_env_or_exit("tandem-model-server");
    let telemetry = tandem_core::telemetry::init("tandem-model-server");
    let served = serve(config).await;
    telemetry.shutdown().await;
    served
}

async fn serve(config: ModelServerConfig) -> ExitCode {
    let listener = match tokio::net::TcpListener::bind(config.addr).await {
        Ok(listener) => listener,
        Err(e) => {
            tracing::error!(addr = %config.addr, error = %e, "cannot listen");
            return ExitCode::FAILURE;
        }
    };
    let ops = match tokio::net::TcpListener::bind(config.metrics_addr).await {
        Ok(ops) => ops,
        Err(e) => {
            tracing::error!(addr = %config.metrics_addr, error = %e, "cannot listen");
            return ExitCode::FAILURE;
        }
    };
    match tandem_model_server::run_with_ops(
        listener,
        Some(ops),
        config,
        tandem_core::shutdown::signal(),
    )
    .await
    {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e:#}");
            ExitCode::FAILURE
        }
    }
}
