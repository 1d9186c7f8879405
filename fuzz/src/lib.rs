//! Tandem's fuzz harnesses, shared by the `cargo fuzz` targets in `fuzz_targets/` and by the
//! integration tests that replay the seeds and the crashing inputs (`tests/it/fuzz_regressions.rs`).
//! See `fuzz/README.md`.

use http::header;

mod harness;
pub mod seeds;

pub use harness::*;
