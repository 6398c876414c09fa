//! Shard lifecycles: `active`, `suspended`, `provisioning` or `retired`, from each shard's agent
//! configuration, or set by an operator over it (stored under `lifecycles/<shard>` until
//! changed or removed). Only active shards are planned; the others are named in the plan's
//! `left_out` with where their lifecycle comes from.

use std::collections::HashMap;
use std::time::SystemTime;

use fleetshift_common::proto::v1::{
    Hello, LeftOut, SetShardLifecycleRequest, ShardFacts, ShardLifecycle, ShardLifecycleSetting,
};
use fleetshift_common::rollout_names::lifecycle_name;
use fleetshift_common::selector::{self, Announced};
use prost::Message;

use crate::rollout::RolloutError;
use crate::store::{Store, Write, keys};

/// The operators' settings, by shard.
pub type Settings = HashMap<String, ShardLifecycleSetting>;

/// Agents' announcements, each as `(agent, hello)`.
pub type Announcements = Vec<(String, Hello)>;

/// Stores (or, with UNSPECIFIED, removes) the setting `request` asks for, by `author`.
pub async fn set<S: Store>(
    store: &S,
    request: SetShardLifecycleRequest,
    author: &str,
) -> Result<ShardLifecycleSetting, RolloutError> {
    if request.shard_id.is_empty() {
        return Err(RolloutError::BadRequest(
            "name the shard whose lifecycle to set".to_owned(),
        ));
    }
    let lifecycle =
        ShardLifecycle::try_from(request.lifecycle).unwrap_or(ShardLifecycle::Unspecified);
    let setting = ShardLifecycleSetting {
        shard_id: request.shard_id,
        lifecycle: lifecycle.into(),
        reason: request.reason,
        author: author.to_owned(),
        at: Some(SystemTime::now().into()),
    };
    let key = keys::lifecycle(&setting.shard_id);
    let write = if lifecycle == ShardLifecycle::Unspecified {
        Write::Delete(key)
    } else {
        if setting.reason.trim().is_empty() {
            return Err(RolloutError::BadRequest(
                "say why with --reason: the setting stays until it is changed".to_owned(),
            ));
        }
        Write::put(key, setting.encode_to_vec())
    };
    store.commit(None, &[], &[write]).await?;
    Ok(setting)
}

/// Every operator's setting in force.
pub async fn load<S: Store>(store: &S) -> Result<Settings, RolloutError> {
    let listing = store.list(&keys::lifecycles_prefix()).await?;
    listing
        .entries
        .iter()
        .map(|entry| {
            let setting: ShardLifecycleSetting =
                crate::rollout::records::decode(&entry.key, &entry.value)?;
            Ok((setting.shard_id.clone(), setting))
        })
        .collect()
}

/// The lifecycle in force for `shard` and where it comes from.
pub fn in_force(shard: &ShardFacts, settings: &Settings) -> (ShardLifecycle, String) {
    match settings.get(&shard.shard_id) {
        Some(setting) => (
            ShardLifecycle::try_from(setting.lifecycle).unwrap_or(ShardLifecycle::Active),
            format!(
                "set by {} at {}: {}",
                setting.author,
                setting.at.map(|at| at.to_string()).unwrap_or_default(),
                setting.reason
            ),
        ),
        None => (
            match ShardLifecycle::try_from(shard.lifecycle) {
                Ok(ShardLifecycle::Unspecified) | Err(_) => ShardLifecycle::Active,
                Ok(lifecycle) => lifecycle,
            },
            "agent configuration".to_owned(),
        ),
    }
}

/// Why `shard` is not planned, or `None` when it is active.
pub fn not_plannable(shard: &ShardFacts, settings: &Settings) -> Option<String> {
    let (lifecycle, source) = in_force(shard, settings);
    (lifecycle != ShardLifecycle::Active)
        .then(|| format!("{} ({source})", lifecycle_name(lifecycle)))
}

/// Every announced shard that is not active, with why.
pub fn inactive(agents: &[(String, Hello)], settings: &Settings) -> Vec<LeftOut> {
    agents
        .iter()
        .flat_map(|(_, hello)| &hello.shards)
        .filter_map(|shard| {
            not_plannable(shard, settings).map(|reason| LeftOut {
                shard_id: shard.shard_id.clone(),
                reason,
            })
        })
        .collect()
}

