//! The real `fleetshift` binary, run as a child process.

use std::path::PathBuf;
use std::process::{Command, Output};

/// `target/<profile>/fleetshift`, next to this test binary's `deps/` directory.
pub fn fleetshift() -> PathBuf {
    built("fleetshift")
}

/// `target/<profile>/fleetshift-agent`.
pub fn agent() -> PathBuf {
    built("fleetshift-agent")
}

/// `target/<profile>/fleetshift-chaos`.
pub fn chaos() -> PathBuf {
    built("fleetshift-chaos")
}

fn built(name: &str) -> PathBuf {
    let test_binary = std::env::current_exe().expect("test binary path");
    let profile_dir = test_binary
        .parent()
        .and_then(|deps| deps.parent())
        .expect("test binary lives in target/<profile>/deps");
    let binary = profile_dir.join(name);
    assert!(
        binary.exists(),
        "{} is missing: build it first with `cargo build --bins`",
        binary.display()
    );
    binary
}

/// Runs `fleetshift` with `arguments`; the database URL goes through the environment.
pub fn run(database_url: &str, arguments: &[&str]) -> Output {
    Command::new(fleetshift())
        .args(arguments)
        .env("FLEETSHIFT_DATABASE_URL", database_url)
        .env("RUST_LOG", "debug")
        .output()
        .expect("run fleetshift")
}

/// Starts `fleetshift` with `arguments` in the background, its output discarded: a migrator
/// the test kills.
pub fn spawn(database_url: &str, arguments: &[&str]) -> std::process::Child {
    Command::new(fleetshift())
        .args(arguments)
        .env("FLEETSHIFT_DATABASE_URL", database_url)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("start fleetshift")
}

/// Everything the process printed, stdout then stderr.
pub fn printed(output: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}
