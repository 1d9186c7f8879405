//! Tandem's slow-worker: takes jobs from the JetStream work queue, runs the slow model over the
//! Open Inference Protocol, and writes the outcome to the job-records bucket.
//!
//! Layout:
//! - `config`: `WorkerConfig`, from the environment;
//! - `worker`: the fetch loop (pull only as many jobs as free slots) and draining;
//! - `job`: one job's state machine (running, result or failure, then ack);
//! - `delivery`: acks, keep-alives and job-store calls retried in place; `image`: the job's
//!   image (inline or in the object store);
//! - `cached`: the result cache (answers for an image seen before, identical jobs run once);
//! - `audit`: the audit of skipped jobs, run only while no escalated job is running;
//! - `advisory`: jobs that exhausted their deliveries end `failed`.

pub mod advisory;
pub mod audit;
pub mod cached;
pub mod config;
pub mod delivery;
pub mod image;
pub mod job;
pub mod worker;

pub use config::WorkerConfig;
pub use worker::{run, run_with_ops};
