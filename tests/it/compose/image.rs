//! The checks on the image: what the Dockerfile builds and carries (the ONNX Runtime that
//! `scripts/setup` pins, one Debian release, the runtime stage over either binaries stage),
//! what `scripts/compose-env` stages for it, and the images the compose files name.

use super::*;

#[test]
fn the_image_carries_the_onnx_runtime_that_scripts_setup_pins() {
    let setup = read("scripts/setup");
    let dockerfile = read("Dockerfile");
    for name in ["ORT_VERSION", "ORT_WHEEL_SHA256", "ORT_LIB_SHA256"] {
        assert_eq!(
            dockerfile_arg(&dockerfile, name),
            shell_assignment(&setup, name),
            "the Dockerfile's {name} must be scripts/setup's"
        );
    }
    assert!(
        dockerfile.contains("scripts/setup"),
        "the image gets ONNX Runtime through scripts/setup"
    );

    // ORT_DYLIB_PATH: the image's and the model server's agree, and name the pinned version.
    let version = shell_assignment(&setup, "ORT_VERSION");
    let image_path = dockerfile
        .lines()
        .find_map(|line| line.trim().strip_prefix("ENV ORT_DYLIB_PATH="))
        .expect("the Dockerfile sets ORT_DYLIB_PATH")
        .replace("${ORT_VERSION}", &version);
    assert!(
        image_path.ends_with(&format!("libonnxruntime.so.{version}")),
        "{image_path}"
    );
    let compose = Compose::load();
    assert_eq!(
        model_server_config(&compose).ort_dylib_path,
        Some(PathBuf::from(&image_path)),
        "the model server's ORT_DYLIB_PATH must be where the image has the library"
    );
}

#[test]
fn the_image_is_built_as_documented_on_one_debian_release() {
    let dockerfile = read("Dockerfile");
    assert!(
        dockerfile.contains("cargo build --release --workspace --bins --locked"),
        "the image builds with the lock file, like the release build"
    );
    let stages = dockerfile_stages(&dockerfile);
    let names: Vec<&str> = stages.iter().map(|s| s.name.as_str()).collect();
    assert_eq!(
        names,
        [
            "binaries-source",
            "binaries-prebuilt",
            "binaries",
            "runtime"
        ],
        "the stages: where the binaries come from (two ways), the one chosen, what runs"
    );
    let builder = &stages[0].from;
    let runtime = dockerfile_arg(&dockerfile, "TANDEM_BASE_IMAGE");
    // rust:<version>-<debian release> and debian:<release>-slim: the same glibc.
    let (rust, release) = builder
        .strip_prefix("rust:")
        .and_then(|tag| tag.split_once('-'))
        .unwrap_or_else(|| panic!("builder {builder} is not rust:<version>-<release>"));
    assert_eq!(
        runtime,
        format!("debian:{release}-slim"),
        "build and run on one Debian release (TANDEM_BASE_IMAGE's default)"
    );

    let root: toml::Table = read("Cargo.toml").parse().unwrap();
    let wanted = root["workspace"]["package"]["rust-version"]
        .as_str()
        .unwrap();
    let numbers = |v: &str| -> Vec<u32> { v.split('.').map(|n| n.parse().unwrap()).collect() };
    assert!(
        numbers(rust) >= numbers(wanted),
        "the builder's Rust {rust} is older than the workspace's rust-version {wanted}"
    );
}

#[test]
fn one_runtime_stage_runs_either_binaries_stage_chosen_by_a_build_argument() {
    let dockerfile = read("Dockerfile");
    let stages = dockerfile_stages(&dockerfile);
    let stage = |name: &str| {
        stages
            .iter()
            .find(|s| s.name == name)
            .unwrap_or_else(|| panic!("the Dockerfile has no stage {name}"))
    };
    // `FROM binaries-${TANDEM_BINARIES}`: BuildKit builds only the stage named (a prebuilt
    // build pulls no Rust image); the default is the from-source build.
    assert_eq!(stage("binaries").from, "binaries-${TANDEM_BINARIES}");
    assert!(stage("binaries").instructions.is_empty());
    let default = dockerfile_arg(&dockerfile, "TANDEM_BINARIES");
    assert_eq!(default, "source", "the from-source build is the default");
    // The runtime stage is the last (what `docker build` makes), on TANDEM_BASE_IMAGE, and
    // takes its files from `binaries` alone, whichever that is.
    let runtime = stages.last().unwrap();
    assert_eq!(runtime.name, "runtime");
    assert_eq!(runtime.from, "${TANDEM_BASE_IMAGE}");
    assert_eq!(runtime.copies_from(), ["binaries", "binaries"]);
    for other in &stages[..stages.len() - 1] {
        assert!(
            other.copies_from().is_empty(),
            "stage {} copies from another stage",
            other.name
        );
    }
    let runtime_text = runtime.instructions.join("\n");
    for needed in [
        "useradd --system --user-group --uid 10001",
        "ldd \"/usr/local/lib/onnxruntime/libonnxruntime.so.${ORT_VERSION}\"",
        "ldd \"/usr/local/bin/$bin\"",
        "ENV ORT_DYLIB_PATH=/usr/local/lib/onnxruntime/libonnxruntime.so.${ORT_VERSION}",
        "/usr/local/bin/http-ok",
        "USER tandem",
    ] {
        assert!(
            runtime_text.contains(needed),
            "the runtime stage lacks `{needed}`"
        );
    }
    // Both binaries stages leave the same two folders, /out/bin and /out/lib.
    let source = stage("binaries-source").instructions.join("\n");
    for folder in ["/out/bin", "/out/lib"] {
        assert!(source.contains(&format!("mkdir -p {folder}")), "{folder}");
    }
    let prebuilt = stage("binaries-prebuilt");
    assert_eq!(prebuilt.from, "scratch", "the prebuilt stage pulls nothing");
    let copies: BTreeSet<(Vec<String>, String)> = prebuilt.context_copies().into_iter().collect();
    assert_eq!(
        copies,
        BTreeSet::from([
            (
                vec!["docker/prebuilt/bin/".to_owned()],
                "/out/bin/".to_owned()
            ),
            (
                vec!["docker/prebuilt/lib/".to_owned()],
                "/out/lib/".to_owned()
            ),
        ]),
        "the prebuilt stage takes docker/prebuilt/bin and lib, nothing else"
    );
    // No stage but the prebuilt one reads docker/prebuilt/ (the source build must not
    // depend on it; it is there only while scripts/compose-env builds).
    for other in stages.iter().filter(|s| s.name != "binaries-prebuilt") {
        for (sources, _) in other.context_copies() {
            assert!(
                sources.iter().all(|s| !s.starts_with("docker/prebuilt")),
                "stage {} reads docker/prebuilt/",
                other.name
            );
        }
    }
    // Offline builds: no `# syntax=` line (it makes BuildKit pull a frontend image); one
    // Dockerfile for Tandem.
    for file in ["Dockerfile", "docker/nats.Dockerfile"] {
        assert!(
            !read(file)
                .lines()
                .any(|l| l.trim_start().starts_with("# syntax=")),
            "{file}: a `# syntax=` line needs a registry"
        );
    }
    assert!(
        !workspace_root().join("docker/prebuilt.Dockerfile").exists(),
        "the prebuilt image is the Dockerfile's TANDEM_BINARIES=prebuilt"
    );
}

