//! The Docker Compose deployments agree with the code. `docker-compose.yml` and its 3-node NATS
//! cluster variant `docker-compose.cluster.yml`, the `Dockerfile`, `.dockerignore`,
//! `nats/nats-server.conf`, `nats/nats-cluster.conf` and `scripts/setup` are read here and checked
//! against what the binaries really read (their config types), the workspace's binaries and
//! `models/`: a misspelt variable, a port that does not match or a stale pin fails here, without
//! Docker, instead of in a container that starts and then waits for ever.

use std::{collections::BTreeSet, path::PathBuf};

use serde_yaml_ng::Value;

use crate::support::workspace_root;

mod build;
mod files;
mod nats;

use build::*;
use files::*;

/// Runs `check` on every compose file; a failure names the file.
fn for_each_file(check: impl Fn(&Compose)) {
    for compose in Compose::all() {
        let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| check(&compose)));
        if let Err(panic) = outcome {
            let message = panic
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| panic.downcast_ref::<&str>().map(|s| (*s).to_owned()))
                .unwrap_or_default();
            panic!("{}: {message}", compose.file);
        }
    }
}

const GATEWAY: &str = "tandem-gateway";
const MODEL_SERVER: &str = "tandem-model-server";
const SLOW_WORKER: &str = "tandem-slow-worker";

// ---- the checks -------------------------------------------------------------------------------

#[test]
fn each_tandem_service_runs_a_workspace_binary_that_the_image_carries() {
    for_each_file(|compose| {
        let dockerfile = read("Dockerfile");
        let binaries = workspace_binaries();
        for binary in [GATEWAY, MODEL_SERVER, SLOW_WORKER] {
            assert!(
                binaries.contains(binary),
                "{binary} is not built by the workspace: {binaries:?}"
            );
            assert!(
                dockerfile.contains(&format!("target/release/{binary}")),
                "the Dockerfile does not copy {binary} into the image"
            );
            compose.running(binary);
        }
        let mut images = BTreeSet::new();
        for service in compose.services().into_values() {
            let Some(binary) = service.binary() else {
                continue;
            };
            assert!(
                binaries.contains(&binary),
                "service {} runs `{binary}`, which the workspace does not build ({binaries:?})",
                service.name
            );
            assert!(
                service.get("build").is_some(),
                "service {} runs a Tandem binary but does not build the image",
                service.name
            );
            images.insert(service.string("image").unwrap_or_default());
        }
        assert_eq!(
            images.len(),
            1,
            "the Tandem services must share one image: {images:?}"
        );
    });
}

#[test]
fn every_variable_set_is_one_the_binary_reads_and_every_environment_parses() {
    for_each_file(|compose| {
        let mut problems = Vec::new();
        for service in compose.services().into_values() {
            let Some(binary) = service.binary() else {
                continue;
            };
            let known = variables(&binary);
            for (key, value) in service.environment() {
                if (key.starts_with("TANDEM_") || key.starts_with("ORT_")) && !known.contains(&key)
                {
                    problems.push(format!(
                        "{}: {key}={value} is not read by {binary} (it reads {known:?})",
                        service.name
                    ));
                }
            }
            if let Err(e) = parse_with(&binary, container_env(&binary, &service)) {
                problems.push(format!(
                    "{}: {binary} would refuse its environment: {e}",
                    service.name
                ));
            }
        }
        assert!(
            problems.is_empty(),
            "{}:\n  {}",
            compose.file,
            problems.join("\n  ")
        );
    });
}

#[test]
fn the_gateway_listens_on_the_published_port_and_its_healthcheck_asks_it_for_readyz() {
    for_each_file(|compose| {
        for gateway in compose.all_running(GATEWAY) {
            the_gateway_listens_on_the_published_port(compose, &gateway);
        }
    });
}

fn the_gateway_listens_on_the_published_port(compose: &Compose, gateway: &Service<'_>) {
    {
        let config = gateway_config(compose);
        assert_listens_on_all_interfaces("the gateway", config.addr);
        let port = config.addr.port();
        assert!(
            gateway.published_container_ports().contains(&port),
            "the gateway listens on {port} but publishes container ports {:?}",
            gateway.published_container_ports()
        );

        let healthcheck = gateway
            .get("healthcheck")
            .expect("the gateway has a healthcheck");
        let test: Vec<String> = healthcheck
            .get("test")
            .and_then(Value::as_sequence)
            .expect("healthcheck.test is a list")
            .iter()
            .map(scalar)
            .collect();
        assert_eq!(
            test,
            ["CMD", "http-ok", &port.to_string(), "/readyz"],
            "the healthcheck must ask the gateway's own port for /readyz"
        );
        assert!(
            read("Dockerfile").contains("/usr/local/bin/http-ok"),
            "the image must carry http-ok, the healthcheck's command"
        );
        assert!(workspace_root().join("docker/http-ok").exists());
    }
}

