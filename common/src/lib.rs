//! fleetshift engine core, shared by the agent and the CLI.
//!
//! - [`source`]: migration histories on disk (sqlx, golang-migrate, diesel, Flyway, dbmate),
//!   validated, ordered, checksummed.
//! - [`statements`]: splitting scripts into statements; recognising index builds and
//!   transaction control.
//! - [`touched`]: which table a statement changes, how, and under which lock.
//! - [`lease`]: agent session intervals from one base, and the lease on the agent's own clock.
//! - [`fence`]: the fencing token a claim carries and a shard's ledger checks.
//! - [`ledger`]: the record a shard keeps about itself (history, fence, audit) and guards.
//! - [`engine`]: the database-specific primitives of the fenced protocol (PostgreSQL, SQLite).
//! - [`executor`]: the fenced protocol itself — up, down, resume, resolve, adopt.
//! - [`error`]: errors that name shard, revision and file:line, and their kinds.
//! - [`proto`]: the wire contract (`proto/fleetshift/v1`), generated at build time.
//! - [`schema`]: a shard's schema as canonical text, its fingerprint, and diffs between two.
//! - [`validation`]: post-migration validation: integrity, row counts, data checksums and
//!   unvalidated foreign keys, before and after a run's revisions.
//! - [`window`]: maintenance windows in IANA time zones, and where a shard stands against them.
//! - [`rollout_names`]: plan and shard-task states as people and scripts read them.
//! - [`database_tls`]: TLS to PostgreSQL shards (`sslmode` and its files), checked before use.
//! - [`config_file`]: reading a TOML configuration file; errors that name file and line.
//! - [`duration`]: `500ms`, `2s`, `15m`, `1h` in arguments and configuration files.
//! - [`shipped`]: a migration set packed for the wire and unpacked with its digest checked.
//! - [`secrets`]: masking database URLs and other credentials before anything prints them.
//! - [`tls`]: mutual TLS: SPIFFE identities, a development PKI, rustls configurations.
//! - [`telemetry`]: structured logs, OpenTelemetry traces, Prometheus metrics and health endpoints.

pub mod baseline;
pub mod config_file;
pub mod database_tls;
pub mod duration;
pub mod engine;
pub mod error;
pub mod executor;
pub mod fence;
pub mod lease;
pub mod ledger;
pub mod pg_client;
pub mod proto;
pub mod rehearsal;
pub mod rollout_names;
pub mod schema;
pub mod schema_baseline;
pub mod secrets;
pub mod selector;
pub mod shipped;
pub mod source;
pub mod statements;
pub mod telemetry;
pub mod tls;
pub mod touched;
pub mod validation;
pub mod versions;
pub mod window;
