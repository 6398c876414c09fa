//! Opening a session's two streams with one replica. [`Connect`] is what the reconnect loop
//! asks for a session; [`TlsConnect`] opens a real one over mutual TLS, and tests hand the
//! loop in-memory streams instead.

use std::future::Future;
use std::pin::Pin;

use fleetshift_common::proto::MESSAGE_LIMIT;
use fleetshift_common::proto::v1::agent_message::Body as AgentBody;
use fleetshift_common::proto::v1::agent_service_client::AgentServiceClient;
use fleetshift_common::proto::v1::{AgentMessage, CoordinatorMessage, Hello};
use fleetshift_common::tls::{
    self,
    mtls::{TlsError, TlsFiles},
    refusal::Setting,
};
use tokio::sync::mpsc;
use tokio_stream::Stream;
use tokio_stream::wrappers::ReceiverStream;
use tonic::Status;

use crate::config::{CoordinatorEndpoint, CoordinatorLink};

/// What the coordinator sends down a session.
pub type Inbound = Pin<Box<dyn Stream<Item = Result<CoordinatorMessage, Status>> + Send>>;

/// A session's two ends as the agent holds them; the Hello has been sent.
pub struct Streams {
    pub outbound: mpsc::Sender<AgentMessage>,
    pub inbound: Inbound,
}

impl std::fmt::Debug for Streams {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter.debug_struct("Streams").finish_non_exhaustive()
    }
}

/// Why a session could not be held.
#[derive(Debug, thiserror::Error)]
pub enum SessionError {
    #[error(transparent)]
    Tls(#[from] TlsError),
    #[error("{error}; check {check}")]
    TlsRefused { error: TlsError, check: String },
    #[error("the coordinator refused the session: {0}")]
    Refused(String),
    #[error("the session's stream closed before the Hello was sent")]
    Closed,
    #[error("the coordinator's handshake is not usable: {0}")]
    Handshake(String),
}

/// Opens sessions.
pub trait Connect: Send + Sync {
    /// Opens a session with `endpoint`, sending `hello` as its first message.
    fn open(
        &self,
        endpoint: &CoordinatorEndpoint,
        hello: Hello,
    ) -> impl Future<Output = Result<Streams, SessionError>> + Send;
}

/// Sessions over mutual TLS with the files of a [`CoordinatorLink`].
#[derive(Debug, Clone, Copy)]
pub struct TlsConnect<'l> {
    pub link: &'l CoordinatorLink,
}

impl Connect for TlsConnect<'_> {
    async fn open(
        &self,
        endpoint: &CoordinatorEndpoint,
        hello: Hello,
    ) -> Result<Streams, SessionError> {
        let channel =
            tls::channel::connect(&endpoint.address, &endpoint.server_name, &self.link.tls)
                .await
                .map_err(|error| explained(error, &self.link.tls))?;
        let mut client = AgentServiceClient::new(channel)
            .max_decoding_message_size(MESSAGE_LIMIT)
            .max_encoding_message_size(MESSAGE_LIMIT);
        let (outbound, receiver) = mpsc::channel(16);
        outbound
            .send(AgentMessage {
                body: Some(AgentBody::Hello(hello)),
            })
            .await
            .map_err(|_| SessionError::Closed)?;
        let inbound = client
            .session(ReceiverStream::new(receiver))
            .await
            .map_err(|status| SessionError::Refused(status.message().to_owned()))?
            .into_inner();
        Ok(Streams {
            outbound,
            inbound: Box::pin(inbound),
        })
    }
}

/// `error`, with the agent's setting to check when it is a refused handshake.
fn explained(error: TlsError, files: &TlsFiles) -> SessionError {
    let setting = match &error {
        TlsError::Handshake { refusal, .. } => refusal.setting(),
        _ => None,
    };
    let check = match setting {
        None => return SessionError::Tls(error),
        Some(Setting::TrustBundle) => format!(
            "[tls] trust_bundle (now {}): it must hold the CA that issued the coordinators' certificates",
            files.trust_bundle.display()
        ),
        Some(Setting::ServerName) => "[coordinator] server_name, or the address's host: it must be a name the coordinator's certificate carries".to_owned(),
        Some(Setting::Certificate) => format!(
            "[tls] certificate and private_key (now {}): the agent's certificate must be current and issued by the fleet's CA (`fleetshift certs issue --agent NAME`)",
            files.certificate.display()
        ),
    };
    SessionError::TlsRefused { error, check }
}
