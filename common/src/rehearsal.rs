//! Rehearsals: a plan's pending revisions run on a sampled copy of a shard under a tracer that
//! reads, after every statement, which locks it took, which relations it rewrote and which
//! tables it scanned; the findings name each hazard.
//!
//! - [`catalog_state`]: one reading of the catalog and the connection's locks and scans.
//! - [`effects`]: what one statement did, as the difference of two readings.
//! - [`tracer`]: the readings taken around every statement a traced engine runs.
//! - [`findings`]: the hazards a trace shows, with eugene's hint ids and lock hold times.

pub mod catalog_state;
pub mod effects;
pub mod findings;
pub mod tracer;
