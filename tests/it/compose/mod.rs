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
mod image;
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
