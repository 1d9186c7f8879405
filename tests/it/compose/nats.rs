//! NATS in the compose files: one server (`docker-compose.yml`) or a 3-node cluster
//! (`docker-compose.cluster.yml`). The gateway and the workers name every node, stream replicas
//! match the nodes, each node runs the pinned image with Tandem's config file (which nats-server
//! itself accepts with the node's environment), has its own name and store, and routes to all
//! the others. The cluster stack's Tandem services differ from the single one's only in NATS.

use std::{
    collections::BTreeSet,
    net::SocketAddr,
    path::{Path, PathBuf},
    process::Command,
};

use serde_yaml_ng::Value;

use super::{GATEWAY, SLOW_WORKER, build::shell_assignment, files::*, for_each_file};
use crate::support::{nats::binary, workspace_root};

/// The config file a node of this file runs with: the cluster one when there are several.
fn expected_conf(compose: &Compose) -> &'static str {
    if compose.nats_services().len() > 1 {
        "nats/nats-cluster.conf"
    } else {
        "nats/nats-server.conf"
    }
}

/// `--config PATH` (or `-c PATH`) of a nats service, as a repository path (through its mount).
fn config_file(node: &Service<'_>) -> (PathBuf, bool) {
    let command = node.command();
    let config = command
        .windows(2)
        .find(|w| w[0] == "--config" || w[0] == "-c")
        .map(|w| w[1].clone())
        .unwrap_or_else(|| panic!("{} runs without --config", node.name));
    let mount = node
        .mount_holding(&config)
        .unwrap_or_else(|| panic!("{}: the config file is not mounted", node.name));
    let file =
        PathBuf::from(&mount.source).join(Path::new(&config).strip_prefix(&mount.target).unwrap());
    (workspace_root().join(file), mount.read_only)
}

/// The `$VARIABLES` a nats-server config file reads.
fn variables_of(conf: &str) -> BTreeSet<String> {
    conf.lines()
        .filter(|line| !line.trim_start().starts_with('#'))
        .flat_map(|line| line.split('$').skip(1))
        .map(|rest| {
            rest.chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                .collect()
        })
        .collect()
}

#[test]
fn the_nats_urls_name_every_node_on_4222_and_replicas_match_the_nodes() {
    for_each_file(|compose| {
        let nodes = compose.nats_services();
        let names: BTreeSet<(String, u16)> = nodes.iter().map(|n| (n.name.clone(), 4222)).collect();
        for (who, settings) in [
            (GATEWAY, gateway_config(compose).nats),
            (SLOW_WORKER, worker_config(compose).nats),
        ] {
            let named: BTreeSet<(String, u16)> =
                settings.servers().into_iter().map(host_port).collect();
            assert_eq!(
                named, names,
                "{who}: TANDEM_NATS_URL={} must name every nats service on port 4222",
                settings.url
            );
            assert_eq!(
                settings.replicas,
                nodes.len(),
                "{who}: TANDEM_NATS_REPLICAS must be the number of nats nodes"
            );
        }
        for node in &nodes {
            let listen: SocketAddr = node
                .env("TANDEM_NATS_LISTEN")
                .expect("a nats service sets TANDEM_NATS_LISTEN")
                .parse()
                .expect("TANDEM_NATS_LISTEN is HOST:PORT");
            assert_listens_on_all_interfaces(&node.name, listen);
            assert_eq!(listen.port(), 4222);
        }
    });
}

#[test]
fn nats_is_the_pinned_version_with_tandems_config_file_and_a_volume_for_its_store() {
    let version = shell_assignment(&read("scripts/setup"), "NATS_VERSION");
    for_each_file(|compose| {
        let mut stores = BTreeSet::new();
        for node in compose.nats_services() {
            assert_eq!(
                node.image(),
                Some(format!("nats:{version}")),
                "{}: the image must be scripts/setup's nats-server",
                node.name
            );
            let (conf, read_only) = config_file(&node);
            assert_eq!(
                conf.canonicalize().ok(),
                workspace_root()
                    .join(expected_conf(compose))
                    .canonicalize()
                    .ok(),
                "{}: --config must be {}",
                node.name,
                expected_conf(compose)
            );
            assert!(read_only, "{}: mount the config read-only", node.name);

            // The conf file's variable references and the service's environment are one set.
            let set: BTreeSet<String> = node.environment().into_iter().map(|(k, _)| k).collect();
            assert_eq!(
                variables_of(&std::fs::read_to_string(&conf).unwrap()),
                set,
                "{}: the config's $VARIABLES vs the service's environment",
                node.name
            );

            // The store is a named volume of its own, declared at the top level.
            let store = node.env("TANDEM_NATS_STORE").unwrap();
            let mount = node
                .mount_holding(&store)
                .expect("the JetStream store is a volume");
            assert!(!mount.read_only);
            let volumes = compose
                .value
                .get("volumes")
                .and_then(Value::as_mapping)
                .expect("top-level volumes");
            assert!(
                volumes.contains_key(mount.source.as_str()),
                "{}: the store's volume {} must be declared under `volumes:`",
                node.name,
                mount.source
            );
            assert!(
                stores.insert(mount.source.clone()),
                "{}: nodes share the store volume {}",
                node.name,
                mount.source
            );
        }
    });
}

