//! Tandem's slow-worker: takes jobs from the JetStream work queue, runs the slow model over the
//! Open Inference Protocol, and writes the outcome to the job-records bucket.
//!
//! Layout:
//! - `config`: `WorkerConfig`, from the environment;
//! - `worker`: the fetch loop (pull only as many jobs as free slots) and draining;
//! - `job`: one job's state machine (running, result or failure, then ack);
//! - `advisory`: jobs that exhausted their deliveries end `failed`.

pub mod advisory;
pub mod config;
pub mod job;
pub mod worker;

pub use config::WorkerConfig;
pub use worker::{run, run_with_ops};
