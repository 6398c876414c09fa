//! fleetshift-chaos: many randomised runs of a real fleet on loopback under mixed faults, each
//! checked by a history checker that reads the shards, the store and the event stream itself;
//! reproducible from a seed.
//!
//! - [`schedule`]: the rounds and faults a seed draws;
//! - [`fleet`]: the fleet of real processes (etcd, replicas, PostgreSQL, agents);
//! - [`processes`]: starting, killing, freezing and restarting them;
//! - [`network`]: the agents' network namespaces, which partitions cut;
//! - [`disks`]: the agents' backup disks, which faults fill;
//! - [`clocks`]: the replicas' wall clocks, which faults step;
//! - [`faults`]: injecting and healing one fault;
//! - [`workload`]: the migration set whose revisions leave witnesses;
//! - [`load`]: the application contending with the migrations;
//! - [`observe`]: reading shards and following events for the checker;
//! - [`checker`]: the rules a run must keep;
//! - [`campaign`]: the rounds run in order;
//! - [`report`]: what a campaign found, as JSON and a table.

pub mod campaign;
pub mod checker;
pub mod clocks;
pub mod disks;
pub mod faults;
pub mod fleet;
pub mod load;
pub mod network;
pub mod observe;
pub mod processes;
pub mod report;
pub mod schedule;
pub mod workload;
