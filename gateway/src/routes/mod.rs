//! HTTP handlers, one module per resource.

pub mod health;
pub mod jobs;
pub mod metrics;
pub mod page;
pub mod predict;
