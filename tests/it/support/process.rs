//! The services' real binaries, as `cargo build --workspace --bins` leaves them.

use std::{
    path::PathBuf,
    process::{Child, Command, Stdio},
};

/// A built service binary (`target/<profile>/<name>`), as `cargo build --workspace --bins`
/// leaves it next to the test binary's folder.
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
    binary
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
