//! Timed status updates: while a plan that asks for them (`Plan.updates`) runs, a
//! `rollout.status` event at its interval, with a summary (waves, shards by state, shards
//! waiting for their start or window, shards waiting on a throttle now, shards whose runs had
//! to wait for a busy server, the time left as the finished shards suggest) and that summary rendered by the plan's template (or the
//! default one) as `text`, for chat channels.

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use fleetshift_common::proto::v1::{Plan, PlanState, ProgressEvent, ShardState, ShardTask};
use fleetshift_common::rollout_names::{plan_state_name, shard_state_name};
use fleetshift_common::window;
use serde_json::{Value, json};
use tokio::time::Instant;

use super::events::{Event, event};
use crate::rollout::{RolloutError, schedule, throttled, waves};

/// The text of an update when the plan gives no template.
pub const DEFAULT_TEMPLATE: &str = "Rollout {{ plan }} ({{ state }}): {{ shards.succeeded or 0 }} of {{ total }} shard(s) done\
{% if shards.failed %}, {{ shards.failed }} failed{% endif %}\
{% if shards[\"rolled back\"] %}, {{ shards[\"rolled back\"] }} rolled back{% endif %}\
{% if running %}, {{ running }} running{% endif %}\
{% if waiting %}, {{ waiting | length }} waiting for their window or start{% endif %}\
{% if throttled %}; {{ throttled | length }} throttled now{% endif %}\
{% if waited %}; {{ waited | length }} waited for a busy server{% endif %}\
{% if estimated_left %}; about {{ estimated_left }} left{% endif %}.";

/// Checks that `template` parses; the error names the line.
pub fn check_template(template: &str) -> Result<(), RolloutError> {
    let mut environment = minijinja::Environment::new();
    environment
        .add_template("update", template)
        .map_err(|error| {
            RolloutError::BadRequest(match error.line() {
                Some(line) => format!("the update template, line {line}: {error}"),
                None => format!("the update template: {error}"),
            })
        })
}

fn render(template: &str, context: &Value) -> Result<String, minijinja::Error> {
    minijinja::Environment::new().render_str(template, minijinja::value::Serde(context))
}

/// A running plan that sends updates, as the follower last saw it.
#[derive(Debug)]
struct Followed {
    plan: Plan,
    tasks: BTreeMap<String, ShardTask>,
    /// When the last update went out, or the plan was first seen running.
    last: Instant,
}

/// The plans that send updates.
#[derive(Debug, Default)]
pub struct Updates {
    plans: HashMap<String, Followed>,
    /// The runs of every plan waiting on a throttle now.
    waits: throttled::Waits,
}

impl Updates {
    /// Follows `plan` while it runs and asks for updates; forgets it once it does not.
    pub fn plan_changed(&mut self, plan: &Plan) {
        let wants = plan.state() == PlanState::Running && every(plan).is_some();
        if !wants {
            self.plans.remove(&plan.plan_id);
            return;
        }
        self.plans
            .entry(plan.plan_id.clone())
            .and_modify(|followed| followed.plan = plan.clone())
            .or_insert_with(|| Followed {
                plan: plan.clone(),
                tasks: BTreeMap::new(),
                last: Instant::now(),
            });
    }

    pub fn task_changed(&mut self, plan_id: &str, task: &ShardTask) {
        if let Some(followed) = self.plans.get_mut(plan_id) {
            followed.tasks.insert(task.shard_id.clone(), task.clone());
        }
    }

    /// A run began waiting on a throttle (`event`), or stopped (`None`).
    pub fn wait_changed(&mut self, assignment: &str, event: Option<ProgressEvent>) {
        match event {
            Some(event) => self.waits.insert(assignment.to_owned(), event),
            None => self.waits.remove(assignment),
        };
    }

    /// The updates due now, each plan's clock restarted.
    pub fn due(&mut self, now: Instant) -> Vec<Event> {
        let mut due = Vec::new();
        for followed in self.plans.values_mut() {
            let Some(every) = every(&followed.plan) else {
                continue;
            };
            if now.duration_since(followed.last) < every {
                continue;
            }
            followed.last = now;
            due.push(update(followed, &self.waits));
        }
        due
    }
}

fn every(plan: &Plan) -> Option<Duration> {
    plan.updates
        .as_ref()?
        .every
        .and_then(|every| Duration::try_from(every).ok())
        .filter(|every| !every.is_zero())
}

