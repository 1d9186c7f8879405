//! Reading the deployment files and the binaries' configurations, for the checks in `mod.rs`.

use std::{collections::BTreeMap, net::SocketAddr, path::Path};

use crate::support::workspace_root;
use serde_yaml_ng::Value;
use tandem_core::config::FromEnv as _;
use tandem_core::config::{ConfigError, Env};
use tandem_gateway::GatewayConfig;
use tandem_model_server::ModelServerConfig;
use tandem_slow_worker::WorkerConfig;

use super::{GATEWAY, MODEL_SERVER, SLOW_WORKER};

// ---- reading the files --------------------------------------------------------------------------

pub(super) fn read(relative: &str) -> String {
    let path = workspace_root().join(relative);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()))
}

/// The single-server stack.
pub(super) const SINGLE: &str = "docker-compose.yml";
/// The variant on a 3-node NATS cluster.
pub(super) const CLUSTER: &str = "docker-compose.cluster.yml";

/// A compose file, parsed (YAML merge keys applied, as compose does).
pub(super) struct Compose {
    pub(super) file: &'static str,
    pub(super) value: Value,
}

impl Compose {
    /// `docker-compose.yml`.
    pub(super) fn load() -> Self {
        Self::load_file(SINGLE)
    }

    pub(super) fn load_file(file: &'static str) -> Self {
        let mut value: Value = serde_yaml_ng::from_str(&read(file))
            .unwrap_or_else(|e| panic!("{file} is not valid YAML: {e}"));
        // Twice: a merged-in mapping may itself merge another (the cluster's `gateway-2` is
        // `<<: *gateway`, and `gateway` is `<<: *tandem-image`), as compose resolves them.
        for _ in 0..2 {
            value
                .apply_merge()
                .unwrap_or_else(|e| panic!("{file}: bad merge key: {e}"));
        }
        Self { file, value }
    }

    /// Every compose file of the repository.
    pub(super) fn all() -> Vec<Self> {
        [SINGLE, CLUSTER].into_iter().map(Self::load_file).collect()
    }

    /// The services running nats-server (the official `nats` image unless the environment names
    /// another), by name.
    pub(super) fn nats_services(&self) -> Vec<Service<'_>> {
        self.services()
            .into_values()
            .filter(|s| s.image().is_some_and(|i| i.starts_with("nats:")))
            .collect()
    }

    pub(super) fn services(&self) -> BTreeMap<String, Service<'_>> {
        let services = self
            .value
            .get("services")
            .and_then(Value::as_mapping)
            .unwrap_or_else(|| panic!("{} has no `services` mapping", self.file));
        services
            .iter()
            .map(|(name, body)| {
                let name = scalar(name);
                (name.clone(), Service { name, body })
            })
            .collect()
    }

    pub(super) fn service(&self, name: &str) -> Service<'_> {
        self.services()
            .remove(name)
            .unwrap_or_else(|| panic!("{} has no service `{name}`", self.file))
    }

    /// The services whose command runs `binary`, by name (at least one must).
    pub(super) fn all_running(&self, binary: &str) -> Vec<Service<'_>> {
        let found: Vec<Service<'_>> = self
            .services()
            .into_values()
            .filter(|service| service.binary().as_deref() == Some(binary))
            .collect();
        assert!(!found.is_empty(), "{}: no service runs {binary}", self.file);
        found
    }

    /// The service whose command runs `binary`: the first by name when several do (the cluster's
    /// two gateways), which must then be the same service published on other ports.
    pub(super) fn running(&self, binary: &str) -> Service<'_> {
        let mut found = self.all_running(binary);
        let first = found.remove(0);
        for other in &found {
            assert_eq!(
                first.without("ports"),
                other.without("ports"),
                "{}: {} and {} both run {binary}: they must differ only in `ports`",
                self.file,
                first.name,
                other.name
            );
        }
        first
    }
}

/// One service of the compose file.
pub(super) struct Service<'a> {
    pub(super) name: String,
    pub(super) body: &'a Value,
}

/// A bind or volume mount.
#[derive(Debug)]
pub(super) struct Mount {
    pub(super) source: String,
    pub(super) target: String,
    pub(super) read_only: bool,
}

