//! The fleetshift agent: the sidecar next to every database host, as a library so the demo can
//! run agents in process.
//!
//! - [`config`]: the agent's configuration (file + environment), validated.
//! - [`check`]: what the agent sees of each shard (reachability, versions, fence token).
//! - [`session`]: the session with a coordinator: Hello, heartbeats, lease clock, reconnects.
//! - [`assignment`]: one assignment run on one shard with the fenced executor, and a tally of
//!   what it did.
//! - [`outage`]: riding out a lost database server within a bound, step by step.
//! - [`stop`]: telling a run to stop, and why (a withdrawal ends a task, an interruption
//!   does not).
//! - [`requests`]: operators' host requests (list, verify, restore a backup; rehearse a plan; take or verify a schema baseline)
//!   relayed to the agent.
//! - [`rehearse`]: a plan rehearsed on a sampled copy of one shard, at most N at once.
//! - [`schema_baselines`]: a shard's schema baseline taken, or one verified beside it.
//! - [`tenants`]: databases whose tenant schemas are shards, found at start.
//! - [`schema_checks`]: each shard's schema fingerprint, read at most every `schema_check`.
//! - [`metrics`]: the agent's Prometheus metrics, read off its progress events and session.
//! - [`cli`]: `fleetshift-agent run|check`.

pub mod assignment;
pub mod check;
pub mod cli;
pub mod config;
pub mod duties;
pub mod facts;
pub mod host;
pub mod metrics;
pub mod outage;
pub mod rehearse;
pub mod requests;
pub mod schema_baselines;
pub mod schema_checks;
pub mod session;
pub mod stop;
mod tally;
pub mod tenants;
