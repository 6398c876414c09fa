//! Test harness: real PostgreSQL clusters on loopback, the real `fleetshift` binary, and
//! helpers to inject faults. Nothing here mocks a database.
//!
//! - [`postgres`]: a throwaway cluster per test (`fleetshift-testkit`'s), and probes of what a
//!   fleetshift session is running.
//! - [`fleet`]: a development PKI and child processes that die with the test.
//! - [`alembic`]: Alembic projects and the virtualenv that renders them.
//! - [`bench`]: the benchmarks' numeric arguments.
//! - [`binary`]: locating and running the built `fleetshift` binary.
//! - [`ledger_check`]: the after-fault checker of a shard's ledger.
//! - [`wait`]: polling for a condition, bounded in time.
//! - [`fixtures`]: migration directories written for a test.
//! - [`previous_release`]: a link that makes a current agent speak the last release's contract.
//! - [`psql`]: the benchmarks' baseline, `psql` running the same scripts.
//! - [`peers`]: the benchmarks' peers, `sqlx migrate run` and `dbmate up` on the same scripts.
//! - [`generated`]: histories the benchmarks write (many small DDL revisions).
//! - [`process_fleet`]: the benchmarks' fleet of real processes (replica, agents).
//! - [`rollout`]: a rollout driven through the operator API, as the CLI drives it.
//! - [`scrape`]: reading a process's telemetry endpoint (metrics, health probes).
//! - [`collector`]: an OTLP trace collector on loopback, keeping the spans it receives.

pub mod alembic;
pub mod bench;
pub mod binary;
pub mod browser;
pub mod collector;
pub mod fixtures;
pub mod fleet;
pub mod generated;
pub mod ledger_check;
pub mod peers;
pub mod postgres;
pub mod previous_release;
pub mod process_fleet;
pub mod psql;
pub mod rollout;
pub mod scrape;
pub mod wait;
