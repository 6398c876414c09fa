//! Webhooks: rollout events POSTed as JSON to configured URLs, signed with an HMAC-SHA256 of
//! the body under each hook's secret (`X-Fleetshift-Signature: sha256=<hex>`), retried with
//! backoff, and never in the way of a rollout: the leader derives events from the store's
//! changes and queues them; a slow or failing hook only loses its own deliveries.
//!
//! - [`events`]: which events a change of a plan or a task makes.
//! - [`status`]: timed `rollout.status` updates of running plans that ask for them.
//! - [`delivery`]: signing and posting, with retries.

mod delivery;
mod events;
pub mod status;

use std::sync::Arc;

use fleetshift_common::proto::v1::{Plan, ShardTask};
use serde::Deserialize;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::rollout::records::decode;
use crate::rollout::throttled;
use crate::store::{Change, Store, keys};

pub use delivery::sign;
pub use events::{Event, Tracker};

/// Events waiting for delivery before new ones are dropped (with a warning).
const QUEUE: usize = 1024;

/// One configured hook.
#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Webhook {
    /// `http://` or `https://` URL the events are POSTed to.
    pub url: String,
    /// The HMAC key; read from `secret_file` when the configuration names a file.
    #[serde(skip)]
    pub secret: String,
    /// A file holding the secret (relative to the configuration file).
    #[serde(default)]
    pub secret_file: Option<std::path::PathBuf>,
    /// Only these events (e.g. `shard.failed`); every event when empty.
    #[serde(default)]
    pub events: Vec<String>,
}

impl std::fmt::Debug for Webhook {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("Webhook")
            .field("url", &self.url)
            .field("events", &self.events)
            .finish_non_exhaustive()
    }
}

impl Webhook {
    fn wants(&self, event: &str) -> bool {
        self.events.is_empty() || self.events.iter().any(|wanted| wanted == event)
    }
}

/// Follows the store while `stop` is not cancelled (the leader's standing) and delivers the
/// events it derives to `hooks`. Plans and tasks already stored when it starts make no events.
pub async fn notify<S: Store>(store: Arc<S>, hooks: Arc<[Webhook]>, stop: CancellationToken) {
    let (queue, queued) = mpsc::channel::<Event>(QUEUE);
    let sender = tokio::spawn(delivery::deliver_all(Arc::clone(&hooks), queued));
    tokio::select! {
        () = stop.cancelled() => {}
        outcome = follow(store.as_ref(), &queue) => {
            if let Err(error) = outcome {
                tracing::warn!(%error, "webhooks stopped following the store; events until the next leadership are not sent");
            }
        }
    }
    drop(queue);
    // Queued events still go out; the sender ends when the queue is empty.
    let _ = sender.await;
}

async fn follow<S: Store>(
    store: &S,
    queue: &mpsc::Sender<Event>,
) -> Result<(), crate::rollout::RolloutError> {
    let plans = store.list(&keys::plans_prefix()).await?;
    let tasks = store.list(&keys::all_tasks_prefix()).await?;
    let agents = store.list(&keys::agents_prefix()).await?;
    let waits = store.list(&keys::all_throttled_prefix()).await?;
    let mut followed = Followed::default();
    for entry in &waits.entries {
        if let Some(assignment) = throttled::assignment_of_key(&entry.key) {
            let event = decode(&entry.key, &entry.value)?;
            followed.updates.wait_changed(assignment, Some(event));
        }
    }
    for entry in &agents.entries {
        followed
            .tracker
            .agent_announced(agent_of(&entry.key), &decode(&entry.key, &entry.value)?);
    }
    for entry in &plans.entries {
        let plan: Plan = decode(&entry.key, &entry.value)?;
        followed.updates.plan_changed(&plan);
        followed.tracker.plan_changed(plan);
    }
    for entry in &tasks.entries {
        let task: ShardTask = decode(&entry.key, &entry.value)?;
        let plan_id = plan_of_task(&entry.key);
        followed.updates.task_changed(&plan_id, &task);
        followed.tracker.task_changed(task, plan_id);
    }
    let from = plans
        .revision
        .min(tasks.revision)
        .min(agents.revision)
        .min(waits.revision);
    let mut changes = store.watch(&keys::all(), from).await?;
    let mut ticks = tokio::time::interval(UPDATES_TICK);
    loop {
        let events = tokio::select! {
            change = changes.next() => match change {
                Some(change) => derive(&mut followed, &change?)?,
                None => return Ok(()),
            },
            _ = ticks.tick() => followed.updates.due(tokio::time::Instant::now()),
        };
        for event in events {
            if queue.try_send(event).is_err() {
                tracing::warn!("webhook queue full; an event was dropped");
            }
        }
    }
}

/// How often the follower looks for status updates that are due.
const UPDATES_TICK: std::time::Duration = std::time::Duration::from_secs(1);

/// What the follower keeps: what it has seen, and the plans that send updates.
#[derive(Debug, Default)]
struct Followed {
    tracker: Tracker,
    updates: status::Updates,
}

fn derive(
    followed: &mut Followed,
    change: &Change,
) -> Result<Vec<Event>, crate::rollout::RolloutError> {
    if let Some(assignment) = throttled::assignment_of_key(&change.key) {
        let event = match &change.value {
            Some(value) => Some(decode(&change.key, value)?),
            None => None,
        };
        followed.updates.wait_changed(assignment, event);
        return Ok(Vec::new());
    }
    let Some(value) = &change.value else {
        return Ok(Vec::new());
    };
    let tracker = &mut followed.tracker;
    if change.key.starts_with(&keys::plans_prefix()) {
        let plan: Plan = decode(&change.key, value)?;
        followed.updates.plan_changed(&plan);
        Ok(tracker.plan_changed(plan))
    } else if change.key.starts_with(&keys::all_tasks_prefix()) {
        let task: ShardTask = decode(&change.key, value)?;
        let plan_id = plan_of_task(&change.key);
        followed.updates.task_changed(&plan_id, &task);
        Ok(tracker.task_changed(task, plan_id))
    } else if change.key.starts_with(&keys::agents_prefix()) {
        Ok(tracker.agent_announced(agent_of(&change.key), &decode(&change.key, value)?))
    } else {
        Ok(Vec::new())
    }
}

/// `<prefix>/agents/<agent>` → `<agent>`.
fn agent_of(key: &str) -> &str {
    key.strip_prefix(&keys::agents_prefix()).unwrap_or_default()
}

/// `<prefix>/tasks/<plan>/<shard>` → `<plan>`.
fn plan_of_task(key: &str) -> String {
    key.strip_prefix(&keys::all_tasks_prefix())
        .and_then(|rest| rest.split('/').next())
        .unwrap_or_default()
        .to_owned()
}
