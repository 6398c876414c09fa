//! The demo's web console: where it listens, and what `--keep` says about reaching it.

use std::path::Path;

use anyhow::Context;
use fleetshift_common::tls::pki;

/// A loopback address no listener holds now, for the console (the replica binds it itself).
pub fn free_loopback_address() -> anyhow::Result<std::net::SocketAddr> {
    let probe = std::net::TcpListener::bind("127.0.0.1:0").context("finding a free port")?;
    Ok(probe.local_addr()?)
}

/// Keeps the fleet up, its console at `console`, until Ctrl-C; says how a browser gets in as
/// `operator` (whose certificate is in `pki_dir`).
pub async fn stay_up(console: &str, pki_dir: &Path, operator: &str) {
    let holder = format!("operator-{operator}");
    let file = |name: String| pki_dir.join(name).display().to_string();
    println!("\nthe fleet stays up (--keep); Ctrl-C stops it");
    println!("web console: {console}");
    println!(
        "  a browser presents the operator's certificate: bundle it with\n    openssl pkcs12 -export -in {} -inkey {} -out operator.p12 -passout pass:\n  import operator.p12 into the browser and trust {} as a certificate authority",
        file(format!("{holder}.pem")),
        file(format!("{holder}.key")),
        file(pki::CA_CERTIFICATE.to_owned()),
    );
    println!(
        "  or: curl --cacert {} --cert {} --key {} {console}/api/v1/plans",
        file(pki::CA_CERTIFICATE.to_owned()),
        file(format!("{holder}.pem")),
        file(format!("{holder}.key")),
    );
    if let Err(error) = tokio::signal::ctrl_c().await {
        eprintln!("cannot wait for Ctrl-C ({error}); stopping");
    }
}
