//! `WorkerConfig`: everything a slow-worker reads from its environment, parsed once.

use std::time::Duration;

use tandem_core::{
    config::{Env, FromEnv},
    nats::NatsSettings,
};

/// A slow-worker's configuration (see the README's configuration table).
#[derive(Debug, Clone)]
pub struct WorkerConfig {
    /// `TANDEM_MODEL_SERVER_URL` (default `http://127.0.0.1:8001`).
    pub model_server_url: String,
    /// `TANDEM_SLOW_MODEL` (default `efficientnet_lite2`).
    pub slow_model: String,
    /// `TANDEM_TOP_K` (default 5).
    pub top_k: usize,
    /// `TANDEM_WORKER_CONCURRENCY` (default 1): jobs run at once; also how many are fetched.
    pub concurrency: usize,
    /// `TANDEM_WORKER_AUDIT_CONCURRENCY` (default 1; 0: this worker audits nothing): audit
    /// jobs run at once, only while no escalated job runs.
    pub audit_concurrency: usize,
    /// `TANDEM_SLOW_TIMEOUT_MS` (default 30000): deadline of one slow model call.
    pub model_timeout: Duration,
    /// `TANDEM_RETRY_BASE_MS` (default 1000): first retry delay after a transient failure;
    /// doubles per delivery up to `TANDEM_RETRY_MAX_MS` (default 30000).
    pub retry_base: Duration,
    pub retry_max: Duration,
    /// `TANDEM_SHUTDOWN_GRACE_SECS` (default 10): how long running jobs may take to finish.
    pub shutdown_grace: Duration,
    pub nats: NatsSettings,
    /// `TANDEM_WORKER_HTTP_ADDR` (default `127.0.0.1:9102`): `/metrics`, `/healthz`, `/readyz`.
    pub http_addr: std::net::SocketAddr,
}

impl FromEnv for WorkerConfig {
    fn read(env: &mut Env) -> Self {
        let config = Self {
            model_server_url: env.string("TANDEM_MODEL_SERVER_URL", "http://127.0.0.1:8001"),
            slow_model: env.string("TANDEM_SLOW_MODEL", "efficientnet_lite2"),
            top_k: env.parse("TANDEM_TOP_K", 5),
            concurrency: env.parse("TANDEM_WORKER_CONCURRENCY", 1),
            audit_concurrency: env.parse("TANDEM_WORKER_AUDIT_CONCURRENCY", 1),
            model_timeout: env.millis("TANDEM_SLOW_TIMEOUT_MS", Duration::from_secs(30)),
            retry_base: env.millis("TANDEM_RETRY_BASE_MS", Duration::from_secs(1)),
            retry_max: env.millis("TANDEM_RETRY_MAX_MS", Duration::from_secs(30)),
            shutdown_grace: env.seconds("TANDEM_SHUTDOWN_GRACE_SECS", Duration::from_secs(10)),
            nats: NatsSettings::from_env(env),
            http_addr: env.parse(
                "TANDEM_WORKER_HTTP_ADDR",
                std::net::SocketAddr::from(([127, 0, 0, 1], 9102)),
            ),
        };
        if !(1..=256).contains(&config.concurrency) {
            env.error("TANDEM_WORKER_CONCURRENCY must be between 1 and 256");
        }
        if config.audit_concurrency > 256 {
            env.error("TANDEM_WORKER_AUDIT_CONCURRENCY must be between 0 and 256");
        }
        if !(1..=100).contains(&config.top_k) {
            env.error("TANDEM_TOP_K must be between 1 and 100");
        }
        if config.retry_base > config.retry_max {
            env.error("TANDEM_RETRY_BASE_MS must not exceed TANDEM_RETRY_MAX_MS");
        }
        config
    }
}

impl WorkerConfig {
    /// Delay before the next delivery after `delivered` failed ones: exponential, capped.
    pub fn retry_delay(&self, delivered: i64) -> Duration {
        let exponent = u32::try_from(delivered.saturating_sub(1).clamp(0, 16)).unwrap_or(16);
        self.retry_base
            .saturating_mul(2u32.saturating_pow(exponent))
            .min(self.retry_max)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_delay_doubles_and_caps() {
        let config = WorkerConfig::from_source(Env::from_pairs([
            ("TANDEM_RETRY_BASE_MS", "100"),
            ("TANDEM_RETRY_MAX_MS", "500"),
        ]))
        .unwrap();
        let delays: Vec<u128> = (1..=5).map(|d| config.retry_delay(d).as_millis()).collect();
        assert_eq!(delays, [100, 200, 400, 500, 500]);
    }

    #[test]
    fn bad_values_are_all_reported() {
        let err = WorkerConfig::from_source(Env::from_pairs([
            ("TANDEM_WORKER_CONCURRENCY", "0"),
            ("TANDEM_MAX_DELIVER", "zero"),
        ]))
        .unwrap_err();
        assert_eq!(err.0.len(), 2, "{err}");
    }
}
