use std::path::Path;

use super::*;

const MINIMAL: &str = r#"
input_tensor = "input"
output_tensor = "logits"
width = 224
height = 200
scaling = { scale = 0.0078125, offset = -0.9921875 }
"#;

fn parse(text: &str) -> anyhow::Result<ModelSpec> {
    ModelSpec::parse(Path::new("models/m/config.toml"), "m", text)
}

#[test]
fn defaults_fill_the_optional_fields() {
    let spec = parse(MINIMAL).unwrap();
    assert_eq!(spec.name, "m", "the folder name");
    assert_eq!(spec.onnx_path, Path::new("model.onnx"));
    assert_eq!(spec.labels_path, Path::new("labels.txt"));
    assert_eq!(spec.preprocess.layout, Layout::Nchw);
    assert_eq!(spec.preprocess.crop, Crop::Center);
    assert_eq!(spec.output_kind, OutputKind::Logits);
    assert_eq!(spec.intra_op_threads, 1);
    assert_eq!(spec.intra_op_spinning, Spinning::Run);
    assert_eq!(spec.max_batch_size, 8);
    assert_eq!(spec.max_queue_delay, Duration::ZERO);
    assert_eq!(spec.backend, Backend::Onnx);
    assert_eq!(
        spec.preprocess.scaling,
        Scaling::Affine {
            scale: 0.0078125,
            offset: -0.9921875
        }
    );
    assert_eq!(spec.input_shape(), [-1, 3, 200, 224]);
}

#[test]
fn every_field_is_read() {
    let spec = parse(
        r#"
name = "mobilenet_v2"
onnx_file = "mobilenetv2.onnx"
labels_file = "synset.txt"
input_tensor = "x"
output_tensor = "probs"
width = 96
height = 64
layout = "NHWC"
scaling = { mean = [0.485, 0.456, 0.406], std = [0.229, 0.224, 0.225] }
crop = "none"
output_kind = "probabilities"
intra_op_threads = 4
intra_op_spinning = "never"
max_batch_size = 16
max_queue_delay_us = 500
"#,
    )
    .unwrap();
    assert_eq!(spec.name, "mobilenet_v2");
    assert_eq!(spec.onnx_path, Path::new("mobilenetv2.onnx"));
    assert_eq!(spec.labels_path, Path::new("synset.txt"));
    assert_eq!(
        (spec.input_tensor.as_str(), spec.output_tensor.as_str()),
        ("x", "probs")
    );
    assert_eq!(spec.preprocess.layout, Layout::Nhwc);
    assert_eq!(spec.input_shape(), [-1, 64, 96, 3]);
    assert_eq!(spec.preprocess.crop, Crop::None);
    assert_eq!(spec.output_kind, OutputKind::Probabilities);
    assert_eq!(
        spec.preprocess.scaling,
        Scaling::MeanStd {
            mean: [0.485, 0.456, 0.406],
            std: [0.229, 0.224, 0.225]
        }
    );
    assert_eq!(spec.intra_op_threads, 4);
    assert_eq!(spec.intra_op_spinning, Spinning::Never);
    assert_eq!(spec.max_batch_size, 16);
    assert_eq!(spec.max_queue_delay, Duration::from_micros(500));
}

#[test]
fn errors_name_the_file_and_every_bad_field() {
    let err = parse(
        r#"
name = "bad name"
input_tensor = ""
output_tensor = "logits"
width = 0
height = 224
scaling = { mean = [0.5, 0.5, 0.5], std = [0.5, 0.0, 0.5] }
intra_op_threads = 0
thread_nice = -5
max_batch_size = 0
max_queue_delay_us = 5000000
instances = 0
priority = 10
"#,
    )
    .unwrap_err()
    .to_string();
    for field in [
        "`name`",
        "`input_tensor`",
        "`width`",
        "`scaling`",
        "`intra_op_threads`",
        "`thread_nice`",
        "`max_batch_size`",
        "`max_queue_delay_us`",
        "`instances`",
        "`priority`",
    ] {
        assert!(err.contains(field), "{field} missing from: {err}");
    }
    assert_eq!(err.matches("models/m/config.toml").count(), 10, "{err}");
}

#[test]
fn scaling_must_be_one_style_or_the_other() {
    for scaling in [
        "{ mean = [0.5, 0.5, 0.5] }",
        "{ scale = 0.5 }",
        "{ mean = [0.5, 0.5, 0.5], std = [1.0, 1.0, 1.0], scale = 2.0, offset = 0.0 }",
        "{ scale = 0.0, offset = 1.0 }",
    ] {
        let text = MINIMAL.replace("{ scale = 0.0078125, offset = -0.9921875 }", scaling);
        let err = parse(&text).unwrap_err().to_string();
        assert!(err.contains("field `scaling`"), "{scaling}: {err}");
    }
}

#[test]
fn toml_errors_name_the_file_and_the_key() {
    let missing = parse("input_tensor = \"input\"").unwrap_err().to_string();
    assert!(missing.contains("models/m/config.toml"), "{missing}");
    assert!(missing.contains("output_tensor"), "{missing}");

    let typo = parse(&format!("{MINIMAL}\nmax_batch = 4\n"))
        .unwrap_err()
        .to_string();
    assert!(
        typo.contains("max_batch"),
        "unknown fields are refused: {typo}"
    );

    let layout = parse(&format!("{MINIMAL}\nlayout = \"CHW\"\n"))
        .unwrap_err()
        .to_string();
    assert!(
        layout.contains("layout") && layout.contains("NHWC"),
        "{layout}"
    );

    let backend = parse(&format!("backend = \"tensorrt\"\n{MINIMAL}"))
        .unwrap_err()
        .to_string();
    assert!(
        backend.contains("backend") && backend.contains("null"),
        "{backend}"
    );
}

