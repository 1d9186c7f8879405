//! The binary's configuration, from environment variables, every error reported at once.

use std::{net::SocketAddr, path::PathBuf, time::Duration};

use tandem_core::config::{Env, FromEnv};

/// Default listen address: loopback only; set `TANDEM_MODEL_SERVER_ADDR=0.0.0.0:8001` to expose it.
pub const DEFAULT_ADDR: &str = "127.0.0.1:8001";
/// Default largest image accepted, in pixels (40 megapixels).
pub const DEFAULT_MAX_IMAGE_PIXELS: u64 = 40_000_000;

/// Default drain time after SIGINT/SIGTERM, as the gateway and the slow-worker have.
pub const DEFAULT_SHUTDOWN_GRACE: Duration = Duration::from_secs(10);

/// Default room for decoded images, MiB: a few hundred photos of a phone's web size.
pub const DEFAULT_DECODED_CACHE_MB: usize = 64;
const MAX_DECODED_CACHE_MB: usize = 64 * 1024;

/// Everything the model server reads from its environment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModelServerConfig {
    /// `TANDEM_MODEL_REPOSITORY`: the model repository folder (default `models`).
    pub model_repository: PathBuf,
    /// `TANDEM_MODEL_SERVER_ADDR`: where the binary listens (default `127.0.0.1:8001`).
    pub addr: SocketAddr,
    /// `ORT_DYLIB_PATH`: the ONNX Runtime library; unset: `.tandem/lib/libonnxruntime.so*`
    /// in the current directory or an ancestor.
    pub ort_dylib_path: Option<PathBuf>,
    /// `TANDEM_MAX_IMAGE_PIXELS`: images whose header claims more pixels are refused
    /// before decoding (default 40 000 000).
    pub max_image_pixels: u64,
    /// `TANDEM_MODEL_SERVER_METRICS_ADDR`: the binary's `/metrics`, `/healthz`, `/readyz`
    /// listener (default `127.0.0.1:9101`).
    pub metrics_addr: SocketAddr,
    /// `TANDEM_DECODED_CACHE_MB`: the size of the decode cache (`decode_cache`), the decoded
    /// images kept for the other model's request of the same image, in MiB (default 64; 0
    /// turns it off).
    pub decoded_cache_bytes: usize,
    /// `TANDEM_SHUTDOWN_GRACE_SECS`: after the shutdown signal, how long requests in flight
    /// may take to finish before their connections are closed (default 10).
    pub shutdown_grace: Duration,
    /// `TANDEM_INFERENCE_THREADS`: the most ONNX Runtime threads running at once across every
    /// model (default: the cores this process may use). A batch starts only when its model's
    /// `intra_op_threads` fit beside those running (see `scheduler`).
    pub inference_threads: usize,
}

/// The cores this process may use (its CPU affinity and cgroup quota), 1 if unknown.
pub fn available_cores() -> usize {
    std::thread::available_parallelism().map_or(1, usize::from)
}

impl FromEnv for ModelServerConfig {
    fn read(env: &mut Env) -> Self {
        let model_repository = PathBuf::from(env.string("TANDEM_MODEL_REPOSITORY", "models"));
        let default_addr = SocketAddr::from(([127, 0, 0, 1], 8001));
        let addr = env.parse("TANDEM_MODEL_SERVER_ADDR", default_addr);
        let ort_dylib_path = env.optional_string("ORT_DYLIB_PATH").map(PathBuf::from);
        let max_image_pixels = env.parse("TANDEM_MAX_IMAGE_PIXELS", DEFAULT_MAX_IMAGE_PIXELS);
        let metrics_addr = env.parse(
            "TANDEM_MODEL_SERVER_METRICS_ADDR",
            SocketAddr::from(([127, 0, 0, 1], 9101)),
        );
        let decoded_cache_mb: usize =
            env.parse("TANDEM_DECODED_CACHE_MB", DEFAULT_DECODED_CACHE_MB);
        if decoded_cache_mb > MAX_DECODED_CACHE_MB {
            env.error(format!(
                "TANDEM_DECODED_CACHE_MB={decoded_cache_mb} is over the maximum of {MAX_DECODED_CACHE_MB}"
            ));
        }
        let shutdown_grace = env.seconds("TANDEM_SHUTDOWN_GRACE_SECS", DEFAULT_SHUTDOWN_GRACE);
        let inference_threads = env.parse("TANDEM_INFERENCE_THREADS", available_cores());
        if inference_threads == 0 {
            env.error("TANDEM_INFERENCE_THREADS=0 is not valid: it must be at least 1");
        }
        if max_image_pixels == 0 {
            env.error("TANDEM_MAX_IMAGE_PIXELS=0 is not valid: it must be at least 1");
        }
        Self {
            model_repository,
            addr,
            ort_dylib_path,
            max_image_pixels,
            metrics_addr,
            decoded_cache_bytes: decoded_cache_mb.min(MAX_DECODED_CACHE_MB) * 1024 * 1024,
            shutdown_grace,
            inference_threads,
        }
    }
}

