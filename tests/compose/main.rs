//! The compose-based tests: `docker-compose.yml` and `docker-compose.cluster.yml` run for real,
//! under Docker, on the images `scripts/compose-env start` builds without a registry (named by
//! `TANDEM_IMAGE` and `TANDEM_NATS_IMAGE`, which the compose files read), and are
//! driven through their published ports (127.0.0.1 only) the way clients and operators do:
//!
//! - `stack.rs`: `docker-compose.yml` from nothing: every service healthy; the original clients'
//!   exact `curl` calls; the deployment suite (`tests/it/deployment.rs`) with
//!   `TANDEM_TEST_BASE_URL`; SSE through the published port; the web page;
//! - `faults.rs`: under load, with the fault suite's tally (0 lost, 0 duplicated): a slow-worker
//!   container `docker kill`ed mid-job, `docker compose restart nats`, `down` then `up` with jobs
//!   queued, the model server stopped and started;
//! - `store.rs`: JetStream's store on a small size-limited volume filling up;
//! - `cluster.rs`: `docker-compose.cluster.yml`: one node stopped, one node cut off the network
//!   (`docker network disconnect`) and reconnected, two gateways (a job submitted through one is
//!   read and streamed through the other; stopping either loses nothing);
//! - each stack ends with: no panic and no unexplained error in `docker compose logs`, and
//!   `docker compose down -v` leaving no container, volume or network behind;
//! - `files.rs` (no Docker needed): the tests' settings files add only test-only settings (the
//!   compose files take the images and the gateways' ports from the environment).
//!
//! Run: `scripts/compose-env test` (engine, images, these tests, engine stopped again), or by
//! hand: `eval "$(scripts/compose-env start)"; TANDEM_COMPOSE_TESTS=1 cargo test -p tandem-tests
//! --test compose`. Without `TANDEM_COMPOSE_TESTS=1` the Docker cases print why they skip (so
//! `cargo test --workspace` does not run them); with it, a missing engine or image fails them.
//!
//! The tally is the fault suite's own (`tests/support/tally.rs` and `load.rs`, used by this
//! binary as they are).

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    missing_debug_implementations
)]

/// The helpers of the other suites: this package's library (`tests/support/`), the fault
/// suite's load and tally among them.
use tandem_tests as support;
use tandem_tests::{load, tally};

mod cluster;
mod docker;
mod faults;
mod files;
mod stack;
mod store;

/// Submissions a second, as in the fault suite.
const RATE: u32 = 5;
/// The photo every case submits, and the slow model's label for it.
const PHOTO: &str = "chelsea.jpg";
const LABEL: &str = "Egyptian cat";
