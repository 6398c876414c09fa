//! Operator commands against a coordinator (`fleetshift shards`), over mutual TLS with the
//! operator's certificate.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Args;
use fleetshift_common::proto::v1::ErrorKind as WireErrorKind;
use fleetshift_common::proto::v1::{DescribeReplicaRequest, ReplicaStanding};
use fleetshift_common::tls::{
    self,
    channel::server_name_of,
    mtls::{TlsError, TlsFiles},
    refusal::{HandshakeRefusal, Setting},
};
use serde_json::json;
use tonic::transport::Channel;

use super::Output;
use super::progress::{FleetClient, fleet_client};
use crate::exit;
use fleetshift_coordinator::backups::ERROR_KIND_METADATA;

/// How to reach a coordinator as an operator.
#[derive(Debug, Args)]
pub struct Connection {
    /// `https://host:port` of any coordinator replica, or several separated by commas, tried
    /// in turn (a watch moves on to the next when its replica goes away).
    #[arg(long, env = "FLEETSHIFT_COORDINATOR")]
    pub coordinator: String,
    /// The operator's certificate (spiffe://<trust-domain>/operator/<name>).
    #[arg(long, env = "FLEETSHIFT_TLS_CERT")]
    certificate: PathBuf,
    /// The operator certificate's private key (PEM).
    #[arg(long, env = "FLEETSHIFT_TLS_KEY")]
    private_key: PathBuf,
    /// The fleet's CA bundle.
    #[arg(long, env = "FLEETSHIFT_TLS_CA")]
    trust_bundle: PathBuf,
    /// Name the coordinator's certificate is checked against (default: the address's host).
    #[arg(long)]
    server_name: Option<String>,
}

pub(super) fn parse_label(text: &str) -> Result<(String, String), String> {
    let (key, value) = text
        .split_once('=')
        .ok_or_else(|| format!("{text:?} is not key=value"))?;
    Ok((key.to_owned(), value.to_owned()))
}

impl Connection {
    /// The replicas' addresses, in the order given.
    pub(super) fn addresses(&self) -> Vec<&str> {
        self.coordinator
            .split(',')
            .map(str::trim)
            .filter(|address| !address.is_empty())
            .collect()
    }

    async fn connect_to(&self, address: &str) -> Result<Channel, TlsError> {
        let server_name = match &self.server_name {
            Some(name) => name.clone(),
            None => server_name_of(address)?,
        };
        let files = TlsFiles {
            certificate: self.certificate.clone(),
            private_key: self.private_key.clone(),
            trust_bundle: self.trust_bundle.clone(),
        };
        tls::channel::connect(address, &server_name, &files).await
    }

    /// `error` from connecting to `address`; a refused handshake names the setting to check.
    fn explained(&self, address: &str, error: &TlsError) -> String {
        match error {
            TlsError::Handshake { refusal, .. } => match refusal.setting() {
                Some(setting) => format!("{error}; check {}", self.setting_name(setting)),
                None => error.to_string(),
            },
            other => format!("{address}: {other}"),
        }
    }

    /// A call that failed because the coordinator refused this side's certificate after the
    /// handshake seemed done (TLS 1.3 checks the client's certificate last), explained.
    fn refused_handshake(&self, status: &tonic::Status) -> Option<String> {
        let server_name = match &self.server_name {
            Some(name) => name.clone(),
            None => server_name_of(self.addresses().first()?).ok()?,
        };
        let refusal = HandshakeRefusal::find(status, &server_name)?;
        let error = TlsError::Handshake {
            address: self.coordinator.clone(),
            refusal,
        };
        Some(self.explained(&self.coordinator, &error))
    }

    /// How this command is told `setting`, and what it must be.
    fn setting_name(&self, setting: Setting) -> String {
        match setting {
            Setting::TrustBundle => format!(
                "FLEETSHIFT_TLS_CA (--trust-bundle, now {}): it must hold the CA that issued the coordinators' certificates",
                self.trust_bundle.display()
            ),
            Setting::ServerName => "the coordinator address's host, or --server-name: it must be a name the coordinator's certificate carries".to_owned(),
            Setting::Certificate => format!(
                "FLEETSHIFT_TLS_CERT and FLEETSHIFT_TLS_KEY (--certificate, now {}): the operator certificate must be current and issued by the fleet's CA (`fleetshift certs issue --operator NAME`)",
                self.certificate.display()
            ),
        }
    }

