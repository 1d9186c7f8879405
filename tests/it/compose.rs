//! The Docker Compose deployment agrees with the code. `docker-compose.yml`, the `Dockerfile`,
//! `.dockerignore`, `nats/nats-server.conf` and `scripts/setup` are read here and checked
//! against what the binaries really read (their config types), the workspace's binaries and
//! `models/`: a misspelt variable, a port that does not match or a stale pin fails here, without
//! Docker, instead of in a container that starts and then waits for ever.

use std::{
    collections::{BTreeMap, BTreeSet},
    net::SocketAddr,
    path::{Path, PathBuf},
};
use tandem_core::config::FromEnv as _;

use serde_yaml_ng::Value;
use tandem_core::config::{ConfigError, Env};
use tandem_gateway::GatewayConfig;
use tandem_model_server::ModelServerConfig;
use tandem_slow_worker::WorkerConfig;

use crate::support::workspace_root;

const GATEWAY: &str = "tandem-gateway";
const MODEL_SERVER: &str = "tandem-model-server";
const SLOW_WORKER: &str = "tandem-slow-worker";

// ---- reading the files --------------------------------------------------------------------------

fn read(relative: &str) -> String {
    let path = workspace_root().join(relative);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()))
}

/// `docker-compose.yml`, parsed.
struct Compose(Value);

impl Compose {
    fn load() -> Self {
        let value: Value = serde_yaml_ng::from_str(&read("docker-compose.yml"))
            .expect("docker-compose.yml is valid YAML");
        Self(value)
    }

    fn services(&self) -> BTreeMap<String, Service<'_>> {
        let services = self
            .0
            .get("services")
            .and_then(Value::as_mapping)
            .expect("docker-compose.yml has a `services` mapping");
        services
            .iter()
            .map(|(name, body)| {
                let name = scalar(name);
                (name.clone(), Service { name, body })
            })
            .collect()
    }

    fn service(&self, name: &str) -> Service<'_> {
        self.services()
            .remove(name)
            .unwrap_or_else(|| panic!("docker-compose.yml has no service `{name}`"))
    }

    /// The service whose command runs `binary` (exactly one must).
    fn running(&self, binary: &str) -> Service<'_> {
        let mut found: Vec<Service<'_>> = self
            .services()
            .into_values()
            .filter(|service| service.binary().as_deref() == Some(binary))
            .collect();
        assert_eq!(
            found.len(),
            1,
            "exactly one service must run {binary}, found {:?}",
            found.iter().map(|s| &s.name).collect::<Vec<_>>()
        );
        found.remove(0)
    }
}

/// One service of the compose file.
struct Service<'a> {
    name: String,
    body: &'a Value,
}

/// A bind or volume mount.
#[derive(Debug)]
struct Mount {
    source: String,
    target: String,
    read_only: bool,
}

