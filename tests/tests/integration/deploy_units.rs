//! The shipped systemd units (`deploy/systemd/`): `systemd-analyze verify` accepts them without
//! a single warning (with ExecStart pointed at the built binaries), their offline security
//! exposure stays at or below 2.0 ("OK"), and the hardening this project promises is there.

use std::path::Path;
use std::process::Command;

use fleetshift_tests::binary;

const UNITS: [(&str, &str); 2] = [
    ("fleetshift-coordinator.service", "fleetshift"),
    ("fleetshift-agent.service", "fleetshift-agent"),
];

const HARDENING: [&str; 8] = [
    "NoNewPrivileges=yes",
    "ProtectSystem=strict",
    "ProtectHome=yes",
    "PrivateTmp=yes",
    "CapabilityBoundingSet=",
    "SystemCallFilter=@system-service",
    "RestrictAddressFamilies=AF_INET AF_INET6 AF_UNIX",
    "UMask=0077",
];

fn systemd_analyze(arguments: &[&str], directory: &Path) -> std::process::Output {
    Command::new("systemd-analyze")
        .args(arguments)
        .current_dir(directory)
        .output()
        .expect("systemd-analyze (Debian package systemd; scripts/test installs it)")
}

#[test]
fn the_systemd_units_verify_cleanly_and_are_hardened() {
    let shipped = Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/systemd");
    let built = binary::fleetshift()
        .parent()
        .expect("target dir")
        .to_path_buf();
    let scratch = tempfile::tempdir().expect("scratch");
    for (unit, program) in UNITS {
        let text = std::fs::read_to_string(shipped.join(unit)).expect("unit");
        for directive in HARDENING {
            assert!(
                text.lines().any(|line| line == directive),
                "{unit} lacks {directive}"
            );
        }
        let exec = format!("ExecStart=/usr/local/bin/{program} ");
        assert!(text.contains(&exec), "{unit}: {exec}");
        let local = text.replace(
            &exec,
            &format!("ExecStart={} ", built.join(program).display()),
        );
        std::fs::write(scratch.path().join(unit), local).expect("write");

        let verified = systemd_analyze(&["verify", &format!("./{unit}")], scratch.path());
        let complaints = String::from_utf8_lossy(&verified.stderr).into_owned();
        assert!(
            verified.status.success() && !complaints.contains(unit),
            "{unit}: {complaints}"
        );
        let security = systemd_analyze(
            &["security", "--offline=yes", &format!("./{unit}")],
            scratch.path(),
        );
        let report = String::from_utf8_lossy(&security.stdout).into_owned();
        let exposure: f64 = report
            .lines()
            .find_map(|line| {
                line.split_once("exposure level for ")?
                    .1
                    .split_once(": ")?
                    .1
                    .split_whitespace()
                    .next()?
                    .parse()
                    .ok()
            })
            .unwrap_or_else(|| panic!("{unit}: no exposure level in {report}"));
        assert!(exposure <= 2.0, "{unit}: exposure {exposure}\n{report}");
    }
}
