//! An agent of the previous release, as the coordinator sees it: a link between a current
//! agent and a replica that re-encodes every message the agent sends through the last
//! release's contract (`proto/compat/fleetshift-v1.binpb`), dropping each field that contract
//! does not define, at every depth. What the coordinator receives is then exactly what an
//! agent built from that release could have sent. Messages to the agent pass unchanged: an
//! agent of that release decodes them and ignores what it does not know.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::Path;
use std::pin::Pin;
use std::sync::Arc;

use fleetshift_common::proto::v1::agent_service_client::AgentServiceClient;
use fleetshift_common::proto::v1::agent_service_server::{AgentService, AgentServiceServer};
use fleetshift_common::proto::v1::{AgentMessage, CoordinatorMessage};
use fleetshift_common::tls::identity::Role;
use prost::Message;
use prost::bytes::Buf;
use prost::encoding::{WireType, decode_key, decode_varint, encode_key, encode_varint};
use prost_types::field_descriptor_proto::Type;
use prost_types::{DescriptorProto, FileDescriptorSet};
use tokio_stream::{Stream, StreamExt as _};
use tokio_util::sync::{CancellationToken, DropGuard};
use tonic::transport::{Certificate, Identity, Server, ServerTlsConfig};
use tonic::{Request, Response, Status, Streaming};

use crate::fleet;

const RELEASED: &[u8] = include_bytes!("../../proto/compat/fleetshift-v1.binpb");

/// The released contract's messages: per full name (`.fleetshift.v1.Hello`), each field number
/// with its message type when it has one.
#[derive(Debug)]
pub struct ReleasedContract {
    messages: HashMap<String, HashMap<u32, Option<String>>>,
}

impl ReleasedContract {
    pub fn load() -> Self {
        let set = FileDescriptorSet::decode(RELEASED).expect("the released descriptor set");
        let mut contract = Self {
            messages: HashMap::new(),
        };
        for file in &set.file {
            for message in &file.message_type {
                contract.index(&format!(".{}", file.package()), message);
            }
        }
        contract
    }

    fn index(&mut self, scope: &str, message: &DescriptorProto) {
        let name = format!("{scope}.{}", message.name());
        let fields = message
            .field
            .iter()
            .map(|field| {
                let nested =
                    (field.r#type() == Type::Message).then(|| field.type_name().to_owned());
                (
                    u32::try_from(field.number()).expect("a field number"),
                    nested,
                )
            })
            .collect();
        for nested in &message.nested_type {
            self.index(&name, nested);
        }
        self.messages.insert(name, fields);
    }

    /// `message` (of type `fleetshift.v1.<name>`) with every field the released contract does
    /// not define removed.
    pub fn downgrade<M: Message + Default>(&self, message: &M, name: &str) -> M {
        let bytes = self.strip(&message.encode_to_vec(), &format!(".fleetshift.v1.{name}"));
        M::decode(bytes.as_slice()).expect("a downgraded message decodes")
    }

    /// The encoded message `bytes` of type `name`, keeping the fields the contract defines;
    /// a type it does not define (a well-known type) is kept whole.
    fn strip(&self, bytes: &[u8], name: &str) -> Vec<u8> {
        let Some(fields) = self.messages.get(name) else {
            return bytes.to_vec();
        };
        let mut input = bytes;
        let mut kept = Vec::with_capacity(bytes.len());
        while input.has_remaining() {
            let (number, wire_type) = decode_key(&mut input).expect("a field key");
            let before = input;
            let value_length = match wire_type {
                WireType::Varint => {
                    decode_varint(&mut input).expect("a varint");
                    0
                }
                WireType::SixtyFourBit => 8,
                WireType::ThirtyTwoBit => 4,
                WireType::LengthDelimited => {
                    usize::try_from(decode_varint(&mut input).expect("a length")).expect("length")
                }
                WireType::StartGroup | WireType::EndGroup => {
                    panic!("groups are not in the contract")
                }
            };
            let prefix = before.len() - input.len();
            let (value, rest) = input.split_at(value_length);
            input = rest;
            let Some(nested) = fields.get(&number) else {
                continue;
            };
            encode_key(number, wire_type, &mut kept);
            match nested {
                Some(type_name) if wire_type == WireType::LengthDelimited => {
                    let stripped = self.strip(value, type_name);
                    encode_varint(stripped.len() as u64, &mut kept);
                    kept.extend_from_slice(&stripped);
                }
                _ => {
                    kept.extend_from_slice(&before[..prefix]);
                    kept.extend_from_slice(value);
                }
            }
        }
        kept
    }
}

/// The link: agents connect to [`PreviousRelease::address`] as to a replica (its certificate
/// names `localhost`); each session goes on to the replica at `upstream` as agent `agent`.
#[derive(Debug)]
pub struct PreviousRelease {
    pub address: SocketAddr,
    _stop: DropGuard,
}

impl PreviousRelease {
    /// Serves the link with certificates from `pki` (a `coordinator-previous-release` leaf is
    /// issued there).
    pub async fn start(pki: &Path, upstream: &str, agent: &str) -> Self {
        fleet::issue(pki, Role::Coordinator, "previous-release", &["localhost"]);
        let read = |name: &str| std::fs::read(pki.join(name)).expect("pki file");
        let tls = ServerTlsConfig::new()
            .identity(Identity::from_pem(
                read("coordinator-previous-release.pem"),
                read("coordinator-previous-release.key"),
            ))
            .client_ca_root(Certificate::from_pem(read(
                fleetshift_common::tls::pki::CA_CERTIFICATE,
            )));
        let link = Link {
            upstream: fleet::channel_as(upstream, pki, &format!("agent-{agent}")).await,
            contract: Arc::new(ReleasedContract::load()),
        };
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let address = listener.local_addr().expect("address");
        let stop = CancellationToken::new();
        let server = Server::builder()
            .tls_config(tls)
            .expect("tls")
            .add_service(AgentServiceServer::new(link))
            .serve_with_incoming_shutdown(
                tokio_stream::wrappers::TcpListenerStream::new(listener),
                stop.clone().cancelled_owned(),
            );
        tokio::spawn(server);
        Self {
            address,
            _stop: stop.drop_guard(),
        }
    }
}

struct Link {
    upstream: tonic::transport::Channel,
    contract: Arc<ReleasedContract>,
}

type Answers = Pin<Box<dyn Stream<Item = Result<CoordinatorMessage, Status>> + Send>>;

#[tonic::async_trait]
impl AgentService for Link {
    type SessionStream = Answers;