#[test]
fn nats_server_accepts_each_nodes_config_with_its_environment() {
    for_each_file(|compose| {
        for node in compose.nats_services() {
            let (conf, _) = config_file(&node);
            let store = tempfile::tempdir().unwrap();
            let output = Command::new(binary())
                .arg("-c")
                .arg(&conf)
                .arg("-t")
                .envs(node.environment())
                .env("TANDEM_NATS_STORE", store.path())
                .output()
                .unwrap_or_else(|e| panic!("cannot run {}: {e}", binary().display()));
            assert!(
                output.status.success(),
                "{}: nats-server -c {} -t refuses it: {}{}",
                node.name,
                conf.display(),
                String::from_utf8_lossy(&output.stdout),
                String::from_utf8_lossy(&output.stderr)
            );
        }
    });
}

#[test]
fn the_cluster_nodes_have_their_own_names_and_route_to_each_other() {
    let compose = Compose::load_file(CLUSTER);
    let nodes = compose.nats_services();
    assert_eq!(nodes.len(), 3, "a 3-node cluster");
    let mut names = BTreeSet::new();
    let mut expected_routes = BTreeSet::new();
    for node in &nodes {
        let name = node.env("TANDEM_NATS_NAME").expect("TANDEM_NATS_NAME");
        assert!(names.insert(name.clone()), "two nodes are called {name}");
        let listen: SocketAddr = node
            .env("TANDEM_NATS_CLUSTER_LISTEN")
            .expect("TANDEM_NATS_CLUSTER_LISTEN")
            .parse()
            .expect("TANDEM_NATS_CLUSTER_LISTEN is HOST:PORT");
        assert_listens_on_all_interfaces(&node.name, listen);
        expected_routes.insert((node.name.clone(), listen.port()));
    }
    for node in &nodes {
        // `[nats://a:6222, nats://b:6222]`: a list in nats-server's syntax.
        let routes = node.env("TANDEM_NATS_ROUTES").expect("TANDEM_NATS_ROUTES");
        let inner = routes
            .trim()
            .strip_prefix('[')
            .and_then(|r| r.strip_suffix(']'))
            .unwrap_or_else(|| panic!("{}: TANDEM_NATS_ROUTES={routes} is not [..]", node.name));
        let named: BTreeSet<(String, u16)> =
            inner.split(',').map(|url| host_port(url.trim())).collect();
        assert_eq!(
            named, expected_routes,
            "{}: the routes must name every node on its cluster port",
            node.name
        );
    }
}

/// A Tandem service's definition without its NATS settings (and, for a second gateway, its
/// published ports).
fn without_nats(service: &Service<'_>, ports: bool) -> Value {
    let mut body = service.body.clone();
    if let Some(map) = body.as_mapping_mut() {
        map.remove("depends_on");
        if !ports {
            map.remove("ports");
        }
        if let Some(env) = map.get_mut("environment").and_then(Value::as_mapping_mut) {
            env.remove("TANDEM_NATS_URL");
            env.remove("TANDEM_NATS_REPLICAS");
        }
    }
    body
}

#[test]
fn the_cluster_stack_runs_the_same_tandem_services_with_other_nats_settings() {
    let single = Compose::load_file(SINGLE);
    let cluster = Compose::load_file(CLUSTER);
    let tandem = |compose: &Compose| -> BTreeSet<String> {
        compose
            .services()
            .into_values()
            .filter(|s| s.binary().is_some())
            .map(|s| s.name)
            .collect()
    };
    let (single_names, cluster_names) = (tandem(&single), tandem(&cluster));
    let extra: BTreeSet<String> = cluster_names.difference(&single_names).cloned().collect();
    assert!(single_names.is_subset(&cluster_names));
    assert_eq!(
        extra,
        BTreeSet::from(["gateway-2".to_owned()]),
        "{CLUSTER}: the Tandem services of {SINGLE} and a second gateway"
    );
    for name in &single_names {
        assert_eq!(
            without_nats(&single.service(name), true),
            without_nats(&cluster.service(name), true),
            "service {name}: apart from TANDEM_NATS_URL, TANDEM_NATS_REPLICAS and depends_on, \
             {CLUSTER} must say what {SINGLE} says"
        );
    }
    for name in &extra {
        assert_eq!(
            without_nats(&single.service(GATEWAY_SERVICE), false),
            without_nats(&cluster.service(name), false),
            "service {name}: apart from its ports and NATS, {SINGLE}'s gateway"
        );
    }
}

/// The gateway's service name in both files.
const GATEWAY_SERVICE: &str = "gateway";
