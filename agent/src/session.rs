//! The agent's session with the fleet: connect to a coordinator over mutual TLS, say Hello
//! with the host's shard facts (sent again, fresh, every refresh interval while no assignment
//! runs), take the Handshake's intervals, heartbeat and track the lease
//! on the agent's own clock ([`LeaseClock`]); reconnect with backoff when the session is lost.
//! Assignments run under the claim's fencing token and stop (their running statement
//! cancelled) when the lease may lapse, when cancelled, or at shutdown; their results go back
//! on the stream.
//! On shutdown the agent closes its stream, so the coordinator revokes its lease at once.
//!
//! - [`Sessions::hold`]: the reconnect loop (one replica after another, resuming the lease).
//! - `held`: one session as a struct: init (handshake, lease clock) → run (one handler per
//!   event) → cleanup (stop, report, close).
//! - `connect`: opening a session's streams ([`TlsConnect`], or in-memory in tests).
//! - `work`: what a session hands its work to ([`HostWork`] on this host's databases).
//! - `finished`: results kept across sessions, so a redelivered assignment never runs twice.

mod connect;
mod finished;
mod held;
#[cfg(test)]
mod tests;
mod work;

use std::sync::Arc;
use std::time::Duration;

use backon::{BackoffBuilder, ExponentialBuilder};
use fleetshift_common::lease::SessionIntervals;
use fleetshift_common::proto::v1::Hello;
use fleetshift_common::telemetry::endpoint::Readiness;
use fleetshift_common::versions;
use prometheus_client::registry::Registry;
use tokio::sync::watch;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

pub use connect::{Connect, Inbound, SessionError, Streams, TlsConnect};
pub use held::{Ended, Opened};
pub use work::{HostWork, Work};

use crate::config::{AgentConfig, CoordinatorEndpoint, CoordinatorLink};
use crate::metrics::AgentMetrics;
use crate::schema_checks::SchemaChecks;
use crate::tenants::LiveConfig;
use finished::Finished;
use held::Session;

/// What the session tells the telemetry endpoint: its metrics, and readiness (ready while a
/// session is established).
#[derive(Debug, Clone)]
pub struct SessionTelemetry {
    pub metrics: Arc<AgentMetrics>,
    pub readiness: Arc<watch::Sender<Readiness>>,
}

impl SessionTelemetry {
    /// Metrics registered in `registry`; not ready until a session is established.
    pub fn new(registry: &mut Registry) -> Self {
        Self {
            metrics: AgentMetrics::register(registry),
            readiness: Arc::new(watch::Sender::new(Readiness::not_ready(
                "no session with a coordinator yet",
            ))),
        }
    }

    fn established(&self, coordinator: &str) {
        self.metrics.session_up(true);
        self.readiness.send_replace(Readiness::Ready);
        tracing::debug!(%coordinator, "ready");
    }

    fn lost(&self, reason: &str) {
        self.metrics.session_up(false);
        self.readiness.send_replace(Readiness::not_ready(format!(
            "no session with a coordinator: {reason}"
        )));
    }
}

/// Holds a session until `shutdown` is cancelled, reconnecting as needed (every failure is
/// retried, so this only ends at shutdown). When a session is lost or cannot be opened the
/// agent moves to the link's next replica: any replica can resume its lease.
pub async fn run(
    config: Arc<AgentConfig>,
    link: &CoordinatorLink,
    telemetry: &SessionTelemetry,
    shutdown: CancellationToken,
) {
    let work = HostWork {
        config: Arc::new(LiveConfig::new(Arc::clone(&config))),
        metrics: Arc::clone(&telemetry.metrics),
        schemas: Arc::new(SchemaChecks::new(link.schema_check)),
        throttles: Arc::new(tokio::sync::watch::Sender::new(Arc::from([]))),
        host: crate::host::facts(),
        attributes: Arc::default(),
        sets: Arc::default(),
    };
    let hello = Hello {
        agent_id: config.agent_id.clone(),
        agent_version: versions::VERSION.to_owned(),
        oldest_coordinator: versions::OLDEST_COORDINATOR.to_owned(),
        shards: Vec::new(),
        host: Some(work.host.clone()),
        resume_lease_id: 0,
    };
    let sessions = Sessions {
        connect: TlsConnect { link },
        endpoints: &link.endpoints,
        facts_refresh: link.facts_refresh,
        hello,
        work,
    };
    sessions.hold(telemetry, &shutdown).await;
}

