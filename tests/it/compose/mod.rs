//! The Docker Compose deployment agrees with the code. `docker-compose.yml`, the `Dockerfile`,
//! `.dockerignore`, `nats/nats-server.conf` and `scripts/setup` are read here and checked
//! against what the binaries really read (their config types), the workspace's binaries and
//! `models/`: a misspelt variable, a port that does not match or a stale pin fails here, without
//! Docker, instead of in a container that starts and then waits for ever.

use std::{
    collections::BTreeSet,
    net::SocketAddr,
    path::{Path, PathBuf},
};

use serde_yaml_ng::Value;

use crate::support::workspace_root;

mod files;

use files::*;

const GATEWAY: &str = "tandem-gateway";
const MODEL_SERVER: &str = "tandem-model-server";
const SLOW_WORKER: &str = "tandem-slow-worker";

// ---- the checks -------------------------------------------------------------------------------

#[test]
fn each_tandem_service_runs_a_workspace_binary_that_the_image_carries() {
    let compose = Compose::load();
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
}

#[test]
fn every_variable_set_is_one_the_binary_reads_and_every_environment_parses() {
    let compose = Compose::load();
    let mut problems = Vec::new();
    for service in compose.services().into_values() {
        let Some(binary) = service.binary() else {
            continue;
        };
        let known = variables(&binary);
        for (key, value) in service.environment() {
            if (key.starts_with("TANDEM_") || key.starts_with("ORT_")) && !known.contains(&key) {
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
        "docker-compose.yml:\n  {}",
        problems.join("\n  ")
    );
}

#[test]
fn the_gateway_listens_on_the_published_port_and_its_healthcheck_asks_it_for_readyz() {
    let compose = Compose::load();
    let gateway = compose.running(GATEWAY);
    let config = gateway_config(&compose);
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

#[test]
fn the_model_server_urls_point_at_the_model_server_service_and_its_port() {
    let compose = Compose::load();
    let model_server = compose.running(MODEL_SERVER);
    let addr = model_server_config(&compose).addr;
    assert_listens_on_all_interfaces("the model server", addr);
    for (who, url) in [
        (GATEWAY, gateway_config(&compose).model_server_url),
        (SLOW_WORKER, worker_config(&compose).model_server_url),
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
}

#[test]
fn the_nats_urls_point_at_the_nats_service_which_listens_on_4222() {
    let compose = Compose::load();
    let nats = compose.service("nats");
    for (who, url) in [
        (GATEWAY, gateway_config(&compose).nats.url),
        (SLOW_WORKER, worker_config(&compose).nats.url),
    ] {
        assert_eq!(
            host_port(&url),
            ("nats".to_owned(), 4222),
            "{who}: TANDEM_NATS_URL={url} must name the nats service and port 4222"
        );
    }
    let listen: SocketAddr = nats
        .env("TANDEM_NATS_LISTEN")
        .expect("the nats service sets TANDEM_NATS_LISTEN")
        .parse()
        .expect("TANDEM_NATS_LISTEN is HOST:PORT");
    assert_listens_on_all_interfaces("nats", listen);
    assert_eq!(listen.port(), 4222);
}

#[test]
fn nats_is_the_pinned_version_with_tandems_config_file_and_a_volume_for_its_store() {
    let compose = Compose::load();
    let nats = compose.service("nats");
    let version = shell_assignment(&read("scripts/setup"), "NATS_VERSION");
    assert_eq!(
        nats.string("image").as_deref(),
        Some(format!("nats:{version}").as_str())
    );

    // `--config PATH` (or `-c PATH`) inside a mount of ./nats, naming nats/nats-server.conf.
    let command = nats.command();
    let config = command
        .windows(2)
        .find(|w| w[0] == "--config" || w[0] == "-c")
        .map(|w| w[1].clone())
        .expect("nats runs with --config");
    let mount = nats
        .mount_holding(&config)
        .expect("the config file is mounted");
    let host_file =
        PathBuf::from(&mount.source).join(Path::new(&config).strip_prefix(&mount.target).unwrap());
    assert_eq!(
        workspace_root().join(&host_file).canonicalize().ok(),
        workspace_root()
            .join("nats/nats-server.conf")
            .canonicalize()
            .ok(),
        "--config {config} must be nats/nats-server.conf (mounted from {})",
        mount.source
    );
    assert!(mount.read_only, "mount the config read-only");

    // The conf file's variable references and the service's environment are the same set.
    let conf = read("nats/nats-server.conf");
    let referenced: BTreeSet<String> = conf
        .lines()
        .filter(|line| !line.trim_start().starts_with('#'))
        .flat_map(|line| line.split('$').skip(1))
        .map(|rest| {
            rest.chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                .collect()
        })
        .collect();
    let set: BTreeSet<String> = nats.environment().into_iter().map(|(k, _)| k).collect();
    assert_eq!(
        referenced, set,
        "nats-server.conf's $VARIABLES vs the nats service's environment"
    );

    // The store is a named volume, declared at the top level.
    let store = nats.env("TANDEM_NATS_STORE").unwrap();
    let mount = nats
        .mount_holding(&store)
        .expect("the JetStream store is a volume");
    assert!(!mount.read_only);
    let volumes = compose
        .0
        .get("volumes")
        .and_then(Value::as_mapping)
        .expect("top-level volumes");
    assert!(
        volumes.contains_key(mount.source.as_str()),
        "the store's volume {} must be a named volume declared under `volumes:`",
        mount.source
    );
}

#[test]
fn services_wait_for_what_they_need() {
    let compose = Compose::load();
    let services = compose.services();
    for binary in [GATEWAY, SLOW_WORKER] {
        let service = compose.running(binary);
        let depends = service.depends_on();
        for needed in ["nats", compose.running(MODEL_SERVER).name.as_str()] {
            let condition = depends
                .get(needed)
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
}

#[test]
fn two_slow_workers_run() {
    let compose = Compose::load();
    let worker = compose.running(SLOW_WORKER);
    let replicas = worker
        .get("deploy")
        .and_then(|d| d.get("replicas"))
        .and_then(Value::as_u64);
    assert_eq!(replicas, Some(2));
}

#[test]
fn the_models_named_are_in_the_repository_the_model_server_mounts() {
    let compose = Compose::load();
    let gateway = gateway_config(&compose);
    let worker = worker_config(&compose);
    assert_eq!(
        gateway.slow_model, worker.slow_model,
        "the gateway reports the workers' slow model"
    );
    for model in [&gateway.fast_model, &worker.slow_model] {
        let dir = workspace_root().join("models").join(model);
        for file in ["model.onnx", "labels.txt", "config.toml"] {
            assert!(dir.join(file).exists(), "models/{model}/{file} is missing");
        }
    }

    let model_server = compose.running(MODEL_SERVER);
    let repository = model_server_config(&compose).model_repository;
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
    let bases = dockerfile_bases(&dockerfile);
    let [builder, runtime] = bases.as_slice() else {
        panic!("expected a build and a runtime stage: {bases:?}");
    };
    // rust:<version>-<debian release> and debian:<release>-slim: the same glibc.
    let (rust, release) = builder
        .strip_prefix("rust:")
        .and_then(|tag| tag.split_once('-'))
        .unwrap_or_else(|| panic!("builder {builder} is not rust:<version>-<release>"));
    assert_eq!(
        runtime,
        &format!("debian:{release}-slim"),
        "build and run on one Debian release"
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
