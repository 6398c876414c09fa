//! Fleet targets: a version the active shards a selector matches are kept at. An operator sets
//! one (`targets/<name>`, with the terms every catch-up is planned with); the leader reconciles
//! ([`reconcile`]): every such shard behind the target gets a catch-up plan, started once
//! approved, and a catch-up through revisions an approved plan of the target already took
//! runs without asking again. [`standing`] says where each shard stands and why, for the
//! leader and for `GetTargetStatus` alike.

pub mod reconcile;
pub mod standing;
mod status;

pub use status::status;

use std::time::SystemTime;

use fleetshift_common::proto::v1::{self as v1, FleetTarget, SetTargetRequest, TargetApproval};
use prost::Message;

use crate::rollout::{RolloutError, planning, records};
use crate::store::{Condition, Store, Write, keys};

/// A stored target and the revision it was read at.
#[derive(Debug, Clone)]
pub struct TargetRecord {
    pub target: FleetTarget,
    pub revision: i64,
}

/// Checks `request` as a plan's terms, resolves its version in the set's spelling, stores the
/// set once per digest and records the target for `author`. Replacing a target with the same
/// set and version keeps its approvals; anything else starts over.
pub async fn set<S: Store>(
    store: &S,
    request: SetTargetRequest,
    author: &str,
) -> Result<FleetTarget, RolloutError> {
    check_name(&request.name)?;
    let mut terms = request.terms.ok_or_else(|| {
        RolloutError::BadRequest("the request carries no terms (set, version, selector)".to_owned())
    })?;
    let checked = planning::PlanRequest::try_from(terms.clone())?;
    let (_directory, set) = planning::unpacked(&checked.set)?;
    let version = planning::target_of(&set, &checked.target_version)?;
    records::save_set(store, &checked.set).await?;
    terms.target_version = version;
    terms.migration_set = Some(v1::MigrationSet {
        files: Vec::new(),
        ..checked.set
    });
    let mut target = FleetTarget {
        name: request.name,
        terms: Some(terms),
        versions: set
            .revisions
            .iter()
            .map(|revision| revision.version.as_str().to_owned())
            .collect(),
        author: author.to_owned(),
        set_at: Some(SystemTime::now().into()),
        approved: Vec::new(),
        refusal: String::new(),
    };
    let key = keys::target(&target.name);
    let condition = match load(store, &target.name).await? {
        Some(previous) => {
            if same_goal(&previous.target, &target) {
                target.approved = previous.target.approved;
            }
            Condition::ModifiedAt(key.clone(), previous.revision)
        }
        None => Condition::Absent(key.clone()),
    };
    let written = store
        .commit(
            None,
            &[condition],
            &[Write::put(key, target.encode_to_vec())],
        )
        .await?;
    match written {
        Some(_) => Ok(target),
        None => Err(RolloutError::NotNow(format!(
            "target {} changed while it was being set; set it again",
            target.name
        ))),
    }
}

/// Whether two targets take shards to the same version of the same set (so approvals carry).
pub fn same_goal(left: &FleetTarget, right: &FleetTarget) -> bool {
    digest(left) == digest(right) && version(left) == version(right)
}

/// The digest of the target's set.
pub fn digest(target: &FleetTarget) -> &str {
    target
        .terms
        .as_ref()
        .and_then(|terms| terms.migration_set.as_ref())
        .map_or("", |set| set.digest.as_str())
}

/// The version the target keeps its shards at.
pub fn version(target: &FleetTarget) -> &str {
    target
        .terms
        .as_ref()
        .map_or("", |terms| terms.target_version.as_str())
}

/// Whether `plan` is one of `target`'s plans for its present goal.
pub fn plan_serves(target: &FleetTarget, plan: &v1::Plan) -> bool {
    plan.fleet_target == target.name
        && plan.set_digest == digest(target)
        && plan.target_version == version(target)
}

/// The approval that lets a catch-up from `from` run without asking again, if one does.
pub fn covering<'t>(target: &'t FleetTarget, from: &str) -> Option<&'t TargetApproval> {
    target
        .approved
        .iter()
        .find(|approval| approval.from_version == from)
}

/// The target's terms with `set` (the stored set, with every file) in place of the digest.
pub fn plan_request(
    target: &FleetTarget,
    set: v1::MigrationSet,
) -> Result<planning::PlanRequest, RolloutError> {
    let mut terms = target.terms.clone().unwrap_or_default();
    let origin = terms
        .migration_set
        .as_ref()
        .map(|stored| stored.origin.clone())
        .unwrap_or_default();
    terms.migration_set = Some(v1::MigrationSet { origin, ..set });
    planning::PlanRequest::try_from(terms)
}

/// The target `name`, if set.
pub async fn load<S: Store>(store: &S, name: &str) -> Result<Option<TargetRecord>, RolloutError> {
    let key = keys::target(name);
    let listing = store.list(&key).await?;
    listing
        .entries
        .iter()
        .find(|entry| entry.key == key)
        .map(|entry| {
            Ok(TargetRecord {
                target: records::decode(&entry.key, &entry.value)?,
                revision: entry.mod_revision,
            })
        })
        .transpose()
}

/// Every target, by name.
pub async fn load_all<S: Store>(store: &S) -> Result<Vec<FleetTarget>, RolloutError> {
    let listing = store.list(&keys::targets_prefix()).await?;
    let mut targets: Vec<FleetTarget> = listing
        .entries
        .iter()
        .map(|entry| records::decode(&entry.key, &entry.value))
        .collect::<Result<_, _>>()?;
    targets.sort_by(|left, right| left.name.cmp(&right.name));
    Ok(targets)
}

/// Removes the target `name`; what it was.
pub async fn remove<S: Store>(store: &S, name: &str) -> Result<FleetTarget, RolloutError> {
    let record = load(store, name).await?.ok_or_else(|| unknown(name))?;
    store
        .commit(None, &[], &[Write::Delete(keys::target(name))])
        .await?;
    Ok(record.target)
}

/// The refusal for a target that is not set.
pub fn unknown(name: &str) -> RolloutError {
    RolloutError::NotFound(format!(
        "no fleet target {name}; `fleetshift target list` lists them"
    ))
}

/// Letters, digits, `-`, `_` and `.`: a name that is one store key segment.
fn check_name(name: &str) -> Result<(), RolloutError> {
    let valid = !name.is_empty()
        && name.len() <= 63
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
    if valid {
        Ok(())
    } else {
        Err(RolloutError::BadRequest(format!(
            "target name {name:?}: use 1 to 63 letters, digits, `-`, `_` or `.`"
        )))
    }
}

#[cfg(test)]
mod tests;