/// The announcements with only their active shards, and the shards `selector` picks that are
/// not active, each with why; refused when `selector` picks shards and none is active.
pub fn plannable(
    agents: Announcements,
    settings: &Settings,
    selector: &HashMap<String, String>,
) -> Result<(Announcements, Vec<LeftOut>), RolloutError> {
    let mut left_out = Vec::new();
    let mut kept = Vec::with_capacity(agents.len());
    let mut active = 0_usize;
    for (agent, mut hello) in agents {
        let selected = |shard: &ShardFacts| {
            let announced = Announced {
                agent: &agent,
                host: hello.host.as_ref(),
                shard,
            };
            selector::selects(selector, &announced.attributes())
        };
        let mut shards = Vec::with_capacity(hello.shards.len());
        for shard in std::mem::take(&mut hello.shards) {
            match not_plannable(&shard, settings) {
                Some(reason) if selected(&shard) => left_out.push(LeftOut {
                    shard_id: shard.shard_id.clone(),
                    reason,
                }),
                Some(_) => {}
                None => {
                    active += usize::from(selected(&shard));
                    shards.push(shard);
                }
            }
        }
        hello.shards = shards;
        kept.push((agent, hello));
    }
    left_out.sort_by(|left, right| left.shard_id.cmp(&right.shard_id));
    if active == 0 && !left_out.is_empty() {
        let named: Vec<String> = left_out
            .iter()
            .map(|left| format!("{} is {}", left.shard_id, left.reason))
            .collect();
        return Err(RolloutError::BadRequest(format!(
            "no shard matching {selector:?} is active: {}; `fleetshift lifecycle <shard> active` changes that",
            named.join("; ")
        )));
    }
    Ok((kept, left_out))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::MemoryStore;

    fn facts(shard: &str, lifecycle: ShardLifecycle) -> ShardFacts {
        ShardFacts {
            shard_id: shard.to_owned(),
            lifecycle: lifecycle.into(),
            ..ShardFacts::default()
        }
    }

    #[tokio::test]
    async fn an_operators_setting_overrides_the_agents_until_removed() {
        let store = MemoryStore::new();
        let request = |lifecycle: ShardLifecycle, reason: &str| SetShardLifecycleRequest {
            shard_id: "tenant-7".to_owned(),
            lifecycle: lifecycle.into(),
            reason: reason.to_owned(),
        };
        let configured = facts("tenant-7", ShardLifecycle::Unspecified);
        assert_eq!(not_plannable(&configured, &Settings::new()), None);
        let suspended = facts("tenant-8", ShardLifecycle::Suspended);
        assert_eq!(
            not_plannable(&suspended, &Settings::new()).as_deref(),
            Some("suspended (agent configuration)")
        );

        let unexplained = set(&store, request(ShardLifecycle::Retired, " "), "alice").await;
        assert!(unexplained.is_err(), "a reason is required");
        set(
            &store,
            request(ShardLifecycle::Retired, "tenant left"),
            "alice",
        )
        .await
        .expect("set");
        let settings = load(&store).await.expect("load");
        let why = not_plannable(&configured, &settings).expect("retired");
        assert!(why.starts_with("retired (set by alice at "), "{why}");
        assert!(why.ends_with(": tenant left)"), "{why}");

        set(&store, request(ShardLifecycle::Unspecified, ""), "alice")
            .await
            .expect("removed");
        assert!(load(&store).await.expect("load").is_empty());
    }

    #[test]
    fn only_active_shards_are_planned_and_the_others_named() {
        let hello = |shards: Vec<ShardFacts>| Hello {
            shards,
            ..Hello::default()
        };
        let agents = || {
            vec![(
                "db-1".to_owned(),
                hello(vec![
                    facts("tenant-1", ShardLifecycle::Active),
                    ShardFacts {
                        labels: [("tier".to_owned(), "trial".to_owned())].into(),
                        ..facts("tenant-2", ShardLifecycle::Provisioning)
                    },
                    facts("tenant-3", ShardLifecycle::Unspecified),
                ]),
            )]
        };
        let (kept, left_out) =
            plannable(agents(), &Settings::new(), &HashMap::new()).expect("plannable");
        let ids: Vec<&str> = kept[0]
            .1
            .shards
            .iter()
            .map(|shard| shard.shard_id.as_str())
            .collect();
        assert_eq!(ids, ["tenant-1", "tenant-3"]);
        assert_eq!(left_out.len(), 1);
        assert_eq!(left_out[0].shard_id, "tenant-2");
        assert_eq!(left_out[0].reason, "provisioning (agent configuration)");
        assert_eq!(inactive(&agents(), &Settings::new()), left_out);

        let only = HashMap::from([("tier".to_owned(), "trial".to_owned())]);
        let refused = plannable(agents(), &Settings::new(), &only)
            .expect_err("nothing active")
            .to_string();
        assert!(
            refused.contains("is active: tenant-2 is provisioning (agent configuration)"),
            "{refused}"
        );
    }
}
