//! `Deployment`: the service as a client sees it, either one already running somewhere (its
//! gateway's base URL in `TANDEM_TEST_BASE_URL`, e.g. `http://localhost:8000` for the
//! docker-compose stack) or, when that is unset, a fresh one on loopback ports ([`spawn_app`]).
//!
//! Only the public HTTP API is used, so the same test runs against both. A deployment under
//! test is expected to serve the vendored models (fast `efficientnet_lite0`, slow
//! `efficientnet_lite2`), as docker-compose.yml does.

use std::time::Duration;

use super::{
    app::{TestApp, spawn_app},
    gateway::Gateway,
};

/// The environment variable naming a running deployment's gateway.
pub const BASE_URL_VAR: &str = "TANDEM_TEST_BASE_URL";

/// How long a running deployment may take to become ready (a stack just started with
/// `docker compose up -d` is still loading its models).
const READY_TIMEOUT: Duration = Duration::from_secs(180);

/// A deployment's gateway, and the app started for the test when none was given.
pub struct Deployment {
    /// The running deployment's gateway (unused when `local` is set).
    remote: Gateway,
    /// The app started for this test (stopped on drop); `None` against a running deployment.
    pub local: Option<TestApp>,
}

/// The deployment named by `TANDEM_TEST_BASE_URL`, once ready; else a freshly spawned app.
pub async fn deployment() -> Deployment {
    match std::env::var(BASE_URL_VAR) {
        Ok(url) if !url.trim().is_empty() => {
            let http = reqwest::Client::builder()
                .connect_timeout(Duration::from_secs(5))
                .build()
                .expect("HTTP client");
            let deployment = Deployment {
                remote: Gateway::new(&url, http),
                local: None,
            };
            deployment.wait_ready_for(READY_TIMEOUT).await;
            deployment
        }
        _ => {
            let app = spawn_app().await;
            Deployment {
                remote: Gateway::new(&app.base, app.http.clone()),
                local: Some(app),
            }
        }
    }
}

impl std::ops::Deref for Deployment {
    type Target = Gateway;

    fn deref(&self) -> &Gateway {
        match &self.local {
            Some(app) => app,
            None => &self.remote,
        }
    }
}
