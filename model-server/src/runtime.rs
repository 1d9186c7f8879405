//! Finding and loading the ONNX Runtime shared library, once per process.
//!
//! `ort` is built with `load-dynamic`: nothing is downloaded or linked at build time. The
//! library is `ORT_DYLIB_PATH` when set, else `.tandem/lib/libonnxruntime.so*` in the current
//! directory or the nearest ancestor that has one (where `scripts/setup` installs it).
//! ONNX Runtime's environment is process-global, so [`environment`] initialises it once and
//! hands out clones; tests that start several servers in one process share it.

use std::{
    path::{Path, PathBuf},
    sync::Mutex,
};

use anyhow::{Context, bail};
use ort::environment::Environment;

/// Where the setup script installs the library, relative to the repository root.
pub const INSTALL_DIR: &str = ".tandem/lib";

/// The ONNX Runtime library to load: `configured` (from `ORT_DYLIB_PATH`) if given, else the
/// first `.tandem/lib/libonnxruntime.so*` found from the current directory upwards.
pub fn resolve_dylib(configured: Option<&Path>) -> anyhow::Result<PathBuf> {
    if let Some(path) = configured {
        if !path.is_file() {
            bail!(
                "ORT_DYLIB_PATH={} does not exist; point it at libonnxruntime.so, or unset it and run `scripts/setup`",
                path.display()
            );
        }
        return Ok(path.to_path_buf());
    }
    let cwd = std::env::current_dir().context("cannot read the current directory")?;
    for dir in cwd.ancestors() {
        if let Some(found) = find_in(&dir.join(INSTALL_DIR)) {
            return Ok(found);
        }
    }
    bail!(
        "cannot find the ONNX Runtime library: no {INSTALL_DIR}/libonnxruntime.so* in {} or any parent; \
         run `scripts/setup` (it installs ONNX Runtime there) or set ORT_DYLIB_PATH to libonnxruntime.so",
        cwd.display()
    )
}

fn find_in(dir: &Path) -> Option<PathBuf> {
    let mut found: Vec<PathBuf> = std::fs::read_dir(dir)
        .ok()?
        .filter_map(Result::ok)
        .map(|entry| entry.path())
        .filter(|path| {
            path.is_file()
                && path
                    .file_name()
                    .and_then(|n| n.to_str())
                    .is_some_and(|n| n.starts_with("libonnxruntime.so"))
        })
        .collect();
    // Prefer the most specific name (libonnxruntime.so.1.32.0 over libonnxruntime.so).
    found.sort_by_key(|p| std::cmp::Reverse(p.as_os_str().len()));
    found.into_iter().next()
}

static ENVIRONMENT: Mutex<Option<(PathBuf, Environment)>> = Mutex::new(None);

/// The process's ONNX Runtime environment, loading `dylib` on first use.
/// Later calls reuse it (a different `dylib` is ignored, with a warning).
pub fn environment(dylib: &Path) -> anyhow::Result<Environment> {
    let mut slot = ENVIRONMENT
        .lock()
        .map_err(|_| anyhow::anyhow!("the ONNX Runtime environment lock is poisoned"))?;
    if let Some((loaded, environment)) = slot.as_ref() {
        if loaded != dylib {
            tracing::warn!(
                loaded = %loaded.display(),
                requested = %dylib.display(),
                "ONNX Runtime is already loaded in this process; keeping the loaded library"
            );
        }
        return Ok(environment.clone());
    }
    let environment = ort::init_from(dylib)
        .with_context(|| format!("cannot load ONNX Runtime from {}", dylib.display()))?
        .with_name("tandem-model-server")
        .with_telemetry(false)
        .build()
        .map_err(|e| anyhow::anyhow!("cannot create the ONNX Runtime environment: {e}"))?;
    tracing::info!(library = %dylib.display(), "ONNX Runtime loaded");
    *slot = Some((dylib.to_path_buf(), environment.clone()));
    Ok(environment)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_configured_path_must_exist() {
        let err = resolve_dylib(Some(Path::new("/nonexistent/libonnxruntime.so"))).unwrap_err();
        assert!(err.to_string().contains("ORT_DYLIB_PATH"), "{err}");
    }

    #[test]
    fn finds_the_most_specific_library_name() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("libonnxruntime.so"), b"").unwrap();
        std::fs::write(dir.path().join("libonnxruntime.so.1.32.0"), b"").unwrap();
        std::fs::write(dir.path().join("README"), b"").unwrap();
        let found = find_in(dir.path()).unwrap();
        assert!(
            found.ends_with("libonnxruntime.so.1.32.0"),
            "{}",
            found.display()
        );
        assert_eq!(find_in(&dir.path().join("missing")), None);
    }
}