impl Service<'_> {
    fn get(&self, key: &str) -> Option<&Value> {
        self.body.get(key)
    }

    fn string(&self, key: &str) -> Option<String> {
        self.get(key).map(scalar)
    }

    /// `command` as a list of words.
    fn command(&self) -> Vec<String> {
        match self.get("command") {
            None => Vec::new(),
            Some(Value::Sequence(words)) => words.iter().map(scalar).collect(),
            Some(other) => scalar(other)
                .split_whitespace()
                .map(str::to_owned)
                .collect(),
        }
    }

    /// The Tandem binary the service runs: the command's first word, when it names one.
    fn binary(&self) -> Option<String> {
        self.command()
            .into_iter()
            .next()
            .filter(|word| word.starts_with("tandem-"))
    }

    /// `environment`, in either of compose's forms (mapping, or `KEY=VALUE` list).
    fn environment(&self) -> Vec<(String, String)> {
        let pairs: Vec<(String, Option<String>)> = match self.get("environment") {
            None => Vec::new(),
            Some(Value::Mapping(map)) => map
                .iter()
                .map(|(k, v)| (scalar(k), (!v.is_null()).then(|| scalar(v))))
                .collect(),
            Some(Value::Sequence(items)) => items
                .iter()
                .map(|item| {
                    let item = scalar(item);
                    match item.split_once('=') {
                        Some((k, v)) => (k.to_owned(), Some(v.to_owned())),
                        None => (item, None),
                    }
                })
                .collect(),
            Some(other) => panic!(
                "{}: `environment` is neither a mapping nor a list: {other:?}",
                self.name
            ),
        };
        pairs
            .into_iter()
            .map(|(key, value)| {
                let value = value.unwrap_or_else(|| {
                    panic!(
                        "{}: {key} has no value (compose would take it from the shell running \
                         it); the deployment must say it",
                        self.name
                    )
                });
                assert!(
                    !value.contains('$'),
                    "{}: {key}={value}: compose interpolation is not checked here; write the value",
                    self.name
                );
                (key, value)
            })
            .collect()
    }

    fn env(&self, key: &str) -> Option<String> {
        self.environment()
            .into_iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v)
    }

    /// Container ports published (`ports`), short or long syntax.
    fn published_container_ports(&self) -> Vec<u16> {
        let Some(ports) = self.get("ports").and_then(Value::as_sequence) else {
            return Vec::new();
        };
        ports
            .iter()
            .map(|port| {
                let container = match port {
                    Value::Mapping(_) => {
                        scalar(port.get("target").expect("long port syntax has `target`"))
                    }
                    other => {
                        let text = scalar(other);
                        let text = text.split('/').next().unwrap_or_default().to_owned();
                        text.rsplit(':').next().unwrap_or_default().to_owned()
                    }
                };
                container.parse().unwrap_or_else(|e| {
                    panic!("{}: bad container port {container:?}: {e}", self.name)
                })
            })
            .collect()
    }

    /// `volumes`, short or long syntax.
    fn mounts(&self) -> Vec<Mount> {
        let Some(volumes) = self.get("volumes").and_then(Value::as_sequence) else {
            return Vec::new();
        };
        volumes
            .iter()
            .map(|volume| match volume {
                Value::Mapping(_) => Mount {
                    source: volume.get("source").map(scalar).unwrap_or_default(),
                    target: scalar(
                        volume
                            .get("target")
                            .expect("long volume syntax has `target`"),
                    ),
                    read_only: volume
                        .get("read_only")
                        .and_then(Value::as_bool)
                        .unwrap_or(false),
                },
                other => {
                    let text = scalar(other);
                    let parts: Vec<&str> = text.split(':').collect();
                    match parts.as_slice() {
                        [source, target] => Mount {
                            source: (*source).to_owned(),
                            target: (*target).to_owned(),
                            read_only: false,
                        },
                        [source, target, mode] => Mount {
                            source: (*source).to_owned(),
                            target: (*target).to_owned(),
                            read_only: mode.split(',').any(|m| m == "ro"),
                        },
                        _ => panic!("{}: volume {text:?} is not SOURCE:TARGET[:MODE]", self.name),
                    }
                }
            })
            .collect()
    }

    /// The mount whose target holds `path` (the deepest one).
    fn mount_holding(&self, path: &str) -> Option<Mount> {
        self.mounts()
            .into_iter()
            .filter(|m| Path::new(path).starts_with(&m.target))
            .max_by_key(|m| m.target.len())
    }

    /// `depends_on` as service -> condition (`service_started` for the list form).
    fn depends_on(&self) -> BTreeMap<String, String> {
        match self.get("depends_on") {
            None => BTreeMap::new(),
            Some(Value::Sequence(names)) => names
                .iter()
                .map(|n| (scalar(n), "service_started".to_owned()))
                .collect(),
            Some(Value::Mapping(map)) => map
                .iter()
                .map(|(name, body)| {
                    let condition = body
                        .get("condition")
                        .map_or_else(|| "service_started".to_owned(), scalar);
                    (scalar(name), condition)
                })
                .collect(),
            Some(other) => panic!("{}: bad depends_on: {other:?}", self.name),
        }
    }
}

/// A YAML scalar as text.
fn scalar(value: &Value) -> String {
    match value {
        Value::String(s) => s.clone(),
        Value::Number(n) => n.to_string(),
        Value::Bool(b) => b.to_string(),
        Value::Null => String::new(),
        other => panic!("expected a scalar, found {other:?}"),
    }
}

/// `NAME=value` from a shell script (scripts/setup's pins).
fn shell_assignment(script: &str, name: &str) -> String {
    let prefix = format!("{name}=");
    script
        .lines()
        .find_map(|line| line.strip_prefix(&prefix))
        .unwrap_or_else(|| panic!("no {name}=... line"))
        .trim()
        .to_owned()
}

