//! The agent's session with the fleet: connect to a coordinator over mutual TLS, say Hello
//! with the host's shard facts, take the Handshake's intervals, heartbeat and track the lease
//! on the agent's own clock ([`LeaseClock`]); reconnect with backoff when the session is lost.
//! On shutdown the agent closes its stream, so the coordinator revokes its lease at once.

use std::time::Duration;

use anyhow::{Context, bail};
use backon::{BackoffBuilder, ExponentialBuilder};
use fleetshift_common::lease::{LeaseClock, SessionIntervals};
use fleetshift_common::proto::v1::agent_message::Body as AgentBody;
use fleetshift_common::proto::v1::agent_service_client::AgentServiceClient;
use fleetshift_common::proto::v1::coordinator_message::Body as CoordinatorBody;
use fleetshift_common::proto::v1::{
    AgentMessage, CoordinatorMessage, Engine, Handshake, Heartbeat, Hello, ShardFacts,
};
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::sync::CancellationToken;
use tonic::Streaming;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Identity};

use crate::check;
use crate::config::{AgentConfig, CoordinatorLink};

/// How a session ended.
#[derive(Debug)]
enum Ended {
    Shutdown,
    Lost(String),
}

/// Holds a session until `shutdown` is cancelled, reconnecting as needed.
pub async fn run(
    config: &AgentConfig,
    link: &CoordinatorLink,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let mut delays = reconnect_delays();
    loop {
        match session(config, link, &shutdown).await {
            Ok(Ended::Shutdown) => return Ok(()),
            Ok(Ended::Lost(reason)) => {
                tracing::warn!(coordinator = %link.address, %reason, "session lost; reconnecting");
                delays = reconnect_delays();
            }
            Err(error) => {
                tracing::warn!(coordinator = %link.address, error = %format!("{error:#}"), "cannot hold a session; retrying")
            }
        }
        let delay = delays.next().unwrap_or(Duration::from_secs(2));
        tokio::select! {
            () = shutdown.cancelled() => return Ok(()),
            () = tokio::time::sleep(delay) => {}
        }
    }
}

fn reconnect_delays() -> impl Iterator<Item = Duration> {
    ExponentialBuilder::new()
        .with_min_delay(Duration::from_millis(200))
        .with_max_delay(SessionIntervals::default().reconnect_max_delay)
        .with_jitter()
        .without_max_times()
        .build()
}

async fn session(
    config: &AgentConfig,
    link: &CoordinatorLink,
    shutdown: &CancellationToken,
) -> anyhow::Result<Ended> {
    let mut client = AgentServiceClient::new(connect(link).await?);
    let (outbound, receiver) = mpsc::channel(16);
    let hello = hello(config).await;
    outbound
        .send(AgentMessage {
            body: Some(AgentBody::Hello(hello)),
        })
        .await
        .context("opening the session")?;
    let mut inbound = client
        .session(ReceiverStream::new(receiver))
        .await
        .map_err(|status| {
            anyhow::anyhow!("the coordinator refused the session: {}", status.message())
        })?
        .into_inner();
    let handshake = match inbound.message().await {
        Ok(Some(CoordinatorMessage {
            body: Some(CoordinatorBody::Handshake(handshake)),
        })) => handshake,
        Ok(other) => bail!("expected a handshake, got {other:?}"),
        Err(status) => bail!("the coordinator refused the session: {}", status.message()),
    };
    let intervals = intervals(&handshake)?;
    tracing::info!(coordinator = %handshake.coordinator_id, lease = handshake.lease_id, heartbeat_ms = intervals.heartbeat.as_millis() as u64, "session established");
    let mut clock = LeaseClock::new(intervals);
    let mut ticks = tokio::time::interval(intervals.heartbeat);
    let mut sequence = 0;
    loop {
        tokio::select! {
            () = shutdown.cancelled() => {
                // Closing our stream tells the coordinator we stopped: it revokes the lease.
                drop(outbound);
                let _ = tokio::time::timeout(intervals.heartbeat, drain(&mut inbound)).await;
                tracing::info!("session closed");
                return Ok(Ended::Shutdown);
            }
            _ = ticks.tick() => {
                sequence += 1;
                clock.heartbeat_sent(sequence, Instant::now());
                let heartbeat = Heartbeat { sequence, running_assignments: Vec::new() };
                if outbound.send(AgentMessage { body: Some(AgentBody::Heartbeat(heartbeat)) }).await.is_err() {
                    return Ok(Ended::Lost("the session's stream closed".to_owned()));
                }
                if clock.work_until().is_some() && !clock.may_work(Instant::now()) {
                    tracing::warn!("no acknowledgement within the lease: the lease may have lapsed; no statement may run");
                }
            }
            message = inbound.message() => match message {
                Ok(Some(CoordinatorMessage { body: Some(CoordinatorBody::HeartbeatAck(ack)) })) => {
                    clock.acknowledged(ack.sequence);
                }
                Ok(Some(other)) => tracing::debug!(?other, "coordinator message not handled yet"),
                Ok(None) => return Ok(Ended::Lost("the coordinator ended the session".to_owned())),
                Err(status) => return Ok(Ended::Lost(status.message().to_owned())),
            },
        }
    }
}