impl Service<'_> {
    pub(super) fn get(&self, key: &str) -> Option<&Value> {
        self.body.get(key)
    }

    pub(super) fn string(&self, key: &str) -> Option<String> {
        self.get(key).map(scalar)
    }

    /// `image`, as compose reads it where the environment sets none of its variables.
    pub(super) fn image(&self) -> Option<String> {
        self.string("image").map(|i| with_defaults(&i))
    }

    /// The service's definition without `key`.
    pub(super) fn without(&self, key: &str) -> Value {
        let mut body = self.body.clone();
        if let Some(map) = body.as_mapping_mut() {
            map.remove(key);
        }
        body
    }

    /// `command` as a list of words.
    pub(super) fn command(&self) -> Vec<String> {
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
    pub(super) fn binary(&self) -> Option<String> {
        self.command()
            .into_iter()
            .next()
            .filter(|word| word.starts_with("tandem-"))
    }

    /// `environment`, in either of compose's forms (mapping, or `KEY=VALUE` list).
    pub(super) fn environment(&self) -> Vec<(String, String)> {
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

    pub(super) fn env(&self, key: &str) -> Option<String> {
        self.environment()
            .into_iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v)
    }

    /// Container ports published (`ports`), short or long syntax.
    pub(super) fn published_container_ports(&self) -> Vec<u16> {
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

    /// Host ports published (`ports`, short syntax), as compose reads them where the
    /// environment sets none of their variables.
    pub(super) fn published_host_ports(&self) -> Vec<u16> {
        let Some(ports) = self.get("ports").and_then(Value::as_sequence) else {
            return Vec::new();
        };
        ports
            .iter()
            .map(|port| {
                let text = with_defaults(&scalar(port));
                let parts: Vec<&str> = text.split(':').collect();
                let host = match parts.as_slice() {
                    [host, _] | [_, host, _] => *host,
                    _ => panic!("{}: port {text:?} is not [IP:]HOST:CONTAINER", self.name),
                };
                host.parse()
                    .unwrap_or_else(|e| panic!("{}: bad host port {host:?}: {e}", self.name))
            })
            .collect()
    }

    /// `volumes`, short or long syntax.
    pub(super) fn mounts(&self) -> Vec<Mount> {
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
    pub(super) fn mount_holding(&self, path: &str) -> Option<Mount> {
        self.mounts()
            .into_iter()
            .filter(|m| Path::new(path).starts_with(&m.target))
            .max_by_key(|m| m.target.len())
    }

    /// `depends_on` as service -> condition (`service_started` for the list form).
    pub(super) fn depends_on(&self) -> BTreeMap<String, String> {
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

/// The `${NAME:-default}` references of a compose value: (NAME, default), in order. Every
/// reference must have a default (`:-`): the files run as they are, with no variable set.
pub(super) fn references(text: &str) -> Vec<(String, String)> {
    let mut found = Vec::new();
    let mut rest = text;
    while let Some(start) = rest.find("${") {
        let after = &rest[start + 2..];
        let end = after
            .find('}')
            .unwrap_or_else(|| panic!("{text:?}: an unclosed `${{`"));
        let (name, default) = after[..end]
            .split_once(":-")
            .unwrap_or_else(|| panic!("{text:?}: `${{{}}}` has no `:-default`", &after[..end]));
        found.push((name.to_owned(), default.to_owned()));
        rest = &after[end + 1..];
    }
    found
}

/// A compose value as compose reads it where the environment sets none of its variables.
pub(super) fn with_defaults(text: &str) -> String {
    let mut out = text.to_owned();
    for (name, default) in references(text) {
        out = out.replacen(&format!("${{{name}:-{default}}}"), &default, 1);
    }
    out
}

/// A YAML scalar as text.
pub(super) fn scalar(value: &Value) -> String {
    match value {
        Value::String(s) => s.clone(),
        Value::Number(n) => n.to_string(),
        Value::Bool(b) => b.to_string(),
        Value::Null => String::new(),
        other => panic!("expected a scalar, found {other:?}"),
    }
}

// ---- the binaries' configurations ---------------------------------------------------------------

pub(super) fn variables(binary: &str) -> Vec<String> {
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
pub(super) fn container_env(binary: &str, service: &Service<'_>) -> Env {
    let mut pairs: Vec<(String, String)> = variables(binary)
        .into_iter()
        .map(|key| (key, " ".to_owned()))
        .collect();
    pairs.extend(service.environment());
    Env::from_pairs(pairs)
}

pub(super) fn gateway_config(compose: &Compose) -> GatewayConfig {
    GatewayConfig::from_source(container_env(GATEWAY, &compose.running(GATEWAY)))
        .expect("the gateway's environment parses")
}

pub(super) fn worker_config(compose: &Compose) -> WorkerConfig {
    WorkerConfig::from_source(container_env(SLOW_WORKER, &compose.running(SLOW_WORKER)))
        .expect("the slow-worker's environment parses")
}

pub(super) fn model_server_config(compose: &Compose) -> ModelServerConfig {
    ModelServerConfig::from_source(container_env(MODEL_SERVER, &compose.running(MODEL_SERVER)))
        .expect("the model server's environment parses")
}

pub(super) fn parse_with(binary: &str, env: Env) -> Result<(), ConfigError> {
    match binary {
        GATEWAY => GatewayConfig::from_source(env).map(drop),
        MODEL_SERVER => ModelServerConfig::from_source(env).map(drop),
        SLOW_WORKER => WorkerConfig::from_source(env).map(drop),
        other => panic!("no configuration known for {other}"),
    }
}

/// Host and port of a URL (`http://model-server:8001`, `nats://nats:4222`).
pub(super) fn host_port(url: &str) -> (String, u16) {
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

pub(super) fn assert_listens_on_all_interfaces(what: &str, addr: SocketAddr) {
    assert!(
        addr.ip().is_unspecified(),
        "{what} listens on {addr}: inside a container only 0.0.0.0 (or [::]) is reachable from \
         the other services and the published port"
    );
}
