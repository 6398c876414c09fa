//! The fleetshift coordinator: fleet state, leases and leadership, the gRPC services and the
//! rollout procedure.
//!
//! - [`store`]: leases, per-shard claims whose fencing token is the claim's etcd
//!   `create_revision`, leadership with epoch-guarded writes; etcd and in-memory
//!   implementations that pass one conformance suite.
//! - [`authz`]: operator roles (viewer, operator, approver) granted by identity.
//! - [`claims`]: who may work on a shard under which fencing token, for rollout tasks and
//!   restores.
//! - [`backups`]: operators' host requests (list, verify, restore) relayed to agents.
//! - [`config`]: the coordinator's configuration (file + environment), validated.
//! - [`agent_relay`]: the loop both relays share: follow stored work, hand it to the agents
//!   whose sessions this replica holds.
//! - [`agent_session`]: `AgentService.Session`: identity, Hello, lease, Handshake, heartbeats.
//! - [`error`]: the small set of error codes and their one mapping to gRPC.
//! - [`election`]: leader election with a step-down token the leader's work runs under.
//! - [`fleet_api`]: `FleetService` for operators: role-checked; shards listed from agents.
//! - [`lint`]: squawk's rules and fleetshift's own on a migration set, with allowances.
//! - [`mailbox`]: the agent sessions this replica holds: messages down them, progress and
//!   session openings out of them.
//! - [`metrics`]: the Prometheus metrics of a replica (store, gRPC, leadership, rollouts).
//! - [`schema_drift`]: the leader's count of shards whose schema differs from their version's
//!   majority.
//! - [`schemas`]: schema snapshots agents report, kept once per fingerprint.
//! - [`schema_baselines`]: schema baselines taken and verified by agents, named in plans.
//! - [`targets`]: fleet targets, and the leader's reconciliation that keeps shards at them.
//! - [`throttles`]: operators' holds on the shards a selector matches, expiring by lease.
//! - [`rollout`]: plans in waves, the leader's driver, every replica's relay, rollout watches.
//! - [`webhooks`]: rollout events POSTed, signed, to configured URLs (from the leader).
//! - [`tasks`]: the tasks a replica owns, stopped and awaited stage by stage at shutdown.
//! - [`serve`]: gRPC over mutual TLS with a configuration that reloads while serving.

pub mod agent_relay;
pub mod agent_session;
pub mod authz;
pub mod backups;
pub mod claims;
pub mod config;
pub mod console;
pub mod election;
pub mod error;
pub mod events;
pub mod fleet_api;
pub mod lifecycles;
pub mod lint;
pub mod mailbox;
pub mod metrics;
pub mod peer_limits;
pub mod probes;
pub mod rehearsals;
pub mod rollout;
pub mod schema_baselines;
pub mod schema_drift;
pub mod schemas;
pub mod serve;
pub mod store;
pub mod targets;
pub mod tasks;
pub mod throttles;
pub mod webhooks;
