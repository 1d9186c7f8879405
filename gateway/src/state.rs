//! `AppState`: what every handler shares; cheap to clone.

use std::sync::Arc;

use tandem_core::model_client::ModelClient;

use crate::{config::GatewayConfig, hub::JobHub, queue::Queue};

/// Shared state of the gateway's handlers.
#[derive(Debug, Clone)]
pub struct AppState {
    pub config: Arc<GatewayConfig>,
    /// The fast model, over one reused gRPC channel.
    pub model: ModelClient,
    pub queue: Queue,
    pub hub: JobHub,
    /// Which jobs go on to the slow model.
    pub escalation: crate::escalation::Escalation,
    /// Becomes `true` when the gateway begins to drain (ends `Prefer: wait` waits).
    pub draining: tokio::sync::watch::Receiver<bool>,
}
