//! Without Docker: the tests' settings files (`tests/compose/local*.yml`, `small-store.yml`) add
//! only test-only settings to the repository's compose files, which run as they are: the images
//! and the gateways' ports come from the environment those files read (`TANDEM_IMAGE`,
//! `TANDEM_NATS_IMAGE` from scripts/compose-env; `TANDEM_GATEWAY_PORT`, `TANDEM_GATEWAY_2_PORT`
//! from `docker.rs`). The Dockerfile's own checks (one runtime stage for the from-source and the
//! prebuilt binaries) are in tests/it/compose/, in the normal suite.

use std::collections::BTreeSet;

use serde_yaml_ng::Value;

use crate::support::workspace_root;

fn read(relative: &str) -> String {
    std::fs::read_to_string(workspace_root().join(relative))
        .unwrap_or_else(|e| panic!("cannot read {relative}: {e}"))
}

fn yaml(file: &str) -> Value {
    serde_yaml_ng::from_str(&read(file)).unwrap_or_else(|e| panic!("{file}: {e}"))
}

fn services(file: &str) -> BTreeSet<String> {
    yaml(file)["services"]
        .as_mapping()
        .unwrap_or_else(|| panic!("{file}: no services"))
        .keys()
        .map(|k| k.as_str().unwrap().to_owned())
        .collect()
}

/// What the tests may set on a service: never pull (the images are built here), and NATS's
/// client ports on 127.0.0.1 (for the tally).
const TEST_ONLY: [&str; 2] = ["pull_policy", "ports"];

#[test]
fn the_tests_settings_name_every_service_and_change_only_test_only_settings() {
    for (file, local) in [
        ("docker-compose.yml", "tests/compose/local.yml"),
        (
            "docker-compose.cluster.yml",
            "tests/compose/local.cluster.yml",
        ),
    ] {
        // The same services: none added (the second gateway is the cluster file's own), every
        // one never pulled.
        assert_eq!(services(local), services(file), "{local} vs {file}");
        let value = yaml(local);
        let top: Vec<&str> = value
            .as_mapping()
            .unwrap()
            .keys()
            .map(|k| k.as_str().unwrap())
            .collect();
        assert_eq!(top, ["services"], "{local}: only service settings");
        for (name, body) in value["services"].as_mapping().unwrap() {
            let name = name.as_str().unwrap();
            assert_eq!(
                body["pull_policy"].as_str(),
                Some("never"),
                "{local}: {name} must never be pulled"
            );
            for key in body.as_mapping().unwrap().keys() {
                let key = key.as_str().unwrap();
                assert!(
                    TEST_ONLY.contains(&key),
                    "{local}: {name}.{key} is not a test-only setting (the compose file says it)"
                );
            }
            // Ports only for NATS (the tally), on 127.0.0.1.
            if let Some(ports) = body.get("ports").and_then(Value::as_sequence) {
                assert!(name.starts_with("nats"), "{local}: {name}.ports");
                for port in ports {
                    let port = port.as_str().unwrap();
                    assert!(port.starts_with("127.0.0.1:"), "{local}: {name}: {port}");
                }
            }
        }
    }
    // The small store: a volume setting, nothing else.
    let value = yaml("tests/compose/small-store.yml");
    assert!(value.get("services").is_none());
    assert!(value["volumes"].get("nats-data").is_some());
}

#[test]
fn the_compose_files_read_the_variables_the_tests_set() {
    for file in ["docker-compose.yml", "docker-compose.cluster.yml"] {
        let text = read(file);
        for variable in [
            "${TANDEM_IMAGE:-",
            "${TANDEM_NATS_IMAGE:-",
            "${TANDEM_GATEWAY_PORT:-",
        ] {
            assert!(
                text.contains(variable),
                "{file} does not read {variable}...}}"
            );
        }
    }
    assert!(read("docker-compose.cluster.yml").contains("${TANDEM_GATEWAY_2_PORT:-"));
    let docker = read("tests/compose/docker.rs");
    for variable in ["\"TANDEM_GATEWAY_PORT\"", "\"TANDEM_GATEWAY_2_PORT\""] {
        assert!(
            docker.contains(variable),
            "docker.rs does not set {variable}"
        );
    }
}
