//! The services' real binaries, as `cargo build --workspace --bins` leaves them, refused when
//! they are older than their sources (a test of yesterday's binary proves nothing).

use std::{
    collections::HashMap,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::{Mutex, OnceLock},
    time::SystemTime,
};

use super::workspace_root;

/// The workspace member folders the service binaries are built from.
pub const SOURCE_FOLDERS: [&str; 6] = [
    "core",
    "proto",
    "gateway",
    "slow-worker",
    "model-server",
    "cli",
];

/// A built service binary (`target/<profile>/<name>`), as `cargo build --workspace --bins`
/// leaves it next to the test binary's folder.
///
/// # Panics
///
/// If it is missing, or older than its sources (see [`check_fresh`]; checked once per binary
/// and process).
pub fn service_binary(name: &str) -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    // target/<profile>/deps/it-<hash> -> target/<profile>/<name>
    let binary = exe
        .parent()
        .and_then(|deps| deps.parent())
        .unwrap()
        .join(name);
    assert!(
        binary.exists(),
        "{} is missing: build the binaries first (scripts/test does: cargo build --workspace --bins)",
        binary.display()
    );
    static CHECKED: OnceLock<Mutex<HashMap<PathBuf, Result<(), String>>>> = OnceLock::new();
    let fresh = CHECKED
        .get_or_init(Mutex::default)
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .entry(binary.clone())
        .or_insert_with(|| check_fresh(&binary, &workspace_root()))
        .clone();
    if let Err(stale) = fresh {
        panic!("{stale}");
    }
    binary
}

/// The staleness rule: `Err` (the message to show) when `binary` is older than the newest of
/// its sources under the workspace `root`.
///
/// Its sources are the files cargo recorded it was built from (`<binary>.d`, which every build
/// writes next to the binary), those under `root`. Without that record: every `*.rs`,
/// `Cargo.toml` and `*.proto` under the [`SOURCE_FOLDERS`] of `root`, and `root/Cargo.lock`.
/// The record is preferred because `cargo build` relinks a binary only when something it is
/// built from changed: a test-only file, or a manifest or lock change that leaves the binary
/// as it was, must not make it stale for ever.
pub fn check_fresh(binary: &Path, root: &Path) -> Result<(), String> {
    // The record names files by their full path; `workspace_root` is `<root>/tests/..`.
    let root = &root.canonicalize().unwrap_or_else(|_| root.to_owned());
    let sources = recorded_sources(binary, root).unwrap_or_else(|| scanned_sources(root));
    let Some((newest, source)) = newest(&sources) else {
        return Ok(());
    };
    let built = modified(binary)
        .ok_or_else(|| format!("cannot read the modification time of {}", binary.display()))?;
    if built >= newest {
        return Ok(());
    }
    let shown = |path: &Path| {
        path.strip_prefix(root)
            .unwrap_or(path)
            .display()
            .to_string()
    };
    Err(format!(
        "{} is older than its sources ({} changed since): run `cargo build --workspace --bins`",
        shown(binary),
        shown(&source)
    ))
}

/// The files under `root` that cargo's dep-info record `<binary>.d` lists, if there is one.
fn recorded_sources(binary: &Path, root: &Path) -> Option<Vec<PathBuf>> {
    let mut record = binary.as_os_str().to_owned();
    record.push(".d");
    let record = std::fs::read_to_string(record).ok()?;
    // `target: dep dep ...`, one rule; a space inside a path is written `\ `.
    let (_, deps) = record.lines().next()?.split_once(": ")?;
    let mut files = Vec::new();
    let mut current = String::new();
    let mut chars = deps.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\\' if chars.peek() == Some(&' ') => current.push(chars.next()?),
            ' ' => files.push(std::mem::take(&mut current)),
            c => current.push(c),
        }
    }
    files.push(current);
    Some(
        files
            .into_iter()
            .filter(|f| !f.is_empty())
            .map(|f| root.join(f))
            .filter(|f| f.starts_with(root))
            .collect(),
    )
}

/// Every `*.rs`, `Cargo.toml` and `*.proto` under the [`SOURCE_FOLDERS`] of `root`, and
/// `root/Cargo.lock`.
fn scanned_sources(root: &Path) -> Vec<PathBuf> {
    fn walk(dir: &Path, files: &mut Vec<PathBuf>) {
        let Ok(entries) = std::fs::read_dir(dir) else {
            return;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            if entry.file_type().is_ok_and(|t| t.is_dir()) {
                walk(&path, files);
            } else if path.file_name().is_some_and(|n| n == "Cargo.toml")
                || path.extension().is_some_and(|e| e == "rs" || e == "proto")
            {
                files.push(path);
            }
        }
    }
    let mut files = vec![root.join("Cargo.lock")];
    for folder in SOURCE_FOLDERS {
        walk(&root.join(folder), &mut files);
    }
    files
}

/// The most recently modified of `files` (those that exist), and when.
fn newest(files: &[PathBuf]) -> Option<(SystemTime, PathBuf)> {
    files
        .iter()
        .filter_map(|f| Some((modified(f)?, f.clone())))
        .max_by_key(|(time, _)| *time)
}

fn modified(path: &Path) -> Option<SystemTime> {
    std::fs::metadata(path).and_then(|m| m.modified()).ok()
}

/// A service process; SIGKILLed on drop.
pub struct ServiceProcess(Child);

impl ServiceProcess {
    pub fn spawn(name: &str, env: &[(&str, String)]) -> Self {
        let child = Command::new(service_binary(name))
            .env("RUST_LOG", "warn")
            .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {name}: {e}"));
        Self(child)
    }
}

impl Drop for ServiceProcess {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A finished command's stdout, as text.
pub fn stdout(output: &std::process::Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// A finished command's stderr, as text.
pub fn stderr(output: &std::process::Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

/// Asserts a finished command's exit status, showing what it printed when it differs.
#[track_caller]
pub fn assert_exit(output: &std::process::Output, code: i32) {
    assert_eq!(
        output.status.code(),
        Some(code),
        "exit status {:?}\nstdout:\n{}\nstderr:\n{}",
        output.status,
        stdout(output),
        stderr(output)
    );
}