#[test]
fn scripts_compose_env_stages_what_the_prebuilt_stage_takes_and_builds_with_the_argument() {
    let script = read("scripts/compose-env");
    for needed in [
        "local prebuilt=$ROOT/docker/prebuilt",
        "mkdir -p \"$prebuilt/bin\" \"$prebuilt/lib\"",
        "cp \"target/release/$bin\" \"$prebuilt/bin/\"",
        "\"$prebuilt/lib/\"",
        "BINARIES=prebuilt",
        "--build-arg \"TANDEM_BINARIES=$BINARIES\"",
        "--build-arg \"TANDEM_BASE_IMAGE=$BASE_IMAGE\"",
        "-f Dockerfile . ",
        "rm -rf \"$prebuilt\"",
    ] {
        assert!(
            script.contains(needed),
            "scripts/compose-env lacks `{needed}`"
        );
    }
    for binary in [GATEWAY, MODEL_SERVER, SLOW_WORKER] {
        assert!(
            script.contains(binary),
            "scripts/compose-env does not stage {binary}"
        );
    }
    // Git-ignored; in the build context.
    assert!(
        read(".gitignore")
            .lines()
            .any(|l| l.trim() == "/docker/prebuilt/"),
        ".gitignore must list /docker/prebuilt/"
    );
    for line in read(".dockerignore").lines().map(str::trim) {
        let pattern = line.trim_end_matches('/');
        assert!(
            !["docker", "docker/prebuilt", "docker/*", "docker/**"].contains(&pattern),
            ".dockerignore leaves out docker/prebuilt/ ({line})"
        );
    }
}

#[test]
fn the_images_default_to_the_official_ones_and_the_environment_may_name_others() {
    let dockerfile = read("Dockerfile");
    let nats_version = shell_assignment(&read("scripts/setup"), "NATS_VERSION");
    let script = read("scripts/compose-env");
    for_each_file(|compose| {
        for service in compose.services().into_values() {
            let image = service.string("image").unwrap_or_default();
            if service.binary().is_none() {
                assert_eq!(
                    image,
                    format!("${{TANDEM_NATS_IMAGE:-nats:{nats_version}}}"),
                    "{}: the official NATS image unless TANDEM_NATS_IMAGE names another",
                    service.name
                );
                continue;
            }
            assert_eq!(
                image, "${TANDEM_IMAGE:-tandem:local}",
                "{}: the image built here unless TANDEM_IMAGE names another",
                service.name
            );
            let build = service.get("build").expect("build");
            assert_eq!(build.get("context").map(scalar).as_deref(), Some("."));
            assert!(build.get("dockerfile").is_none(), "the one Dockerfile");
            let args = build.get("args").expect("build.args");
            for arg in ["TANDEM_BINARIES", "TANDEM_BASE_IMAGE"] {
                let value = args
                    .get(arg)
                    .map(scalar)
                    .unwrap_or_else(|| panic!("{}: build.args has no {arg}", service.name));
                assert_eq!(
                    value,
                    format!("${{{arg}:-{}}}", dockerfile_arg(&dockerfile, arg)),
                    "{}: build.args.{arg} defaults to the Dockerfile's default",
                    service.name
                );
            }
        }
    });
    // The variables scripts/compose-env exports are the ones the compose files read.
    for variable in [
        "TANDEM_IMAGE",
        "TANDEM_NATS_IMAGE",
        "TANDEM_BINARIES",
        "TANDEM_BASE_IMAGE",
    ] {
        assert!(
            script.contains(&format!("printf 'export {variable}=%q\\n'")),
            "scripts/compose-env does not export {variable}"
        );
    }
}