/// The `rollout.status` event of `followed` now.
fn update(followed: &Followed, waits: &throttled::Waits) -> Event {
    let mut plan = with_tasks(followed);
    throttled::put_on(&mut plan, waits, std::time::SystemTime::now());
    let mut summary = summary(&plan, jiff::Timestamp::now());
    let template = plan
        .updates
        .as_ref()
        .map(|updates| updates.template.as_str())
        .filter(|template| !template.trim().is_empty())
        .unwrap_or(DEFAULT_TEMPLATE);
    let text = render(template, &summary)
        .unwrap_or_else(|error| format!("(the update template failed: {error})"));
    if let Some(object) = summary.as_object_mut() {
        object.insert("text".to_owned(), Value::String(text));
    }
    event("rollout.status", &plan.plan_id, summary)
}

/// The plan with each task as last seen.
fn with_tasks(followed: &Followed) -> Plan {
    let mut plan = followed.plan.clone();
    for task in plan.waves.iter_mut().flat_map(|wave| &mut wave.shards) {
        if let Some(seen) = followed.tasks.get(&task.shard_id) {
            *task = seen.clone();
        }
    }
    plan
}

/// Where a plan stands, for an update and its template.
pub fn summary(plan: &Plan, now: jiff::Timestamp) -> Value {
    let tasks: Vec<&ShardTask> = waves::planned_tasks(plan).collect();
    let mut by_state: BTreeMap<&str, usize> = BTreeMap::new();
    for task in &tasks {
        *by_state.entry(shard_state_name(task.state())).or_default() += 1;
    }
    let running = tasks
        .iter()
        .filter(|task| matches!(task.state(), ShardState::Claimed | ShardState::Running))
        .count();
    let waiting: Vec<String> = tasks
        .iter()
        .filter(|task| task.state() == ShardState::Pending)
        .filter_map(|task| {
            let waiting = schedule::waiting(plan, task, now)?;
            Some(format!("{}: {}", task.shard_id, waiting.describe(now)))
        })
        .collect();
    let throttled: Vec<String> = tasks
        .iter()
        .filter_map(|task| {
            let throttled = task.throttled.as_ref()?;
            Some(format!("{}: {}", task.shard_id, throttled.detail))
        })
        .collect();
    let waited: Vec<&str> = tasks
        .iter()
        .filter(|task| waited(task) > Duration::ZERO)
        .map(|task| task.shard_id.as_str())
        .collect();
    let waves: Vec<Value> = plan
        .waves
        .iter()
        .map(|wave| {
            let ended = wave
                .shards
                .iter()
                .filter(|task| crate::rollout::task_ended(task.state()))
                .count();
            json!({ "wave": wave.index, "shards": wave.shards.len(), "ended": ended })
        })
        .collect();
    json!({
        "plan": plan.plan_id,
        "state": plan_state_name(plan.state()),
        "target_version": plan.target_version,
        "total": tasks.len(),
        "shards": by_state,
        "running": running,
        "waves": waves,
        "waiting": waiting,
        "throttled": throttled,
        "waited": waited,
        "estimated_left": estimated_left(plan, &tasks).map(window::humane),
    })
}

fn waited(task: &ShardTask) -> Duration {
    task.metrics
        .as_ref()
        .and_then(|metrics| metrics.throttled)
        .and_then(|waited| Duration::try_from(waited).ok())
        .unwrap_or_default()
}

/// The shards not ended yet, at the finished ones' mean run time, as many at once as the plan
/// runs per wave; none before a shard has finished.
fn estimated_left(plan: &Plan, tasks: &[&ShardTask]) -> Option<Duration> {
    let runs: Vec<Duration> = tasks
        .iter()
        .filter(|task| crate::rollout::task_ended(task.state()))
        .filter_map(|task| task.metrics.as_ref()?.duration)
        .filter_map(|took| Duration::try_from(took).ok())
        .collect();
    let count = u32::try_from(runs.len()).ok().filter(|count| *count > 0)?;
    let mean = runs.iter().sum::<Duration>() / count;
    let left = tasks
        .iter()
        .filter(|task| !crate::rollout::task_ended(task.state()))
        .count();
    let at_once = plan
        .policy
        .as_ref()
        .map_or(1, |policy| policy.max_concurrency_per_wave.max(1)) as usize;
    let rounds = u32::try_from(left.div_ceil(at_once)).unwrap_or(u32::MAX);
    Some(mean * rounds)
}

#[cfg(test)]
mod tests {
    use fleetshift_common::proto::v1::progress_event::Event;
    use fleetshift_common::proto::v1::{ShardMetrics, StatusUpdates, Throttled, Wave, WavePolicy};

    use crate::store::FenceToken;

    use super::*;