    /// A client of the first replica that answers, trying them in turn from the `from`-th
    /// (wrapping around), with that replica's place; every failure, named, when none does.
    pub(super) async fn client_from(&self, from: usize) -> Result<(FleetClient, usize), String> {
        let addresses = self.addresses();
        if addresses.is_empty() {
            return Err("--coordinator names no address".to_owned());
        }
        let mut failures = Vec::new();
        for offset in 0..addresses.len() {
            let index = (from + offset) % addresses.len();
            match self.connect_to(addresses[index]).await {
                Ok(channel) => {
                    let client = fleet_client(channel);
                    return Ok((client, index));
                }
                Err(error) => failures.push(self.explained(addresses[index], &error)),
            }
        }
        Err(failures.join("; "))
    }
}

/// A replica's answer to `DescribeReplica`, with the client that asked.
pub(super) struct Described {
    pub client: FleetClient,
    /// The replica's place in `--coordinator`.
    pub index: usize,
    pub standing: ReplicaStanding,
}

/// Why a replica gave no standing, and the exit code that says so.
#[derive(Debug)]
pub(super) struct Unanswered {
    pub message: String,
    pub exit: u8,
}

impl Connection {
    /// Asks the `index`-th replica for its standing; why not, named, when it cannot answer.
    pub(super) async fn describe(&self, index: usize) -> Result<Described, Unanswered> {
        let address = self
            .addresses()
            .get(index)
            .copied()
            .ok_or_else(|| Unanswered {
                message: format!("--coordinator names no replica number {}", index + 1),
                exit: exit::BAD_INPUT,
            })?;
        let channel = self.connect_to(address).await.map_err(|error| Unanswered {
            message: self.explained(address, &error),
            exit: exit::UNREACHABLE,
        })?;
        let mut client = fleet_client(channel);
        let standing = client
            .describe_replica(DescribeReplicaRequest {})
            .await
            .map_err(|status| match self.refused_handshake(&status) {
                Some(explained) => Unanswered {
                    message: explained,
                    exit: exit::UNREACHABLE,
                },
                None => Unanswered {
                    message: format!("{address}: {}", status.message()),
                    exit: exit::from_status(status.code()),
                },
            })?
            .into_inner();
        Ok(Described {
            client,
            index,
            standing,
        })
    }

    /// For a watch, when several replicas are given: the first that answers as a follower of a
    /// known leader, so streams cost the leader nothing. `None` with a single address, or
    /// when none answers so (no leader known, or replicas too old to say).
    pub(super) async fn follower(&self) -> Option<Described> {
        let count = self.addresses().len();
        if count < 2 {
            return None;
        }
        for index in 0..count {
            if let Ok(described) = self.describe(index).await
                && !described.standing.leading
                && !described.standing.leader_id.is_empty()
            {
                return Some(described);
            }
        }
        None
    }
}

/// A client of the coordinator whose calls carry the command's trace context, or the exit
/// code after saying why there is none.
pub(super) async fn client(
    connection: &Connection,
    output: Output,
) -> Result<FleetClient, ExitCode> {
    match connection.client_from(0).await {
        Ok((client, _)) => Ok(client),
        Err(failures) => {
            super::render::failure(
                output,
                &failures,
                fleetshift_common::error::ErrorKind::Unreachable,
            );
            Err(ExitCode::from(exit::UNREACHABLE))
        }
    }
}

/// One call to the coordinator: connects, makes `call`, and shows its answer with `shown`;
/// the exit code says how it went (unreachable, refused, or done).
pub(super) async fn one_call<T>(
    connection: &Connection,
    output: Output,
    call: impl AsyncFnOnce(&mut FleetClient) -> Result<tonic::Response<T>, tonic::Status>,
    shown: impl FnOnce(T),
) -> ExitCode {
    let mut client = match client(connection, output).await {
        Ok(client) => client,
        Err(code) => return code,
    };
    match call(&mut client).await {
        Ok(response) => {
            shown(response.into_inner());
            ExitCode::from(exit::OK)
        }
        Err(status) => refused(connection, output, &status),
    }
}

/// Reports a coordinator's refusal; the exit code says which kind (an agent's own kind when
/// the refusal carries one).
pub(super) fn refused(connection: &Connection, output: Output, status: &tonic::Status) -> ExitCode {
    if let Some(explained) = connection.refused_handshake(status) {
        super::render::failure(
            output,
            &explained,
            fleetshift_common::error::ErrorKind::Unreachable,
        );
        return ExitCode::from(exit::UNREACHABLE);
    }
    let message = format!("{}: {}", connection.coordinator, status.message());
    match output {
        Output::Human => eprintln!("error: {message}"),
        Output::Json => println!(
            "{}",
            json!({ "error": { "code": format!("{:?}", status.code()), "message": message } })
        ),
    }
    let agent_kind = status
        .metadata()
        .get(ERROR_KIND_METADATA)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.parse::<i32>().ok())
        .and_then(|value| WireErrorKind::try_from(value).ok());
    ExitCode::from(match agent_kind {
        Some(kind) => exit::from_wire(kind),
        None => exit::from_status(status.code()),
    })
}
