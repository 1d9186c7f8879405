//! Tandem: two-speed image classification, a fast label now and a better one a moment later.
//!
//! This package is the `tandem` command-line client; the services are the workspace's other
//! packages (`tandem-gateway`, `tandem-model-server`, `tandem-slow-worker`).

pub mod cli;
