//! The tests that run the real service binaries refuse stale ones: a binary older than one of
//! its sources was built from other code than the one under test (the rule, checked here on
//! a made-up workspace: `support::process::check_fresh`).

use std::{
    fs::File,
    path::Path,
    time::{Duration, SystemTime},
};

use crate::support::process::check_fresh;

/// Writes `path` (and its folders) under `root`, modified at `second` seconds after the epoch.
fn file_at(root: &Path, path: &str, second: u64) {
    let path = root.join(path);
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    File::create(&path)
        .unwrap()
        .set_modified(SystemTime::UNIX_EPOCH + Duration::from_secs(second))
        .unwrap();
}

#[track_caller]
fn assert_stale(binary: &Path, root: &Path, because: &str) {
    let error = check_fresh(binary, root).expect_err("the binary is older than its sources");
    assert!(
        error.contains("target/debug/tandem-gateway is older than its sources")
            && error.contains(because)
            && error.contains("run `cargo build --workspace --bins`"),
        "{error}"
    );
}

#[test]
fn a_binary_older_than_a_source_file_is_stale() {
    let root = tempfile::tempdir().unwrap();
    let root = root.path();
    for source in [
        "Cargo.lock",
        "core/Cargo.toml",
        "core/src/lib.rs",
        "proto/proto/api.proto",
        "gateway/src/main.rs",
    ] {
        file_at(root, source, 1_000);
    }
    file_at(root, "target/debug/tandem-gateway", 2_000);
    let binary = root.join("target/debug/tandem-gateway");
    assert_eq!(
        check_fresh(&binary, root),
        Ok(()),
        "built after every source"
    );

    // Not sources: other files, other folders.
    file_at(root, "core/README.md", 3_000);
    file_at(root, "bench/src/main.rs", 3_000);
    file_at(root, "tests/it/main.rs", 3_000);
    assert_eq!(check_fresh(&binary, root), Ok(()));

    for (source, second) in [
        ("gateway/src/main.rs", 3_000),
        ("core/Cargo.toml", 3_001),
        ("proto/proto/api.proto", 3_002),
        ("Cargo.lock", 3_003),
    ] {
        file_at(root, source, second);
        assert_stale(&binary, root, source);
    }
    // Built again: fresh again.
    file_at(root, "target/debug/tandem-gateway", 4_000);
    assert_eq!(check_fresh(&binary, root), Ok(()));
}

#[test]
fn with_cargos_record_of_the_build_only_what_the_binary_was_built_from_counts() {
    let root = tempfile::tempdir().unwrap();
    let root = &root.path().canonicalize().unwrap();
    for source in [
        "core/src/lib.rs",
        "gateway/src/main.rs",
        "gateway/assets/my page.html",
    ] {
        file_at(root, source, 1_000);
    }
    file_at(root, "target/debug/tandem-gateway", 2_000);
    let binary = root.join("target/debug/tandem-gateway");
    // As cargo writes it: the binary, then every file it was built from (a space as `\ `).
    std::fs::write(
        root.join("target/debug/tandem-gateway.d"),
        format!(
            "{0}/target/debug/tandem-gateway: {0}/core/src/lib.rs {0}/gateway/src/main.rs \
             {0}/gateway/assets/my\\ page.html\n",
            root.display()
        ),
    )
    .unwrap();
    assert_eq!(check_fresh(&binary, root), Ok(()));

    // A test-only file, a manifest or lock change: `cargo build` would not relink the binary,
    // so they must not make it stale.
    for other in ["core/src/lib_tests.rs", "core/Cargo.toml", "Cargo.lock"] {
        file_at(root, other, 3_000);
    }
    assert_eq!(check_fresh(&binary, root), Ok(()));

    file_at(root, "gateway/assets/my page.html", 3_001);
    assert_stale(&binary, root, "gateway/assets/my page.html");
    file_at(root, "core/src/lib.rs", 3_002);
    assert_stale(&binary, root, "core/src/lib.rs");
}