    fn task(shard: &str, state: ShardState, took: i64) -> ShardTask {
        ShardTask {
            shard_id: shard.to_owned(),
            state: state.into(),
            metrics: Some(ShardMetrics {
                duration: Some(prost_types::Duration {
                    seconds: took,
                    nanos: 0,
                }),
                ..ShardMetrics::default()
            }),
            ..ShardTask::default()
        }
    }

    fn plan() -> Plan {
        Plan {
            plan_id: "p-1".to_owned(),
            state: PlanState::Running.into(),
            policy: Some(WavePolicy {
                max_concurrency_per_wave: 2,
                ..WavePolicy::default()
            }),
            updates: Some(StatusUpdates {
                every: Some(prost_types::Duration {
                    seconds: 900,
                    nanos: 0,
                }),
                template: String::new(),
            }),
            waves: vec![Wave {
                index: 0,
                shards: vec![
                    ShardTask {
                        metrics: Some(ShardMetrics {
                            throttled: Some(prost_types::Duration {
                                seconds: 30,
                                nanos: 0,
                            }),
                            ..task("a", ShardState::Succeeded, 60)
                                .metrics
                                .unwrap_or_default()
                        }),
                        ..task("a", ShardState::Succeeded, 60)
                    },
                    task("b", ShardState::Failed, 120),
                    task("c", ShardState::Running, 0),
                    task("d", ShardState::Pending, 0),
                    ShardTask {
                        windows: vec!["2099-01-01T00:00/1h UTC".to_owned()],
                        ..task("e", ShardState::Pending, 0)
                    },
                ],
            }],
            ..Plan::default()
        }
    }

    #[test]
    fn an_update_summarises_the_plan_and_renders_its_text() {
        let now = "2026-12-04T12:00:00Z".parse().expect("timestamp");
        let mut plan = plan();
        plan.waves[0].shards[2].throttled = Some(Throttled {
            detail: "replica lag 7.2s > 5s".to_owned(),
            ..Throttled::default()
        });
        let summary = summary(&plan, now);
        assert_eq!(summary["total"], 5);
        assert_eq!(summary["throttled"], json!(["c: replica lag 7.2s > 5s"]));
        assert_eq!(summary["waited"], json!(["a"]));
        assert_eq!(summary["running"], 1);
        assert_eq!(summary["shards"]["succeeded"], 1);
        assert_eq!(summary["waiting"].as_array().map(Vec::len), Some(1));
        // Three left at a mean of 90 s, two at once: two rounds.
        assert_eq!(summary["estimated_left"], "3m");
        assert_eq!(
            render(DEFAULT_TEMPLATE, &summary).expect("rendered"),
            "Rollout p-1 (running): 1 of 5 shard(s) done, 1 failed, 1 running, 1 waiting for their window or start; 1 throttled now; 1 waited for a busy server; about 3m left."
        );
        assert!(check_template("{% if %}").is_err());
        assert!(check_template("{{ plan }}: {{ shards.succeeded }}").is_ok());
    }

    #[tokio::test(start_paused = true)]
    async fn updates_come_at_the_plans_interval_while_it_runs() {
        let mut updates = Updates::default();
        let mut plan = plan();
        updates.plan_changed(&plan);
        // Shard c's run waits on a throttle; the update says so.
        let assignment = crate::rollout::assignment_id("p-1", "c", FenceToken::from_raw(0));
        let began = ProgressEvent {
            assignment_id: assignment.clone(),
            shard_id: "c".to_owned(),
            at: Some(std::time::SystemTime::now().into()),
            event: Some(Event::Throttled(Throttled {
                detail: "fleet throttle t1 set by alice".to_owned(),
                ..Throttled::default()
            })),
        };
        updates.wait_changed(&assignment, Some(began));
        let start = Instant::now();
        assert!(updates.due(start).is_empty());
        tokio::time::advance(Duration::from_secs(899)).await;
        assert!(updates.due(Instant::now()).is_empty());
        tokio::time::advance(Duration::from_secs(1)).await;
        let due = updates.due(Instant::now());
        assert_eq!(due.len(), 1);
        assert_eq!(due[0].event, "rollout.status");
        assert_eq!(
            due[0].detail["throttled"],
            json!(["c: fleet throttle t1 set by alice"])
        );
        updates.wait_changed(&assignment, None);
        assert!(
            due[0].detail["text"]
                .as_str()
                .is_some_and(|text| text.starts_with("Rollout p-1"))
        );
        assert!(
            updates.due(Instant::now()).is_empty(),
            "the clock restarted"
        );
        plan.state = PlanState::Succeeded.into();
        updates.plan_changed(&plan);
        tokio::time::advance(Duration::from_secs(900)).await;
        assert!(updates.due(Instant::now()).is_empty(), "not once it ended");
    }
}
