//! `fleetshift certs`: a development CA and leaf certificates for a local fleet.

use std::net::IpAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Subcommand};
use fleetshift_common::tls::identity::{Role, SpiffeId};
use fleetshift_common::tls::pki::{self, LeafRequest, Validity, Written};
use serde_json::json;

use fleetshift_common::error::ErrorKind;

use super::{Output, render};
use crate::exit;

#[derive(Debug, Args)]
pub struct CertsArgs {
    #[command(subcommand)]
    command: CertsCommand,
}

#[derive(Debug, Subcommand)]
enum CertsCommand {
    /// Create a development CA (ca.pem, ca.key) for a trust domain.
    Init {
        /// Directory for the CA and the certificates it issues.
        #[arg(long, env = "FLEETSHIFT_CERTS_DIR")]
        dir: PathBuf,
        /// The fleet's trust domain, e.g. fleet.example (identities are spiffe://<it>/…).
        #[arg(long)]
        trust_domain: String,
        #[arg(long, default_value_t = 365)]
        days: u32,
        /// Replace an existing CA (certificates it issued stop being trusted).
        #[arg(long)]
        force: bool,
        #[arg(long, value_enum, default_value = "human")]
        output: Output,
    },
    /// Issue a leaf certificate for an agent, an operator or a coordinator.
    Issue {
        #[arg(long, env = "FLEETSHIFT_CERTS_DIR")]
        dir: PathBuf,
        #[command(flatten)]
        holder: Holder,
        /// DNS names a coordinator serves under (repeatable).
        #[arg(long = "dns")]
        dns_names: Vec<String>,
        /// IP addresses a coordinator serves under (repeatable).
        #[arg(long = "ip")]
        ip_addresses: Vec<IpAddr>,
        #[arg(long, default_value_t = 90)]
        days: u32,
        /// Replace an existing certificate of the same holder.
        #[arg(long)]
        force: bool,
        #[arg(long, value_enum, default_value = "human")]
        output: Output,
    },
}

/// Exactly one holder.
#[derive(Debug, Args)]
#[group(required = true, multiple = false)]
struct Holder {
    /// An agent's id (its certificate may claim only the shards bound to it).
    #[arg(long)]
    agent: Option<String>,
    /// An operator's name (roles are granted in the coordinator's configuration).
    #[arg(long)]
    operator: Option<String>,
    /// A coordinator replica's name.
    #[arg(long)]
    coordinator: Option<String>,
}

impl Holder {
    fn role_and_name(&self) -> Option<(Role, &str)> {
        match (&self.agent, &self.operator, &self.coordinator) {
            (Some(name), None, None) => Some((Role::Agent, name)),
            (None, Some(name), None) => Some((Role::Operator, name)),
            (None, None, Some(name)) => Some((Role::Coordinator, name)),
            _ => None,
        }
    }
}

pub fn run(arguments: CertsArgs) -> ExitCode {
    let (result, output) = match arguments.command {
        CertsCommand::Init {
            dir,
            trust_domain,
            days,
            force,
            output,
        } => {
            let created = pki::init(&dir, &trust_domain, Validity::days_from_now(days), force)
                .map(|written| (format!("CA for trust domain {trust_domain}"), written))
                .map_err(|error| error.to_string());
            (created, output)
        }
        CertsCommand::Issue {
            dir,
            holder,
            dns_names,
            ip_addresses,
            days,
            force,
            output,
        } => {
            let request = holder
                .role_and_name()
                .ok_or_else(|| "name exactly one of --agent, --operator, --coordinator".to_owned())
                .and_then(|(role, name)| {
                    let trust_domain =
                        pki::trust_domain_of(&dir).map_err(|error| error.to_string())?;
                    let identity = SpiffeId::new(&trust_domain, role, name)
                        .map_err(|error| error.to_string())?;
                    Ok(LeafRequest {
                        identity,
                        dns_names,
                        ip_addresses,
                        validity: Validity::days_from_now(days),
                    })
                });
            let issued = request.and_then(|request| {
                pki::issue(&dir, &request, force)
                    .map(|written| (request.identity.to_string(), written))
                    .map_err(|error| error.to_string())
            });
            (issued, output)
        }
    };
    match result {
        Ok((what, written)) => {
            print_written(output, &what, &written);
            ExitCode::from(exit::OK)
        }
        Err(message) => {
            render::failure(output, &message, ErrorKind::BadInput);
            ExitCode::from(exit::BAD_INPUT)
        }
    }
}

fn print_written(output: Output, what: &str, written: &Written) {
    match output {
        Output::Human => println!(
            "{what}: certificate {}, private key {} (mode 0600)",
            written.certificate.display(),
            written.private_key.display()
        ),
        Output::Json => println!(
            "{}",
            json!({ "issued": what, "certificate": written.certificate, "private_key": written.private_key })
        ),
    }
}
