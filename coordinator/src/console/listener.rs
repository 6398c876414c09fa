//! The console's connections: accepted and handshaken off the accept loop under a deadline,
//! as the gRPC listener's are ([`crate::serve::tls_connections`]), each with its peer's
//! address and certificates for the handlers.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::extract::connect_info::Connected;
use axum::serve::IncomingStream;
use rustls::ServerConfig;
use rustls_pki_types::CertificateDer;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio_rustls::server::TlsStream;
use tokio_stream::StreamExt;
use tokio_stream::wrappers::ReceiverStream;

use crate::serve::tls_connections;
use crate::tasks::TaskSet;

/// Handshaken connections, for `axum::serve`.
pub struct TlsListener {
    address: SocketAddr,
    connections: ReceiverStream<Result<TlsStream<TcpStream>, std::io::Error>>,
}

impl std::fmt::Debug for TlsListener {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("TlsListener")
            .field("address", &self.address)
            .finish_non_exhaustive()
    }
}

impl TlsListener {
    /// Accepts on `listener` with the current `tls` configuration until `tasks` stop.
    pub fn new(
        listener: TcpListener,
        tls: watch::Receiver<Arc<ServerConfig>>,
        tasks: &TaskSet,
    ) -> std::io::Result<Self> {
        Ok(Self {
            address: listener.local_addr()?,
            connections: tls_connections(listener, tls, tasks),
        })
    }
}

/// Who is at the other end of a connection.
#[derive(Debug, Clone)]
pub struct Peer {
    pub address: SocketAddr,
    certificates: Option<Arc<[CertificateDer<'static>]>>,
}

impl Peer {
    /// The chain the peer presented in the handshake.
    pub fn certificates(&self) -> Option<&[CertificateDer<'static>]> {
        self.certificates.as_deref()
    }
}

impl axum::serve::Listener for TlsListener {
    type Io = TlsStream<TcpStream>;
    type Addr = Peer;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        loop {
            match self.connections.next().await {
                Some(Ok(stream)) => {
                    let (tcp, session) = stream.get_ref();
                    let Ok(address) = tcp.peer_addr() else {
                        continue;
                    };
                    let certificates = session
                        .peer_certificates()
                        .map(|chain| chain.iter().map(|der| der.clone().into_owned()).collect());
                    return (
                        stream,
                        Peer {
                            address,
                            certificates,
                        },
                    );
                }
                Some(Err(error)) => tracing::warn!(%error, "a console connection failed"),
                // The accept loop ended (the replica is stopping): no connection comes again.
                None => std::future::pending::<()>().await,
            }
        }
    }

    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        Ok(Peer {
            address: self.address,
            certificates: None,
        })
    }
}

impl Connected<IncomingStream<'_, TlsListener>> for Peer {
    fn connect_info(stream: IncomingStream<'_, TlsListener>) -> Self {
        stream.remote_addr().clone()
    }
}
