//! Fuzz target: see `tandem_fuzz::preprocess_pixels` (fuzz-harness/src/images.rs) and fuzz/README.md.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    // A refusal is a fine answer; only a panic (a broken invariant) is a finding.
    let _ = tandem_fuzz::preprocess_pixels(data);
});
