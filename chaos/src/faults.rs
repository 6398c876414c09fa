//! Injecting one fault into the fleet and healing it: the part it hits is resolved when it
//! strikes (which replica leads then), held for the fault's time, then restored.

use anyhow::Context;
use fleetshift_common::proto::v1::PlanAction;
use fleetshift_testkit::postgres::Shutdown;
use rustix::process::Signal;

use crate::fleet::{ChaosFleet, replica_id};
use crate::network::Cut;
use crate::processes::signal_pid;
use crate::schedule::{Fault, Replica};

/// Injects `fault` on `plan_id`'s fleet, holds it, heals it; returns which part it hit.
pub async fn strike(fleet: &ChaosFleet, fault: &Fault, plan_id: &str) -> anyhow::Result<String> {
    match fault {
        Fault::KillAgent { agent, down } => {
            fleet.parts.lock().await.agents[*agent].kill()?;
            tokio::time::sleep(*down).await;
            fleet.parts.lock().await.agents[*agent].restart()?;
            Ok(format!("agent host-{agent}"))
        }
        Fault::StopAgent { agent, frozen } => {
            fleet.parts.lock().await.agents[*agent].freeze()?;
            tokio::time::sleep(*frozen).await;
            fleet.parts.lock().await.agents[*agent].thaw()?;
            Ok(format!("agent host-{agent}"))
        }
        Fault::KillCoordinator { replica, down } => {
            let index = target(fleet, *replica).await;
            fleet.parts.lock().await.replicas[index].kill()?;
            tokio::time::sleep(*down).await;
            fleet.parts.lock().await.replicas[index].restart()?;
            Ok(format!("replica {}", replica_id(index)))
        }
        Fault::StopCoordinator { replica, frozen } => {
            let index = target(fleet, *replica).await;
            {
                let mut parts = fleet.parts.lock().await;
                parts.replicas[index].freeze()?;
                parts.frozen[index] = true;
            }
            tokio::time::sleep(*frozen).await;
            let mut parts = fleet.parts.lock().await;
            parts.replicas[index].thaw()?;
            parts.frozen[index] = false;
            Ok(format!("replica {}", replica_id(index)))
        }
        Fault::KillEtcd { member, down } => {
            fleet.parts.lock().await.etcd.kill(*member)?;
            tokio::time::sleep(*down).await;
            let mut parts = fleet.parts.lock().await;
            tokio::task::block_in_place(|| parts.etcd.restart(*member))?;
            Ok(format!("etcd member {member}"))
        }
        Fault::StopEtcd { member, frozen } => {
            let pid = fleet.parts.lock().await.etcd.pid(*member);
            if let Some(pid) = pid {
                signal_pid(pid, Signal::STOP)?;
                tokio::time::sleep(*frozen).await;
                signal_pid(pid, Signal::CONT)?;
            }
            Ok(format!("etcd member {member}"))
        }
        Fault::RestartPostgres { cluster, immediate } => {
            let postgres = std::sync::Arc::clone(&fleet.clusters[*cluster]);
            let how = if *immediate {
                Shutdown::Immediate
            } else {
                Shutdown::Fast
            };
            tokio::task::spawn_blocking(move || postgres.restart(how)).await??;
            Ok(format!("PostgreSQL cluster {cluster}"))
        }
        Fault::PauseAndResume { paused } => {
            let action = || PlanAction {
                plan_id: plan_id.to_owned(),
                reason: "chaos campaign: an operator pauses".to_owned(),
            };
            // A plan that ended before the fault struck is not paused: nothing to resume.
            let paused_now = fleet
                .operator("pause", |mut client| async move {
                    client.pause_rollout(action()).await
                })
                .await
                .is_ok();
            if paused_now {
                tokio::time::sleep(*paused).await;
                fleet
                    .operator("resume", |mut client| async move {
                        client.resume_rollout(action()).await
                    })
                    .await?;
            }
            Ok(format!("plan {plan_id}"))
        }
        Fault::Partition { agent, cut, held } => {
            fleet.parts.lock().await.networks[*agent].partition(*cut)?;
            tokio::time::sleep(*held).await;
            fleet.parts.lock().await.networks[*agent].heal()?;
            Ok(format!("agent host-{agent}"))
        }
        Fault::IsolateReplica { replica, cut, held } => {
            let index = target(fleet, *replica).await;
            isolate(fleet, index, Some(*cut)).await?;
            tokio::time::sleep(*held).await;
            isolate(fleet, index, None).await?;
            Ok(format!("replica {} from etcd", replica_id(index)))
        }
        Fault::FillBackupDisk { agent, full } => {
            fleet.parts.lock().await.disks[*agent].fill()?;
            tokio::time::sleep(*full).await;
            fleet.parts.lock().await.disks[*agent].free()?;
            Ok(format!("agent host-{agent}'s backup disk"))
        }
        Fault::JumpClock {
            replica,
            by_seconds,
            held,
        } => {
            let index = target(fleet, *replica).await;
            fleet.parts.lock().await.clocks[index].jump(*by_seconds)?;
            tokio::time::sleep(*held).await;
            fleet.parts.lock().await.clocks[index].reset()?;
            Ok(format!("replica {}'s clock", replica_id(index)))
        }
        Fault::Cancel => {
            // Refused for a plan that ended already; that is no fault of the fleet's.
            let _ = fleet
                .operator("cancel", |mut client| async move {
                    client
                        .cancel_rollout(PlanAction {
                            plan_id: plan_id.to_owned(),
                            reason: "chaos campaign: an operator cancels".to_owned(),
                        })
                        .await
                })
                .await;
            Ok(format!("plan {plan_id}"))
        }
    }
}

/// Cuts replica `index` off etcd `cut`'s way, or heals it (`None`).
async fn isolate(fleet: &ChaosFleet, index: usize, cut: Option<Cut>) -> anyhow::Result<()> {
    let mut parts = fleet.parts.lock().await;
    let store = parts
        .store_network
        .as_mut()
        .context("the fleet's etcd has no network of its own (partitions were not drawn)")?;
    match cut {
        Some(cut) => store.partition(index, cut),
        None => store.heal(index),
    }
}

/// The replica a coordinator fault hits: the leader, or another that is running; the first
/// running one when the store names no leader.
async fn target(fleet: &ChaosFleet, replica: Replica) -> usize {
    let leader = fleet.leader().await;
    let parts = fleet.parts.lock().await;
    let running: Vec<usize> = (0..parts.replicas.len())
        .filter(|index| parts.replicas[*index].running() && !parts.frozen[*index])
        .collect();
    let chosen = match (replica, leader) {
        (Replica::Leader, Some(leader)) => Some(leader),
        (Replica::Follower, Some(leader)) => running.iter().copied().find(|index| *index != leader),
        (_, None) => None,
    };
    chosen
        .or_else(|| running.first().copied())
        .unwrap_or_default()
}

/// Whether `fault` may hold up the application's reads (an operator's action, a full backup
/// disk or a coordinator's clock cannot).
pub fn affects_reads(fault: &Fault) -> bool {
    !matches!(
        fault,
        Fault::PauseAndResume { .. }
            | Fault::Cancel
            | Fault::FillBackupDisk { .. }
            | Fault::JumpClock { .. }
    )
}
