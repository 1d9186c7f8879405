//! What two or more Tandem crates share, and nothing else.
//!
//! Layout:
//! - `config`: typed configuration from the environment, all errors reported together;
//! - `telemetry`: the one logging/tracing setup of every binary;
//! - `metrics`: the Prometheus recorder (once per process) and `/metrics`;
//! - `ops`: `/healthz`, `/readyz` (one readiness report) and the ops listener;
//! - `shutdown`: the SIGINT/SIGTERM future every server drains on, shareable;
//! - `pull`: the fetch loop of a durable pull consumer (jobs, webhook events);
//! - `result_cache`: both answers by image content and model identity (the results bucket);
//! - `image_header`: the one header reading of an image the gateway and the model server accept;
//! - `retry`: the one backoff policy for waiting on what comes back;
//! - `escalation`: the escalation policy, its decision and the thresholds file;
//! - `job`: the job schema (`JobId`, `JobStatus`, `JobRecord`, `Prediction`);
//! - `nats`: the NATS contract (stream, subject, consumer, buckets, headers, settings);
//! - `slow_job`: `SlowJob`, the queue message;
//! - `store`: `JobStore`, records in the KV bucket with compare-and-set;
//! - `model_client`: `ModelClient`, classification over the Open Inference Protocol;
//! - `webhook`: webhook events, which are due for a record, and emitting them to JetStream.

pub mod config;
pub mod escalation;
pub mod image_header;
pub mod job;
pub mod metrics;
pub mod model_client;
pub mod nats;
pub mod ops;
pub mod pull;
pub mod result_cache;
pub mod retry;
pub mod shutdown;
pub mod slow_job;
pub mod store;
pub mod telemetry;
pub mod webhook;