    async fn session(
        &self,
        request: Request<Streaming<AgentMessage>>,
    ) -> Result<Response<Answers>, Status> {
        let contract = Arc::clone(&self.contract);
        let sent = request
            .into_inner()
            .map_while(Result::ok)
            .map(move |message| contract.downgrade(&message, "AgentMessage"));
        let answers = AgentServiceClient::new(self.upstream.clone())
            .session(sent)
            .await?
            .into_inner();
        Ok(Response::new(Box::pin(answers)))
    }
}

#[cfg(test)]
mod tests {
    use fleetshift_common::proto::v1::agent_message::Body;
    use fleetshift_common::proto::v1::{Hello, HostFacts, ServerFacts, ShardFacts};

    use super::*;

    #[test]
    fn fields_added_since_the_release_are_dropped_at_every_depth() {
        let hello = AgentMessage {
            body: Some(Body::Hello(Hello {
                agent_id: "b".to_owned(),
                agent_version: "0.9.0".to_owned(),
                oldest_coordinator: "0.9.0".to_owned(),
                host: Some(HostFacts {
                    hostname: "web-1".to_owned(),
                    ..HostFacts::default()
                }),
                shards: vec![ShardFacts {
                    shard_id: "b-db0".to_owned(),
                    labels: [("env".to_owned(), "test".to_owned())].into(),
                    observed_at: Some(prost_types::Timestamp {
                        seconds: 7,
                        nanos: 0,
                    }),
                    server: Some(ServerFacts {
                        address: "db:5432".to_owned(),
                        ..ServerFacts::default()
                    }),
                    ..ShardFacts::default()
                }],
                ..Hello::default()
            })),
        };
        let Some(Body::Hello(sent)) = ReleasedContract::load()
            .downgrade(&hello, "AgentMessage")
            .body
        else {
            panic!("not a Hello");
        };
        assert_eq!(sent.oldest_coordinator, "", "added since");
        assert_eq!(sent.shards[0].server, None, "added since, nested");
        assert_eq!(sent.agent_version, "0.9.0");
        assert_eq!(
            sent.host.map(|host| host.hostname).as_deref(),
            Some("web-1")
        );
        assert_eq!(sent.shards[0].labels["env"], "test");
        assert_eq!(sent.shards[0].observed_at.map(|at| at.seconds), Some(7));
    }
}
