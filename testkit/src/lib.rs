//! Throwaway servers on loopback for `fleetshift demo` and the test suite, and the seeded
//! draws its campaigns replay; nothing here is part of the product's coordinator or agent.
//!
//! - [`configs`]: the configuration files of the replicas and agents they start.
//! - [`draw`]: a fixed seeded generator (chaos schedules, hostile inputs).
//! - [`postgres`]: PostgreSQL clusters (`initdb` in a temporary directory, durability off) and
//!   hot standbys of them.
//! - [`etcd`]: single-node etcd servers.
//! - [`etcd_cluster`]: etcd clusters whose members can be killed and started again.
//! - [`ports`]: the one way to pick a port for a server in another process.

pub mod configs;
pub mod draw;
pub mod etcd;
pub mod etcd_cluster;
pub mod ports;
pub mod postgres;