async fn drain(inbound: &mut Streaming<CoordinatorMessage>) {
    while let Ok(Some(_)) = inbound.message().await {}
}

async fn connect(link: &CoordinatorLink) -> anyhow::Result<Channel> {
    let read = |path: &std::path::Path| {
        std::fs::read(path).with_context(|| format!("{}: cannot read", path.display()))
    };
    let tls = ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(read(&link.tls.trust_bundle)?))
        .identity(Identity::from_pem(
            read(&link.tls.certificate)?,
            read(&link.tls.private_key)?,
        ))
        .domain_name(link.server_name.clone());
    Channel::from_shared(link.address.clone())
        .with_context(|| format!("invalid coordinator address {}", link.address))?
        .connect_timeout(Duration::from_secs(5))
        .tls_config(tls)
        .context("TLS configuration")?
        .connect()
        .await
        .with_context(|| format!("cannot connect to {}", link.address))
}

/// Hello, with what the agent sees of each of its shards.
async fn hello(config: &AgentConfig) -> Hello {
    let mut shards = Vec::with_capacity(config.shards.len());
    for shard in &config.shards {
        let report = check::inspect(shard).await;
        let engine = if shard.database_url.expose().starts_with("sqlite:") {
            Engine::Sqlite
        } else {
            Engine::Postgres
        };
        shards.push(ShardFacts {
            shard_id: report.id,
            labels: report.labels.into_iter().collect(),
            engine: engine.into(),
            current_version: report.latest_applied.unwrap_or_default(),
            fence_token: report.fence_token.unwrap_or_default(),
            reachable: report.reachable,
            unfinished_versions: report.unfinished,
        });
    }
    Hello {
        agent_id: config.agent_id.clone(),
        agent_version: env!("CARGO_PKG_VERSION").to_owned(),
        shards,
        host: None,
        resume_lease_id: 0,
    }
}

fn intervals(handshake: &Handshake) -> anyhow::Result<SessionIntervals> {
    let to_duration = |value: Option<prost_types::Duration>, name: &str| {
        value
            .and_then(|value| Duration::try_from(value).ok())
            .with_context(|| format!("the handshake has no valid {name}"))
    };
    Ok(SessionIntervals {
        heartbeat: to_duration(handshake.heartbeat_interval, "heartbeat interval")?,
        lease_ttl: to_duration(handshake.lease_ttl, "lease TTL")?,
        safety_margin: to_duration(handshake.safety_margin, "safety margin")?,
        reconnect_max_delay: to_duration(handshake.heartbeat_interval, "heartbeat interval")?,
    })
}
