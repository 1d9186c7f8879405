//! Without Docker: the files the compose tests build and run with agree with the repository's.
//! `docker/prebuilt.Dockerfile` is the `Dockerfile`'s runtime stage with other sources, and the
//! tests' overrides give every service of the compose files the local image.

use std::collections::BTreeSet;

use serde_yaml_ng::Value;

use crate::support::workspace_root;

fn read(relative: &str) -> String {
    std::fs::read_to_string(workspace_root().join(relative))
        .unwrap_or_else(|e| panic!("cannot read {relative}: {e}"))
}

/// The instructions of the stage starting at the `FROM` line matching `from`, continuation
/// lines joined, comments and blank lines left out.
fn stage(dockerfile: &str, from: impl Fn(&str) -> bool) -> Vec<String> {
    let mut instructions = Vec::new();
    let mut inside = false;
    let mut current = String::new();
    for line in dockerfile.lines() {
        let trimmed = line.trim();
        if current.is_empty() && (trimmed.is_empty() || trimmed.starts_with('#')) {
            continue;
        }
        if current.is_empty() && trimmed.starts_with("FROM ") {
            inside = from(trimmed);
            continue;
        }
        let (text, more) = match trimmed.strip_suffix('\\') {
            Some(text) => (text.trim(), true),
            None => (trimmed, false),
        };
        if !current.is_empty() {
            current.push(' ');
        }
        current.push_str(text);
        if !more {
            if inside {
                instructions.push(std::mem::take(&mut current));
            }
            current.clear();
        }
    }
    instructions
}

/// `COPY [--flags] SRC DEST`: the destination.
fn copy_destination(instruction: &str) -> Option<String> {
    instruction
        .strip_prefix("COPY ")
        .and_then(|rest| rest.split_whitespace().last())
        .map(str::to_owned)
}

#[test]
fn the_prebuilt_image_is_the_dockerfiles_runtime_stage_with_host_built_binaries() {
    let main = stage(&read("Dockerfile"), |from| from.ends_with(" AS runtime"));
    let prebuilt = stage(&read("docker/prebuilt.Dockerfile"), |from| {
        from.ends_with(" AS runtime")
    });
    assert!(!main.is_empty() && !prebuilt.is_empty());

    // Every instruction of the Dockerfile's runtime stage, in order, but where the files come
    // from (COPY --from=build); the prebuilt one may check more (the binaries' libraries).
    let not_copy = |i: &&String| !i.starts_with("COPY ");
    let mut rest = prebuilt.iter().filter(not_copy);
    for instruction in main.iter().filter(not_copy) {
        assert!(
            rest.any(|other| other == instruction),
            "docker/prebuilt.Dockerfile lacks (or misorders) the Dockerfile's `{instruction}`"
        );
    }
    let destinations = |stage: &[String]| -> BTreeSet<String> {
        stage.iter().filter_map(|i| copy_destination(i)).collect()
    };
    assert_eq!(
        destinations(&main),
        destinations(&prebuilt),
        "the files land in the same places"
    );
    // The ONNX Runtime version both name.
    let arg = |file: &str| {
        read(file)
            .lines()
            .find_map(|l| l.strip_prefix("ARG ORT_VERSION=").map(str::to_owned))
            .unwrap_or_else(|| panic!("{file}: no ARG ORT_VERSION=..."))
    };
    assert_eq!(arg("Dockerfile"), arg("docker/prebuilt.Dockerfile"));
    // Offline builds: no `# syntax=` line (it makes BuildKit pull a frontend image).
    for file in [
        "Dockerfile",
        "docker/prebuilt.Dockerfile",
        "docker/nats.Dockerfile",
    ] {
        assert!(
            !read(file)
                .lines()
                .any(|l| l.trim_start().starts_with("# syntax=")),
            "{file}: a `# syntax=` line needs a registry"
        );
    }
}

fn services(file: &str) -> BTreeSet<String> {
    let value: Value = serde_yaml_ng::from_str(&read(file)).unwrap();
    value["services"]
        .as_mapping()
        .unwrap_or_else(|| panic!("{file}: no services"))
        .keys()
        .map(|k| k.as_str().unwrap().to_owned())
        .collect()
}

#[test]
fn the_overrides_give_every_service_the_local_image() {
    for (file, local) in [
        ("docker-compose.yml", "tests/compose/local.yml"),
        (
            "docker-compose.cluster.yml",
            "tests/compose/local.cluster.yml",
        ),
    ] {
        let overridden = services(local);
        for service in services(file) {
            assert!(
                overridden.contains(&service),
                "{local} does not override {file}'s {service}"
            );
        }
        // Each image line names the local images from the environment, never pulled.
        let text = read(local);
        assert!(
            !text.contains("image: nats:") && !text.contains("image: tandem:local"),
            "{local}"
        );
        assert!(text.contains("pull_policy: never"), "{local}");
    }
}
