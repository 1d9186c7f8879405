//! The image build's files, for the checks in `mod.rs`: `scripts/setup`'s pins, the
//! Dockerfile's arguments and stages, and the binaries the workspace builds.

use std::collections::BTreeSet;

use super::files::read;
use crate::support::workspace_root;

/// `NAME=value` from a shell script (scripts/setup's pins).
pub(super) fn shell_assignment(script: &str, name: &str) -> String {
    let prefix = format!("{name}=");
    script
        .lines()
        .find_map(|line| line.strip_prefix(&prefix))
        .unwrap_or_else(|| panic!("no {name}=... line"))
        .trim()
        .to_owned()
}

/// `ARG NAME=value` from the Dockerfile.
pub(super) fn dockerfile_arg(dockerfile: &str, name: &str) -> String {
    let prefix = format!("ARG {name}=");
    dockerfile
        .lines()
        .find_map(|line| line.trim().strip_prefix(&prefix))
        .unwrap_or_else(|| panic!("the Dockerfile has no `ARG {name}=...` line"))
        .trim()
        .to_owned()
}

/// The images of the Dockerfile's `FROM` lines, in order.
pub(super) fn dockerfile_bases(dockerfile: &str) -> Vec<String> {
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

/// Every binary the workspace builds: each `[[bin]]` of a member, or, for a member with none,
/// one named after the package when it has `src/main.rs`.
pub(super) fn workspace_binaries() -> BTreeSet<String> {
    let root: toml::Table = read("Cargo.toml").parse().expect("Cargo.toml");
    let members = root["workspace"]["members"]
        .as_array()
        .expect("workspace.members")
        .iter()
        .map(|m| m.as_str().expect("member path").to_owned());
    let mut binaries = BTreeSet::new();
    for dir in members {
        let manifest: toml::Table = read(&format!("{dir}/Cargo.toml"))
            .parse()
            .expect("member manifest");
        let package = manifest["package"]["name"].as_str().expect("package.name");
        let bins = manifest
            .get("bin")
            .and_then(toml::Value::as_array)
            .cloned()
            .unwrap_or_default();
        if bins.is_empty() && workspace_root().join(&dir).join("src/main.rs").exists() {
            binaries.insert(package.to_owned());
        }
        for bin in &bins {
            binaries.insert(bin["name"].as_str().expect("[[bin]] name").to_owned());
        }
    }
    binaries
}
