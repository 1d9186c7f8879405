//! Helpers that start real servers for the system tests and stop them on drop: the library of
//! the `tandem-tests` package, shared by the integration suite (`it/`), the fault suite
//! (`faults/`) and the compose tests (`compose/`).
//!
//! Layout: `nats` and `cluster` (nats-servers), `model_server`, `delay` (a slow link to it),
//! `gateway` (an HTTP client of the gateway, every reply checked by `openapi`), `app` (the whole
//! service in one process, workers as processes), `process` (the built service binaries),
//! `sse`, `otlp` (a trace receiver), `webhook` (a receiver), `remote` (a deployment named by
//! `TANDEM_TEST_BASE_URL`), `queue` (JetStream's view of the job queue), `load` and `tally`
//! (the fault cases' steady load and their count of lost and duplicated jobs).

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    missing_debug_implementations
)]

pub mod app;
pub mod cluster;
pub mod delay;
pub mod gateway;
pub mod load;
pub mod model_server;
pub mod nats;
pub mod openapi;
pub mod otlp;
pub mod process;
pub mod queue;
pub mod remote;
pub mod sse;
pub mod tally;
pub mod webhook;

use std::{
    fmt::Display,
    path::PathBuf,
    time::{Duration, Instant},
};

/// The workspace root (tests find `models/` and `tests/data/` from here).
pub fn workspace_root() -> PathBuf {
    // This package is `<root>/tests`.
    PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/.."))
}

/// A test photo from `tests/data/`.
pub fn photo(name: &str) -> Vec<u8> {
    let path = workspace_root().join("tests/data").join(name);
    std::fs::read(&path).unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()))
}

/// A PNG whose header claims `width` x `height` pixels (a decompression bomb's calling card),
/// from the one PNG builder every test shares (`test-images/`).
pub use tandem_test_images::png_claiming;

/// Polls `check` (every 25 ms) until it answers `Ok`, and returns what it answered; panics
/// when it still answers `Err` after `timeout`, with `what` and the last `Err` (the state seen).
///
/// For waiting on a condition instead of sleeping; a wait for something *not* to happen polls
/// for something that proves the system has gone past the point where it would have.
pub async fn eventually<T, E, F, Fut>(timeout: Duration, what: &str, mut check: F) -> T
where
    E: Display,
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, E>>,
{
    let started = Instant::now();
    loop {
        let last = match check().await {
            Ok(value) => return value,
            Err(last) => last,
        };
        assert!(
            started.elapsed() < timeout,
            "{what}: still not so after {timeout:?}; last seen: {last}"
        );
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}
