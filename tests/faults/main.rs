//! The fault suite: under steady load, something breaks, and still no accepted job is lost and
//! none gets two results.
//!
//! Each case starts the real service on loopback ports (nats-server, the model server, the
//! gateway, slow-workers: `tests/support/`), submits jobs through the gateway at a steady
//! rate the way a careful client does (an `Idempotency-Key` per submission, refused attempts
//! retried), injects one fault, stops the load, waits for every accepted job to end, and counts:
//! submitted / succeeded / lost / duplicated (see `tests/support/tally.rs`). The bar is 0 lost and 0
//! duplicated; each case prints its table row (the README's "Faults" table comes from here):
//!
//! - (a) `processes.rs`: a slow-worker process SIGKILLed while it runs jobs;
//! - (b) `processes.rs`: nats-server SIGKILLed and started again on its store;
//! - (c) `processes.rs`: the model server stopped and started again;
//! - (d) `gateway.rs`: the gateway restarted while SSE clients follow jobs; they reconnect with
//!   `Last-Event-ID` and miss nothing;
//! - (e) `cluster.rs`: a 3-node NATS cluster (stream and buckets with 3 replicas) losing the
//!   stream leader, then getting it back.
//!
//! The cases run one at a time (they measure behaviour under time pressure on a small machine),
//! each in well under a minute. Run: `cargo build --workspace --bins && cargo test --test faults`
//! (`-- --nocapture` is not needed: rows go straight to stderr).

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    missing_debug_implementations
)]

/// The helpers that start real servers: this package's library (`tests/support/`).
use tandem_tests as support;
use tandem_tests::{load, tally};

mod cluster;
mod gateway;
mod processes;

use std::time::Duration;

use async_nats::jetstream;

use crate::load::Load;

/// Cases run one at a time.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// Submissions a second.
const RATE: u32 = 5;
/// The photo every case submits, and the slow model's label for it.
const PHOTO: &str = "chelsea.jpg";
const LABEL: &str = "Egyptian cat";

/// A JetStream context on the given `TANDEM_NATS_URL` (one server or a comma-separated list).
async fn jetstream_on(url: &str) -> jetstream::Context {
    let servers: Vec<&str> = url.split(',').collect();
    jetstream::new(async_nats::connect(servers).await.expect("connect to NATS"))
}

/// Jobs delivered to a worker and not yet acknowledged.
async fn ack_pending(js: &jetstream::Context) -> Option<usize> {
    support::queue::worker_consumer(js)
        .await
        .map(|i| i.num_ack_pending)
}

/// Waits until `more` jobs beyond those accepted so far are accepted: the service takes jobs
/// again after the fault.
async fn wait_more_accepted(load: &Load, more: usize) {
    let now = load.accepted().len();
    load.wait_accepted(now + more, Duration::from_secs(60))
        .await;
}

/// The end of a case: once 30 more jobs were accepted after the fault, stops the load and
/// tallies every submission against the job records in NATS at `nats_url`.
async fn stop_and_tally(
    case: &'static str,
    started: std::time::Instant,
    gateway: &support::gateway::Gateway,
    load: Load,
    nats_url: &str,
) -> tally::Tally {
    wait_more_accepted(&load, 30).await;
    let submissions = load.stop().await;
    let js = jetstream_on(nats_url).await;
    tally::tally(case, started, gateway, &js, &submissions, LABEL).await
}
