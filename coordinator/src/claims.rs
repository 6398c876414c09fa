//! Claims: who may work on a shard now, under which fencing token. Rollout tasks and restores
//! both take and give up their claims here.
//!
//! A claim is the key [`key`]`(shard)`, created only if absent and bound to its holder's lease
//! (it vanishes when the lease lapses). Its value is the holder's name ([`Holder`]); its create
//! revision is the [`FenceToken`] the shard's ledger fences with: unique and increasing across
//! the store, so every later claim outranks every earlier one on the shard itself.
//!
//! - **For a rollout task** ([`for_task`]): the leader claims the shard for the agent that
//!   announces it, bound to that agent's session lease, in a commit guarded by the leader's
//!   epoch and by the task being unchanged since the leader read it. The claim ends with the
//!   task, in the same transaction that records the end ([`held`] + [`release`]).
//! - **For a restore** ([`for_restore`]): the replica an operator called claims the shard under
//!   the call's lease, with no epoch. A restore is not leader work: any replica serves the call,
//!   an election in progress included, and the leader needs to know only that the shard is held
//!   (it dispatches nothing to a claimed shard). Safety does not rest on the epoch but on the
//!   token: the restore leaves the shard's fence at its token, so any rollout run under an
//!   older claim is fenced out by the shard. The claim ends when the call's lease is revoked.

use tonic::Status;

use crate::error::{ErrorCode, refuse};
use crate::store::{Claim, Condition, Epoch, FenceToken, LeaseId, Store, StoreError, Write, keys};

/// Where every claim lives.
pub fn prefix() -> String {
    format!("{}claims/", keys::all())
}

/// The claim key of `shard`.
pub fn key(shard: &str) -> String {
    format!("{}{shard}", prefix())
}

/// What a claim stores and the token it carries, as the leader's model keeps it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Holder {
    /// An agent id (rollout task) or "restore requested by <identity>".
    pub name: String,
    pub token: FenceToken,
}

impl Holder {
    /// A claim as a watch or a listing shows it.
    pub fn from_stored(value: &[u8], create_revision: i64) -> Self {
        Self {
            name: String::from_utf8_lossy(value).into_owned(),
            token: FenceToken::from_raw(create_revision),
        }
    }
}

/// The commit condition "the claim of `shard` is still the one that issued `token`".
pub fn held(shard: &str, token: FenceToken) -> Condition {
    Condition::CreatedAt(key(shard), token.get())
}

/// The write that gives up the claim of `shard` (in a commit conditioned on [`held`]).
pub fn release(shard: &str) -> Write {
    Write::Delete(key(shard))
}

/// Claims `shard` for `agent`'s rollout task under the leader's `epoch`, bound to the agent's
/// session `lease`, if no claim exists and `task_unchanged` holds. The new token, or `None`
/// when the shard cannot be claimed now (held, task changed, lease lapsed).
pub async fn for_task<S: Store>(
    store: &S,
    epoch: Epoch,
    shard: &str,
    agent: &str,
    lease: LeaseId,
    task_unchanged: Condition,
) -> Result<Option<FenceToken>, StoreError> {
    let claimed = store
        .commit(
            Some(epoch),
            &[Condition::Absent(key(shard)), task_unchanged],
            &[Write::Put {
                key: key(shard),
                value: agent.as_bytes().to_vec(),
                lease: Some(lease),
            }],
        )
        .await;
    match claimed {
        Ok(token) => Ok(token.map(FenceToken::from_raw)),
        Err(StoreError::LeaseExpired(_)) => Ok(None),
        Err(error) => Err(error),
    }
}

/// Claims `shard` for a restore requested by `requested_by`, bound to the operator call's
/// `lease`; refused with FAILED_PRECONDITION while anything else holds the shard.
pub async fn for_restore<S: Store>(
    store: &S,
    shard: &str,
    requested_by: &str,
    lease: LeaseId,
) -> Result<Claim, Status> {
    let holder = format!("restore requested by {requested_by}");
    store
        .claim(shard, &holder, lease)
        .await
        .map_err(|error| match error {
            StoreError::Claimed { shard, holder, token } => refuse(ErrorCode::NotNow, format!(
                "shard {shard} is held by {holder} (fence token {token}): a rollout task or another restore runs there; retry once it has finished (`fleetshift status`)"
            )),
            other => Status::from(other),
        })
}