/// What the reconnect loop needs: how to open a session, with whom, saying what, doing what.
#[derive(Debug)]
pub struct Sessions<'e, C, W> {
    pub connect: C,
    /// Tried in turn, from the first; at least one.
    pub endpoints: &'e [CoordinatorEndpoint],
    pub facts_refresh: Duration,
    /// The Hello of every session, without its shard facts (read fresh each time).
    pub hello: Hello,
    pub work: W,
}

impl<C: Connect, W: Work> Sessions<'_, C, W> {
    /// Holds one session after another until `shutdown`.
    pub async fn hold(&self, telemetry: &SessionTelemetry, shutdown: &CancellationToken) {
        let mut delays = reconnect_delays();
        let mut finished = Finished::default();
        // The lease of the last session, offered for resumption so claims bound to it survive
        // a reconnect (a coordinator restart, a network blip).
        let mut last_lease = 0;
        for endpoint in self.endpoints.iter().cycle() {
            let held = self
                .once(
                    endpoint,
                    telemetry,
                    shutdown,
                    &mut last_lease,
                    &mut finished,
                )
                .await;
            match held {
                Ok(Ended::Shutdown) => {
                    telemetry.lost("shutting down");
                    return;
                }
                Ok(Ended::Reannounce) => {
                    tracing::info!(coordinator = %endpoint.address, "the agent's shards changed; announcing them anew");
                    telemetry.lost("announcing the agent's shards anew");
                    delays = reconnect_delays();
                }
                Ok(Ended::Lost(reason)) => {
                    tracing::warn!(coordinator = %endpoint.address, %reason, "session lost; reconnecting");
                    telemetry.lost(&reason);
                    delays = reconnect_delays();
                }
                Err(error) => {
                    let error = error.to_string();
                    tracing::warn!(coordinator = %endpoint.address, %error, "cannot hold a session; retrying");
                    telemetry.lost(&error);
                }
            }
            telemetry.metrics.reconnecting();
            let delay = delays.next().unwrap_or(Duration::from_secs(2));
            tokio::select! {
                () = shutdown.cancelled() => return,
                () = tokio::time::sleep(delay) => {}
            }
        }
    }

    /// One session with `endpoint`: open, init, run, cleanup.
    async fn once(
        &self,
        endpoint: &CoordinatorEndpoint,
        telemetry: &SessionTelemetry,
        shutdown: &CancellationToken,
        last_lease: &mut i64,
        finished: &mut Finished,
    ) -> Result<Ended, SessionError> {
        let hello = Hello {
            shards: self.work.facts().await,
            resume_lease_id: *last_lease,
            ..self.hello.clone()
        };
        // The lease is granted after the Hello is sent: the Hello counts as heartbeat 0, sent
        // (at the latest) now.
        let opened = Opened::announcing(Instant::now(), &hello.shards);
        let streams = self.connect.open(endpoint, hello).await?;
        let (mut session, handshake) = Session::init(
            self.work.clone(),
            streams,
            opened,
            last_lease,
            Arc::clone(&telemetry.metrics),
            finished,
            shutdown,
        )
        .await?;
        telemetry.established(&handshake.coordinator_id);
        let ended = session.run(shutdown, self.facts_refresh).await;
        session.cleanup(&ended).await;
        Ok(ended)
    }
}

/// Backoff between reconnects, at most one default heartbeat (before a handshake the agent
/// knows no other base).
fn reconnect_delays() -> impl Iterator<Item = Duration> {
    ExponentialBuilder::new()
        .with_min_delay(Duration::from_millis(200))
        .with_max_delay(SessionIntervals::default().heartbeat)
        .with_jitter()
        .without_max_times()
        .build()
}