#[cfg(test)]
mod tests {
    use tandem_core::config::ConfigError;

    use super::*;

    fn config(pairs: &[(&str, &str)]) -> Result<ModelServerConfig, ConfigError> {
        // Overrides win over the process environment; " " reads as unset.
        let mut all = vec![
            ("TANDEM_MODEL_REPOSITORY", " "),
            ("TANDEM_MODEL_SERVER_ADDR", " "),
            ("ORT_DYLIB_PATH", " "),
            ("TANDEM_MAX_IMAGE_PIXELS", " "),
            ("TANDEM_DECODED_CACHE_MB", " "),
            ("TANDEM_SHUTDOWN_GRACE_SECS", " "),
            ("TANDEM_INFERENCE_THREADS", " "),
        ];
        all.extend_from_slice(pairs);
        ModelServerConfig::from_source(Env::from_pairs(all))
    }

    #[test]
    fn defaults_are_loopback_and_forty_megapixels() {
        let config = config(&[]).unwrap();
        assert_eq!(config.addr.to_string(), DEFAULT_ADDR);
        assert_eq!(config.model_repository, PathBuf::from("models"));
        assert_eq!(config.ort_dylib_path, None);
        assert_eq!(config.max_image_pixels, DEFAULT_MAX_IMAGE_PIXELS);
        assert_eq!(config.decoded_cache_bytes, 64 * 1024 * 1024);
        assert_eq!(config.shutdown_grace, Duration::from_secs(10));
        assert_eq!(config.inference_threads, available_cores());
    }

    #[test]
    fn values_are_read() {
        let config = config(&[
            ("TANDEM_MODEL_REPOSITORY", "/srv/models"),
            ("TANDEM_MODEL_SERVER_ADDR", "0.0.0.0:9000"),
            ("ORT_DYLIB_PATH", "/opt/libonnxruntime.so"),
            ("TANDEM_MAX_IMAGE_PIXELS", "1000"),
            ("TANDEM_DECODED_CACHE_MB", "0"),
            ("TANDEM_SHUTDOWN_GRACE_SECS", "3"),
            ("TANDEM_INFERENCE_THREADS", "6"),
        ])
        .unwrap();
        assert_eq!(config.inference_threads, 6);
        assert_eq!(config.shutdown_grace, Duration::from_secs(3));
        assert_eq!(config.decoded_cache_bytes, 0);
        assert_eq!(config.model_repository, PathBuf::from("/srv/models"));
        assert_eq!(config.addr.port(), 9000);
        assert_eq!(
            config.ort_dylib_path,
            Some(PathBuf::from("/opt/libonnxruntime.so"))
        );
        assert_eq!(config.max_image_pixels, 1000);
    }

    #[test]
    fn every_bad_value_is_reported() {
        let err = config(&[
            ("TANDEM_MODEL_SERVER_ADDR", "localhost"),
            ("TANDEM_MAX_IMAGE_PIXELS", "lots"),
            ("TANDEM_DECODED_CACHE_MB", "-1"),
            ("TANDEM_SHUTDOWN_GRACE_SECS", "soon"),
            ("TANDEM_INFERENCE_THREADS", "0"),
        ])
        .unwrap_err();
        assert_eq!(err.0.len(), 5, "{err}");
        assert!(
            err.to_string().contains("TANDEM_SHUTDOWN_GRACE_SECS"),
            "{err}"
        );
        let err = config(&[("TANDEM_MAX_IMAGE_PIXELS", "0")]).unwrap_err();
        assert!(err.to_string().contains("TANDEM_MAX_IMAGE_PIXELS"), "{err}");
    }
}
