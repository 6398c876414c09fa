//! Whether a revision may start now: before each revision an `up` run applies, the run asks
//! its [`RevisionGate`] (a shard's maintenance windows); a refusal stops the run there with
//! [`ExecError::OutsideWindow`], everything before it complete. A revision is never stopped
//! once started.

use super::Executor;
use crate::engine::ShardEngine;
use crate::error::ExecError;
use crate::source::Revision;

/// Asked before each revision an `up` run applies whether it may start now.
pub trait RevisionGate: Send + Sync + std::fmt::Debug {
    /// `Err(reason)`: the run stops before `revision`, everything before it complete.
    fn admit(&self, revision: &Revision) -> Result<(), String>;
}

impl<'a, E: ShardEngine> Executor<'a, E> {
    /// Asks `gate` before each revision applied whether it may start.
    pub fn gate(mut self, gate: &'a dyn RevisionGate) -> Self {
        self.gate = Some(gate);
        self
    }

    /// An error when the gate keeps `revision` from starting now.
    pub(super) fn check_gate(&self, revision: &Revision) -> Result<(), ExecError> {
        let Some(gate) = self.gate else {
            return Ok(());
        };
        gate.admit(revision)
            .map_err(|reason| ExecError::OutsideWindow {
                shard: self.shard(),
                next: format!("revision {}", revision.label()),
                reason,
            })
    }
}
