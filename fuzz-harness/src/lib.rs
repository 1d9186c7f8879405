//! Tandem's fuzz harnesses, shared by the `cargo fuzz` targets (`fuzz/fuzz_targets/`, through
//! `tandem_fuzz`) and by the integration tests that replay the seeds and the crashing inputs
//! (`tests/it/fuzz_regressions.rs`). See `fuzz/README.md`.
//!
//! One function per target, each taking the fuzzer's bytes and panicking only when Tandem
//! breaks a promise (a panic inside Tandem, or the invariant its doc names): `gateway`
//! (`gateway_extract`), `images` (`decode_preprocess`, `preprocess_pixels`), `oip`
//! (`oip_request`); `reader` holds what they share (the [`Outcome`], the byte [`Reader`]).
//! `seeds` writes the committed seed inputs.

mod gateway;
mod images;
mod oip;
mod reader;
pub mod seeds;

pub use gateway::*;
pub use images::*;
pub use oip::*;
pub use reader::*;