#[test]
fn the_model_server_urls_point_at_the_model_server_service_and_its_port() {
    for_each_file(|compose| {
        let model_server = compose.running(MODEL_SERVER);
        let addr = model_server_config(compose).addr;
        assert_listens_on_all_interfaces("the model server", addr);
        for (who, url) in [
            (GATEWAY, gateway_config(compose).model_server_url),
            (SLOW_WORKER, worker_config(compose).model_server_url),
        ] {
            assert!(
                url.starts_with("http://"),
                "{who}: TANDEM_MODEL_SERVER_URL={url} (plain gRPC: http://)"
            );
            assert_eq!(
                host_port(&url),
                (model_server.name.clone(), addr.port()),
                "{who}: TANDEM_MODEL_SERVER_URL={url} must name the model server's service and port"
            );
        }
    });
}

#[test]
fn services_wait_for_what_they_need() {
    for_each_file(|compose| {
        let services = compose.services();
        for binary in [GATEWAY, SLOW_WORKER] {
            let service = compose.running(binary);
            let depends = service.depends_on();
            let nats = compose.nats_services();
            assert!(!nats.is_empty(), "no nats service");
            let model_server = compose.running(MODEL_SERVER).name;
            for needed in nats.iter().map(|s| &s.name).chain([&model_server]) {
                let condition = depends
                    .get(needed.as_str())
                    .unwrap_or_else(|| panic!("{} must depend on {needed}", service.name));
                match condition.as_str() {
                    "service_started" => {}
                    "service_healthy" => assert!(
                        services[needed].get("healthcheck").is_some(),
                        "{} waits for {needed} to be healthy, which has no healthcheck",
                        service.name
                    ),
                    other => panic!("{}: unexpected condition {other} on {needed}", service.name),
                }
            }
        }
    });
}

#[test]
fn two_slow_workers_run() {
    for_each_file(|compose| {
        let worker = compose.running(SLOW_WORKER);
        let replicas = worker
            .get("deploy")
            .and_then(|d| d.get("replicas"))
            .and_then(Value::as_u64);
        assert_eq!(replicas, Some(2));
    });
}

#[test]
fn the_models_named_are_in_the_repository_the_model_server_mounts() {
    for_each_file(|compose| {
        let gateway = gateway_config(compose);
        let worker = worker_config(compose);
        for model in [&gateway.fast_model, &worker.slow_model] {
            let dir = workspace_root().join("models").join(model);
            for file in ["model.onnx", "labels.txt", "config.toml"] {
                assert!(dir.join(file).exists(), "models/{model}/{file} is missing");
            }
        }

        let model_server = compose.running(MODEL_SERVER);
        let repository = model_server_config(compose).model_repository;
        let repository = repository.to_str().unwrap();
        let mount = model_server
            .mount_holding(repository)
            .expect("the model repository is mounted");
        assert_eq!(
            mount.target, repository,
            "mount models/ exactly at TANDEM_MODEL_REPOSITORY"
        );
        assert_eq!(
            workspace_root().join(&mount.source).canonicalize().ok(),
            workspace_root().join("models").canonicalize().ok(),
            "the model server must mount ./models"
        );
        assert!(mount.read_only, "mount the models read-only");
    });
}

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

#[test]
fn the_cluster_file_has_two_gateways_each_on_its_own_port() {
    let single = Compose::load_file(SINGLE);
    let cluster = Compose::load_file(CLUSTER);
    let gateways = |compose: &Compose| -> Vec<(String, Vec<u16>, Vec<String>)> {
        compose
            .all_running(GATEWAY)
            .iter()
            .map(|g| {
                let ports = g.get("ports").and_then(Value::as_sequence).expect("ports");
                let variables = ports
                    .iter()
                    .flat_map(|p| references(&scalar(p)))
                    .map(|(name, _)| name)
                    .collect();
                (g.name.clone(), g.published_host_ports(), variables)
            })
            .collect()
    };
    assert_eq!(
        gateways(&single),
        [(
            "gateway".to_owned(),
            vec![8000],
            vec!["TANDEM_GATEWAY_PORT".to_owned()]
        )]
    );
    assert_eq!(
        gateways(&cluster),
        [
            (
                "gateway".to_owned(),
                vec![8000],
                vec!["TANDEM_GATEWAY_PORT".to_owned()]
            ),
            (
                "gateway-2".to_owned(),
                vec![8002],
                vec!["TANDEM_GATEWAY_2_PORT".to_owned()]
            ),
        ],
        "two gateways, each published on a port of its own (the environment may move them)"
    );
    // `running` checks that they are the same service but for `ports`.
    cluster.running(GATEWAY);
}

#[test]
fn the_build_context_leaves_out_build_output_and_keeps_the_sources() {
    let ignored: Vec<String> = read(".dockerignore")
        .lines()
        .map(str::trim)
        .filter(|line| !line.is_empty() && !line.starts_with('#'))
        .map(|line| line.trim_end_matches('/').to_owned())
        .collect();
    for needed in ["target", ".tandem"] {
        assert!(
            ignored.iter().any(|p| p == needed),
            ".dockerignore must list {needed}/"
        );
    }
    for kept in [
        "Cargo.toml",
        "Cargo.lock",
        "scripts",
        "scripts/setup",
        "docker",
        "src",
        "core",
        "proto",
        "gateway",
        "model-server",
        "slow-worker",
    ] {
        assert!(
            !ignored.iter().any(|p| p == kept),
            ".dockerignore leaves out {kept}, which the image build needs"
        );
    }
}
