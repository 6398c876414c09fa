//! The fleetshift coordinator: fleet state, leases and leadership (and, next, the gRPC
//! services and the rollout procedure).
//!
//! - [`store`]: leases, per-shard claims whose fencing token is the claim's etcd
//!   `create_revision`, leadership with epoch-guarded writes; etcd and in-memory
//!   implementations that pass one conformance suite.

pub mod store;
