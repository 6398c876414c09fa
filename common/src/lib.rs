//! fleetshift engine core, shared by the agent and the CLI.
//!
//! - [`source`]: migration histories on disk (sqlx, golang-migrate, diesel, Flyway, dbmate),
//!   validated, ordered, checksummed.
//! - [`statements`]: splitting scripts into statements; recognising index builds.
//! - [`secrets`]: masking database URLs and other credentials before anything prints them.

pub mod engine;
pub mod error;
pub mod executor;
pub mod ledger;
pub mod secrets;
pub mod source;
pub mod statements;
