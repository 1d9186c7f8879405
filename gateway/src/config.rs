//! `GatewayConfig`: everything the gateway reads from its environment, parsed once.

use std::{net::SocketAddr, time::Duration};

use crate::auth::ApiKeys;
use tandem_core::{
    config::{Env, FromEnv},
    nats::NatsSettings,
};

/// The most `TANDEM_MAX_WAIT_SECS` may say: an hour.
const MAX_WAIT_LIMIT: Duration = Duration::from_secs(3600);

/// The gateway's configuration (see the README's configuration table).
#[derive(Debug, Clone)]
pub struct GatewayConfig {
    /// `TANDEM_GATEWAY_ADDR` (default `127.0.0.1:8000`).
    pub addr: SocketAddr,
    /// `TANDEM_MODEL_SERVER_URL` (default `http://127.0.0.1:8001`).
    pub model_server_url: String,
    /// `TANDEM_FAST_MODEL` (default `efficientnet_lite0`): its name is also the reply's label key.
    pub fast_model: String,
    /// `TANDEM_TOP_K` (default 5): classes returned per model.
    pub top_k: usize,
    /// `TANDEM_FAST_TIMEOUT_MS` (default 5000): deadline of the fast model call.
    pub fast_timeout: Duration,
    /// `TANDEM_PUBLISH_TIMEOUT_MS` (default 5000): deadline for JetStream to store a job.
    pub publish_timeout: Duration,
    /// `TANDEM_MAX_BODY_BYTES` (default 32 MiB): larger request bodies get 413.
    pub max_body_bytes: usize,
    /// `TANDEM_MAX_IMAGE_PIXELS` (default 40 million): larger images get 413 before decoding.
    pub max_image_pixels: u64,
    /// `TANDEM_SSE_KEEPALIVE_SECS` (default 15): comment lines that keep idle streams open.
    pub sse_keepalive: Duration,
    /// `TANDEM_MAX_WAIT_SECS` (default 60): the longest `Prefer: wait=N` honoured (0: never
    /// wait).
    pub max_wait: Duration,
    /// `TANDEM_SHUTDOWN_GRACE_SECS` (default 10): how long draining may take.
    pub shutdown_grace: Duration,
    /// `TANDEM_HEADER_READ_TIMEOUT_SECS` (default 10): a connection that has not sent a whole
    /// request head this long after connecting (or after its previous response) is closed.
    pub header_read_timeout: Duration,
    /// `TANDEM_STALLED_WRITE_TIMEOUT_SECS` (default 30): a connection whose client takes none of
    /// the response for this long (a stuck or deliberately slow reader) is closed.
    pub stalled_write_timeout: Duration,
    /// `TANDEM_API_KEYS_SUBMIT`, `TANDEM_API_KEYS_READ` (and `_FILE` variants): empty, no auth.
    pub api_keys: ApiKeys,
    /// NATS connection, stream and bucket settings.
    pub nats: NatsSettings,
    /// `TANDEM_WEBHOOK_*`: webhooks (off unless `TANDEM_WEBHOOK_ALLOW` is set).
    pub webhooks: crate::webhook::WebhookConfig,
    /// `TANDEM_ESCALATE*`, `TANDEM_BROWNOUT_*`: which jobs go on to the slow model.
    pub escalation: crate::escalation::EscalationConfig,
}

impl FromEnv for GatewayConfig {
    fn read(env: &mut Env) -> Self {
        let config = Self {
            addr: env.parse(
                "TANDEM_GATEWAY_ADDR",
                SocketAddr::from(([127, 0, 0, 1], 8000)),
            ),
            model_server_url: env.string("TANDEM_MODEL_SERVER_URL", "http://127.0.0.1:8001"),
            fast_model: env.string("TANDEM_FAST_MODEL", "efficientnet_lite0"),
            top_k: env.parse("TANDEM_TOP_K", 5),
            fast_timeout: env.millis("TANDEM_FAST_TIMEOUT_MS", Duration::from_secs(5)),
            publish_timeout: env.millis("TANDEM_PUBLISH_TIMEOUT_MS", Duration::from_secs(5)),
            max_body_bytes: env.parse("TANDEM_MAX_BODY_BYTES", 32 * 1024 * 1024),
            max_image_pixels: env.parse("TANDEM_MAX_IMAGE_PIXELS", 40_000_000),
            sse_keepalive: env.seconds("TANDEM_SSE_KEEPALIVE_SECS", Duration::from_secs(15)),
            max_wait: env.seconds("TANDEM_MAX_WAIT_SECS", Duration::from_secs(60)),
            shutdown_grace: env.seconds("TANDEM_SHUTDOWN_GRACE_SECS", Duration::from_secs(10)),
            header_read_timeout: env
                .seconds("TANDEM_HEADER_READ_TIMEOUT_SECS", Duration::from_secs(10)),
            stalled_write_timeout: env
                .seconds("TANDEM_STALLED_WRITE_TIMEOUT_SECS", Duration::from_secs(30)),
            api_keys: ApiKeys::from_env(env),
            nats: NatsSettings::from_env(env),
            webhooks: crate::webhook::WebhookConfig::from_env(env),
            escalation: crate::escalation::EscalationConfig::from_env(env),
        };
        if !(1..=100).contains(&config.top_k) {
            env.error("TANDEM_TOP_K must be between 1 and 100");
        }
        if config.max_body_bytes == 0 || config.max_image_pixels == 0 {
            env.error("TANDEM_MAX_BODY_BYTES and TANDEM_MAX_IMAGE_PIXELS must be positive");
        }
        if config.max_wait > MAX_WAIT_LIMIT {
            env.error("TANDEM_MAX_WAIT_SECS must be between 0 and 3600");
        }
        if config.sse_keepalive.is_zero() {
            env.error("TANDEM_SSE_KEEPALIVE_SECS must be at least 1");
        }
        if config.header_read_timeout.is_zero() || config.stalled_write_timeout.is_zero() {
            env.error(
                "TANDEM_HEADER_READ_TIMEOUT_SECS and TANDEM_STALLED_WRITE_TIMEOUT_SECS must be at least 1",
            );
        }
        config
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_only_what_it_uses() {
        // The slow model is the workers' business; a gateway setting for it would be read by
        // nothing (and a deployment file setting it would look meaningful).
        let variables = GatewayConfig::variables();
        assert!(variables.iter().any(|v| v == "TANDEM_FAST_MODEL"));
        assert!(!variables.iter().any(|v| v == "TANDEM_SLOW_MODEL"));
    }

    #[test]
    fn max_wait_defaults_to_a_minute_and_is_checked() {
        let config = GatewayConfig::from_source(Env::from_pairs::<&str, &str>([])).unwrap();
        assert_eq!(config.max_wait, Duration::from_secs(60));
        for bad in ["-1", "abc", "3601", "0.5"] {
            let env = Env::from_pairs([("TANDEM_MAX_WAIT_SECS", bad)]);
            assert!(GatewayConfig::from_source(env).is_err(), "{bad}");
        }
        let off = Env::from_pairs([("TANDEM_MAX_WAIT_SECS", "0")]);
        assert!(GatewayConfig::from_source(off).unwrap().max_wait.is_zero());
    }
}
