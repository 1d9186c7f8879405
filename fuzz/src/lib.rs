//! Tandem's fuzz targets' library: the harnesses live in `tandem-fuzz-harness` (`../fuzz-harness/`,
//! also used by the integration tests that replay the seeds and the crashing inputs); the
//! targets in `fuzz_targets/` call them as `tandem_fuzz::<target>`. See `README.md`.

pub use tandem_fuzz_harness::*;