#[test]
fn a_null_model_needs_no_onnx_file_and_may_have_labels() {
    let root = tempfile::tempdir().unwrap();
    let dir = root.path().join("n");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(
        dir.join("config.toml"),
        format!("backend = \"null\"\n{MINIMAL}"),
    )
    .unwrap();
    let spec = ModelSpec::load(&dir).unwrap();
    assert_eq!(spec.backend, Backend::Null);
    assert_eq!(spec.labels, ["null"]);
    std::fs::write(dir.join("labels.txt"), "cat\ndog\n").unwrap();
    assert_eq!(ModelSpec::load(&dir).unwrap().labels, ["cat", "dog"]);
    std::fs::write(dir.join("labels.txt"), "cat\n\n").unwrap();
    let err = ModelSpec::load(&dir).unwrap_err();
    assert!(format!("{err:#}").contains("labels_file"), "{err:#}");
}

#[test]
fn labels_are_displayed_up_to_the_first_comma() {
    let labels = parse_labels("tench, Tinca tinca\ntiger cat\r\nEgyptian cat\n").unwrap();
    assert_eq!(labels, ["tench", "tiger cat", "Egyptian cat"]);
    assert!(
        parse_labels("a\n\nb\n")
            .unwrap_err()
            .to_string()
            .contains("line 2")
    );
    assert!(parse_labels("").is_err());
}

fn write_model(dir: &Path, config: &str) {
    std::fs::create_dir_all(dir).unwrap();
    std::fs::write(dir.join("config.toml"), config).unwrap();
    std::fs::write(dir.join("model.onnx"), b"not really onnx").unwrap();
    std::fs::write(dir.join("labels.txt"), "cat, kitty\ndog\n").unwrap();
}

#[test]
fn a_repository_holds_several_models_and_skips_other_folders() {
    let root = tempfile::tempdir().unwrap();
    write_model(&root.path().join("b_model"), MINIMAL);
    write_model(
        &root.path().join("a_model"),
        &format!("name = \"first\"\n{MINIMAL}"),
    );
    std::fs::create_dir_all(root.path().join("notes")).unwrap();
    std::fs::write(root.path().join("README.md"), "hello").unwrap();
    let specs = load_repository(root.path()).unwrap();
    let names: Vec<&str> = specs.iter().map(|s| s.name.as_str()).collect();
    assert_eq!(names, ["first", "b_model"], "sorted by folder");
    assert_eq!(specs[0].labels, ["cat", "dog"]);
    assert_eq!(specs[0].onnx_path, root.path().join("a_model/model.onnx"));
}

#[test]
fn repository_errors_are_clear() {
    let root = tempfile::tempdir().unwrap();
    let err = load_repository(root.path()).unwrap_err().to_string();
    assert!(err.contains("no models"), "{err}");

    let err = load_repository(&root.path().join("missing"))
        .unwrap_err()
        .to_string();
    assert!(err.contains("TANDEM_MODEL_REPOSITORY"), "{err}");

    write_model(
        &root.path().join("one"),
        &format!("name = \"same\"\n{MINIMAL}"),
    );
    write_model(
        &root.path().join("two"),
        &format!("name = \"same\"\n{MINIMAL}"),
    );
    let err = load_repository(root.path()).unwrap_err().to_string();
    assert!(err.contains("already named \"same\""), "{err}");

    let root = tempfile::tempdir().unwrap();
    let dir = root.path().join("m");
    write_model(&dir, &format!("onnx_file = \"other.onnx\"\n{MINIMAL}"));
    let err = load_repository(root.path()).unwrap_err().to_string();
    assert!(
        err.contains("field `onnx_file`") && err.contains("other.onnx"),
        "{err}"
    );
    write_model(&dir, &format!("labels_file = \"none.txt\"\n{MINIMAL}"));
    let err = load_repository(root.path()).unwrap_err();
    assert!(
        format!("{err:#}").contains("field `labels_file`"),
        "{err:#}"
    );
}

#[test]
fn the_vendored_models_are_valid() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../models");
    let specs = load_repository(&root).unwrap();
    let names: Vec<&str> = specs.iter().map(|s| s.name.as_str()).collect();
    assert_eq!(names, ["efficientnet_lite0", "efficientnet_lite2", "null"]);
    assert_eq!(specs[2].backend, Backend::Null);
    assert_eq!(specs[2].labels, ["null"]);
    for spec in &specs[..2] {
        assert_eq!(spec.backend, Backend::Onnx);
        assert_eq!(spec.num_classes(), 1000);
        assert_eq!(spec.labels[285], "Egyptian cat");
        assert_eq!(spec.labels[967], "espresso");
    }
    assert_eq!(specs[0].input_shape(), [-1, 3, 224, 224]);
    assert_eq!(specs[1].input_shape(), [-1, 3, 260, 260]);
}
