//! Tandem's fuzz harnesses, shared by the `cargo fuzz` targets (`fuzz/fuzz_targets/`, through
//! `tandem_fuzz`) and by the integration tests that replay the seeds and the crashing inputs
//! (`tests/it/fuzz_regressions.rs`). See `fuzz/README.md`.

mod harness;
pub mod seeds;

pub use harness::*;
