//! The shutdown signal every binary drains on: SIGINT (Ctrl-C) or SIGTERM (docker, systemd),
//! and [`Shutdown`], the one future a service hands to each of its listeners.

use std::future::Future;

use futures::future::{BoxFuture, FutureExt as _, Shared};

/// A shutdown future that can be cloned: every listener of a service (its API, its ops port)
/// stops on the same signal.
pub type Shutdown = Shared<BoxFuture<'static, ()>>;

/// Makes `signal` (the binary's [`signal`], or a test's own trigger) shareable.
pub fn shared(signal: impl Future<Output = ()> + Send + 'static) -> Shutdown {
    signal.boxed().shared()
}

/// Resolves on the first SIGINT or SIGTERM.
pub async fn signal() {
    let ctrl_c = async {
        if let Err(e) = tokio::signal::ctrl_c().await {
            tracing::error!(error = %e, "cannot listen for Ctrl-C");
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut sigterm) => {
                sigterm.recv().await;
            }
            Err(e) => {
                tracing::error!(error = %e, "cannot listen for SIGTERM");
                std::future::pending::<()>().await;
            }
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => tracing::info!("SIGINT received, shutting down"),
        () = terminate => tracing::info!("SIGTERM received, shutting down"),
    }
}
