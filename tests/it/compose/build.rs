//! The image build's files, for the checks in `mod.rs`: `scripts/setup`'s pins, the
//! Dockerfile's arguments and stages (`binaries-source`, `binaries-prebuilt`, `binaries`,
//! `runtime`), and the binaries the workspace builds.

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

/// One stage of the Dockerfile: `FROM <from> AS <name>` and its instructions (continuation lines
/// joined, comments and blank lines left out).
pub(super) struct Stage {
    pub(super) name: String,
    pub(super) from: String,
    pub(super) instructions: Vec<String>,
}

impl Stage {
    /// The `COPY` instructions' `--from=` stages.
    pub(super) fn copies_from(&self) -> Vec<String> {
        self.instructions
            .iter()
            .filter_map(|i| i.strip_prefix("COPY "))
            .flat_map(str::split_whitespace)
            .filter_map(|word| word.strip_prefix("--from="))
            .map(str::to_owned)
            .collect()
    }

    /// `COPY [--flags] SRC... DEST`: (sources, destination), for the copies from the context.
    pub(super) fn context_copies(&self) -> Vec<(Vec<String>, String)> {
        self.instructions
            .iter()
            .filter_map(|i| i.strip_prefix("COPY "))
            .filter(|rest| !rest.contains("--from="))
            .map(|rest| {
                let mut words: Vec<String> = rest
                    .split_whitespace()
                    .filter(|w| !w.starts_with("--"))
                    .map(str::to_owned)
                    .collect();
                let destination = words.pop().expect("COPY names a destination");
                (words, destination)
            })
            .collect()
    }
}

/// The Dockerfile's instructions, continuation lines joined, comments and blank lines left out.
fn instructions(dockerfile: &str) -> Vec<String> {
    let mut all = Vec::new();
    let mut current = String::new();
    for line in dockerfile.lines() {
        let trimmed = line.trim();
        if current.is_empty() && (trimmed.is_empty() || trimmed.starts_with('#')) {
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
            all.push(std::mem::take(&mut current));
        }
    }
    all
}

/// The Dockerfile's stages, in order (every `FROM` must name its stage).
pub(super) fn dockerfile_stages(dockerfile: &str) -> Vec<Stage> {
    let mut stages: Vec<Stage> = Vec::new();
    for instruction in instructions(dockerfile) {
        if let Some(rest) = instruction.strip_prefix("FROM ") {
            let words: Vec<&str> = rest
                .split_whitespace()
                .filter(|w| !w.starts_with("--"))
                .collect();
            let [from, as_, name] = words.as_slice() else {
                panic!("`{instruction}`: every stage is `FROM <image> AS <name>`");
            };
            assert!(as_.eq_ignore_ascii_case("as"), "`{instruction}`");
            stages.push(Stage {
                name: (*name).to_owned(),
                from: (*from).to_owned(),
                instructions: Vec::new(),
            });
        } else if let Some(stage) = stages.last_mut() {
            stage.instructions.push(instruction);
        }
    }
    stages
}
