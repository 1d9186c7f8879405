//! Fuzzing, replayed in the normal test run: every committed seed (`fuzz/seeds/<target>/`) and
//! every input that once broke a fuzz target (`fuzz/regressions/<target>/`) goes through the very
//! harness the fuzzer runs (`tandem-fuzz-harness`, `fuzz-harness/`), so a fix stays fixed and
//! the harness stays in step with the code. Seeds must also get the answer they were made for:
//! accepted, or refused with the named error. Running the fuzzer itself is `scripts/fuzz` (see
//! `fuzz/README.md`).

use std::{
    fs,
    panic::{AssertUnwindSafe, catch_unwind},
    path::PathBuf,
};

/// The harnesses the fuzzer runs, and the seeds they start from (`fuzz-harness/`).
use tandem_fuzz_harness as harness;
use tandem_fuzz_harness::seeds;

fn fuzz_dir() -> PathBuf {
    crate::support::workspace_root().join("fuzz")
}

/// The files of `fuzz/<kind>/<target>/`, sorted; none when the folder does not exist.
fn inputs(kind: &str, target: &str) -> Vec<PathBuf> {
    let dir = fuzz_dir().join(kind).join(target);
    let Ok(entries) = fs::read_dir(&dir) else {
        return Vec::new();
    };
    let mut files: Vec<PathBuf> = entries
        .map(|e| e.unwrap().path())
        .filter(|p| p.is_file() && p.extension().is_none_or(|e| e != "md"))
        .collect();
    files.sort();
    files
}

/// Runs `harness` on every seed and regression of `target`. Seeds named in `refused` must be
/// refused with that error; every other seed must be accepted; regressions must not panic.
fn replay(target: &str, harness: fn(&[u8]) -> harness::Outcome, refused: &[(&str, &str)]) {
    let seeds = inputs("seeds", target);
    assert!(
        seeds.len() >= 4,
        "fuzz/seeds/{target} has {} files; write them with \
         `cargo test -p tandem-tests --test it write_fuzz_seeds -- --ignored`",
        seeds.len()
    );
    let regressions = inputs("regressions", target);
    let mut failures = Vec::new();
    for file in seeds.iter().chain(&regressions) {
        let data = fs::read(file).unwrap();
        let name = file.file_name().unwrap().to_string_lossy().into_owned();
        let outcome = match catch_unwind(AssertUnwindSafe(|| harness(&data))) {
            Ok(outcome) => outcome,
            Err(panic) => {
                let message = panic
                    .downcast_ref::<String>()
                    .cloned()
                    .or_else(|| panic.downcast_ref::<&str>().map(|s| (*s).to_owned()))
                    .unwrap_or_default();
                failures.push(format!("{}: panicked: {message}", file.display()));
                continue;
            }
        };
        if !file.starts_with(fuzz_dir().join("seeds")) {
            continue;
        }
        let want = refused
            .iter()
            .find(|(seed, _)| *seed == name)
            .map(|(_, error)| Err((*error).to_owned()))
            .unwrap_or(Ok(()));
        if outcome != want {
            failures.push(format!(
                "{}: got {outcome:?}, want {want:?}",
                file.display()
            ));
        }
    }
    assert!(
        failures.is_empty(),
        "{target}: {} of {} inputs failed:\n{}",
        failures.len(),
        seeds.len() + regressions.len(),
        failures.join("\n")
    );
}

#[test]
fn gateway_request_parsing_survives_its_fuzz_inputs() {
    replay(
        "gateway_extract",
        harness::gateway_extract,
        &[
            ("raw-bomb", "image_too_large"),
            ("raw-over-64-pixels", "image_too_large"),
            ("no-content-type", "unsupported_media_type"),
            ("text-plain", "unsupported_media_type"),
            ("json-missing-field", "missing_image_data"),
            ("multipart-no-boundary", "invalid_multipart"),
        ],
    );
}

#[test]
fn image_decoding_and_preprocessing_survive_their_fuzz_inputs() {
    replay(
        "decode_preprocess",
        harness::decode_preprocess,
        &[("bomb.png", "TooLarge"), ("truncated.jpg", "Truncated")],
    );
}

#[test]
fn preprocessing_odd_shapes_survives_its_fuzz_inputs() {
    replay("preprocess_pixels", harness::preprocess_pixels, &[]);
}

#[test]
fn oip_request_handling_survives_its_fuzz_inputs() {
    replay(
        "oip_request",
        harness::oip_request,
        &[("two-inputs", "Inputs")],
    );
}

/// Not a check: (re)writes the committed seed corpus, `fuzz/seeds/<target>/`, from
/// `tests/data/chelsea.jpg` (see `fuzz-harness/src/seeds.rs`). Run it after changing a
/// harness's framing.
#[test]
#[ignore = "writes fuzz/seeds; run it by hand with --ignored"]
fn write_fuzz_seeds() {
    let photo = fs::read(crate::support::workspace_root().join("tests/data/chelsea.jpg")).unwrap();
    let seeds = seeds::all(&photo).unwrap();
    for seed in &seeds {
        let dir = fuzz_dir().join("seeds").join(seed.target);
        fs::create_dir_all(&dir).unwrap();
        fs::write(dir.join(&seed.name), &seed.bytes).unwrap();
    }
    assert!(seeds.len() >= 30, "only {} seeds", seeds.len());
}