/// `ARG NAME=value` from the Dockerfile.
fn dockerfile_arg(dockerfile: &str, name: &str) -> String {
    let prefix = format!("ARG {name}=");
    dockerfile
        .lines()
        .find_map(|line| line.trim().strip_prefix(&prefix))
        .unwrap_or_else(|| panic!("the Dockerfile has no `ARG {name}=...` line"))
        .trim()
        .to_owned()
}

/// The images of the Dockerfile's `FROM` lines, in order.
fn dockerfile_bases(dockerfile: &str) -> Vec<String> {
    dockerfile
        .lines()
        .filter_map(|line| line.trim().strip_prefix("FROM "))
        .map(|rest| {
            rest.split_whitespace()
                .find(|word| !word.starts_with("--"))
                .expect("FROM names an image")
                .to_owned()
        })
        .collect()
}

/// Every binary the workspace builds: a package with `src/main.rs` builds one named after it,
/// and each `[[bin]]` one more.
fn workspace_binaries() -> BTreeSet<String> {
    let root: toml::Table = read("Cargo.toml").parse().expect("Cargo.toml");
    let members = root["workspace"]["members"]
        .as_array()
        .expect("workspace.members")
        .iter()
        .map(|m| m.as_str().expect("member path").to_owned());
    let mut binaries = BTreeSet::new();
    for dir in std::iter::once(".".to_owned()).chain(members) {
        let manifest: toml::Table = read(&format!("{dir}/Cargo.toml"))
            .parse()
            .expect("member manifest");
        let package = manifest["package"]["name"].as_str().expect("package.name");
        if workspace_root().join(&dir).join("src/main.rs").exists() {
            binaries.insert(package.to_owned());
        }
        for bin in manifest
            .get("bin")
            .and_then(toml::Value::as_array)
            .into_iter()
            .flatten()
        {
            binaries.insert(bin["name"].as_str().expect("[[bin]] name").to_owned());
        }
    }
    binaries
}

// ---- the binaries' configurations ---------------------------------------------------------------

fn variables(binary: &str) -> Vec<String> {
    match binary {
        GATEWAY => GatewayConfig::variables(),
        MODEL_SERVER => ModelServerConfig::variables(),
        SLOW_WORKER => WorkerConfig::variables(),
        other => panic!("no configuration known for {other}"),
    }
}

/// What the binary would read in the service's container: the service's environment alone
/// (every variable the binary reads and the service does not set is blanked, which reads as
/// unset, so the test's own environment cannot change the outcome).
fn container_env(binary: &str, service: &Service<'_>) -> Env {
    let mut pairs: Vec<(String, String)> = variables(binary)
        .into_iter()
        .map(|key| (key, " ".to_owned()))
        .collect();
    pairs.extend(service.environment());
    Env::with_overrides(pairs)
}

fn gateway_config(compose: &Compose) -> GatewayConfig {
    GatewayConfig::from_source(container_env(GATEWAY, &compose.running(GATEWAY)))
        .expect("the gateway's environment parses")
}

fn worker_config(compose: &Compose) -> WorkerConfig {
    WorkerConfig::from_source(container_env(SLOW_WORKER, &compose.running(SLOW_WORKER)))
        .expect("the slow-worker's environment parses")
}

fn model_server_config(compose: &Compose) -> ModelServerConfig {
    ModelServerConfig::from_source(container_env(MODEL_SERVER, &compose.running(MODEL_SERVER)))
        .expect("the model server's environment parses")
}

fn parse_with(binary: &str, env: Env) -> Result<(), ConfigError> {
    match binary {
        GATEWAY => GatewayConfig::from_source(env).map(drop),
        MODEL_SERVER => ModelServerConfig::from_source(env).map(drop),
        SLOW_WORKER => WorkerConfig::from_source(env).map(drop),
        other => panic!("no configuration known for {other}"),
    }
}

/// Host and port of a URL (`http://model-server:8001`, `nats://nats:4222`).
fn host_port(url: &str) -> (String, u16) {
    let parsed = reqwest::Url::parse(url).unwrap_or_else(|e| panic!("{url} is not a URL: {e}"));
    let host = parsed
        .host_str()
        .unwrap_or_else(|| panic!("{url} has no host"))
        .to_owned();
    let port = parsed
        .port()
        .unwrap_or_else(|| panic!("{url} names no port"));
    (host, port)
}

fn assert_listens_on_all_interfaces(what: &str, addr: SocketAddr) {
    assert!(
        addr.ip().is_unspecified(),
        "{what} listens on {addr}: inside a container only 0.0.0.0 (or [::]) is reachable from \
         the other services and the published port"
    );
}

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
