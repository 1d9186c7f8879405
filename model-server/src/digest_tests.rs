use std::path::Path;

use tandem_proto::string_parameter_of;

use super::*;
use crate::registry::tests::null_model;

/// `config.toml` lines by key; `changes` replace or add lines.
fn config(changes: &[(&str, &str)]) -> String {
    let mut lines = vec![
        ("input_tensor", "\"input\""),
        ("output_tensor", "\"logits\""),
        ("width", "4"),
        ("height", "4"),
        ("scaling", "{ scale = 0.0078125, offset = -0.9921875 }"),
    ];
    for &(key, value) in changes {
        match lines.iter_mut().find(|(k, _)| *k == key) {
            Some(line) => line.1 = value,
            None => lines.push((key, value)),
        }
    }
    lines.iter().map(|(k, v)| format!("{k} = {v}\n")).collect()
}

/// Writes a model (fake ONNX bytes `onnx`) into `dir` and loads it as the server does.
fn model(dir: &Path, changes: &[(&str, &str)], onnx: &[u8]) -> ModelSpec {
    std::fs::create_dir_all(dir).unwrap();
    std::fs::write(dir.join("config.toml"), config(changes)).unwrap();
    std::fs::write(dir.join("model.onnx"), onnx).unwrap();
    if !dir.join("labels.txt").exists() {
        std::fs::write(dir.join("labels.txt"), "cat, kitty\ndog\n").unwrap();
    }
    ModelSpec::load(dir).unwrap()
}

#[test]
fn the_digest_is_stable_across_loads_of_the_same_files() {
    let root = tempfile::tempdir().unwrap();
    let dir = root.path().join("m");
    let first = model(&dir, &[], b"weights");
    let again = ModelSpec::load(&dir).unwrap();
    assert_eq!(first.digest, again.digest);
    let hex = first.digest.strip_prefix("sha256:").unwrap();
    assert_eq!(hex.len(), 64, "{}", first.digest);
    assert!(
        hex.bytes()
            .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase())
    );
    // The same files under another name and folder are the same model.
    let copy = model(
        &root.path().join("copy"),
        &[("name", "\"other\"")],
        b"weights",
    );
    assert_eq!(copy.digest, first.digest);
}

#[test]
fn the_digest_changes_with_the_onnx_bytes() {
    let root = tempfile::tempdir().unwrap();
    let dir = root.path().join("m");
    let before = model(&dir, &[], b"weights");
    assert_eq!(read_onnx(&before).unwrap(), b"weights");
    let after = model(&dir, &[], b"weightz");
    assert_ne!(before.digest, after.digest);
    // A session is never made from bytes other than those its digest covers.
    let err = read_onnx(&before).unwrap_err().to_string();
    assert!(
        err.contains("changed") && err.contains(&after.digest),
        "{err}"
    );
}

#[test]
fn the_digest_changes_with_every_setting_that_changes_answers() {
    let root = tempfile::tempdir().unwrap();
    let base = model(&root.path().join("base"), &[], b"weights").digest;
    let changes: &[(&str, &str)] = &[
        ("scaling", "{ scale = 0.0078125, offset = -1.0 }"),
        (
            "scaling",
            "{ mean = [0.5, 0.5, 0.5], std = [0.5, 0.5, 0.5] }",
        ),
        ("crop", "\"none\""),
        ("layout", "\"NHWC\""),
        ("width", "5"),
        ("height", "5"),
        ("output_kind", "\"probabilities\""),
        ("input_tensor", "\"pixels\""),
        ("output_tensor", "\"scores\""),
        ("backend", "\"null\""),
    ];
    let mut seen = vec![base];
    for (i, &change) in changes.iter().enumerate() {
        let digest = model(&root.path().join(format!("m{i}")), &[change], b"weights").digest;
        assert!(
            !seen.contains(&digest),
            "{change:?} left the digest as it was"
        );
        seen.push(digest);
    }
    let dir = root.path().join("labels");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("labels.txt"), "cat\nhound\n").unwrap();
    let digest = model(&dir, &[], b"weights").digest;
    assert!(
        !seen.contains(&digest),
        "the labels left the digest as it was"
    );
}

#[test]
fn settings_that_only_change_speed_leave_the_digest_alone() {
    let root = tempfile::tempdir().unwrap();
    let base = model(&root.path().join("base"), &[], b"weights").digest;
    let tuned = model(
        &root.path().join("tuned"),
        &[
            ("intra_op_threads", "4"),
            ("intra_op_spinning", "\"never\""),
            ("thread_nice", "5"),
            ("max_batch_size", "1"),
            ("max_queue_delay_us", "100"),
        ],
        b"weights",
    );
    assert_eq!(tuned.digest, base);
    // Nor does the text after a label's first ", ", which no answer shows.
    std::fs::write(root.path().join("tuned/labels.txt"), "cat\ndog, hound\n").unwrap();
    assert_eq!(
        ModelSpec::load(&root.path().join("tuned")).unwrap().digest,
        base
    );
}

#[test]
fn the_null_model_has_a_digest_of_its_config_and_every_answer_carries_it() {
    let root = tempfile::tempdir().unwrap();
    let spec = null_model(root.path(), "n", "");
    assert!(spec.digest.starts_with("sha256:"), "{}", spec.digest);
    assert_eq!(null_model(root.path(), "n", "").digest, spec.digest);
    let cropped = null_model(root.path(), "n", "crop = \"none\"\n");
    assert_ne!(cropped.digest, spec.digest);
    let reported = parameters(&spec);
    assert_eq!(
        string_parameter_of(&reported, MODEL_DIGEST_PARAMETER),
        Some(spec.digest.as_str())
    );
    let unloaded = ModelSpec::parse(Path::new("m/config.toml"), "m", &config(&[])).unwrap();
    assert!(parameters(&unloaded).is_empty(), "no digest before load");
}
