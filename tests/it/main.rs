//! Tandem's integration tests: one binary, real servers on loopback ports.
//!
//! Layout: `support` (the package's library, `tests/support/`) starts real things (nats-server on a random port with a temporary store,
//! the model server on the vendored models, the gateway, slow-workers) and cleans them up;
//! each other module is the specification of one part, read as prose.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    missing_debug_implementations
)]

/// The helpers that start real servers: this package's library (`tests/support/`).
use tandem_tests as support;

mod auth;
mod calibrate;
mod cli;
mod compose;
mod deployment;
mod durability;
mod escalation;
mod fast_path;
mod fuzz_regressions;
mod hostile;
mod job_store;
mod model_server;
mod nats_auth;
mod observability;
mod openapi;
mod result_cache;
mod service_binaries;
mod slow_path;
mod traces;
mod waiting;
mod web_page;
mod webhooks;
