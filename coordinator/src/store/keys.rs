//! The key layout, versioned so a future layout can live beside this one.
//!
//! | key | value | written by |
//! |---|---|---|
//! | `leader` | candidate id, on its lease | election |
//! | `agents/<agent>` | the agent's Hello, on its session lease | the replica it talks to |
//! | `claims/<shard>` | the holder's name, on its lease ([`crate::claims`]) | the leader (tasks); the replica called (restores) |
//! | `plans/<plan>` | `StoredPlan` | operators (CAS) and the leader |
//! | `tasks/<plan>/<shard>` | `ShardTask` | the leader; `running` by the agent's replica |
//! | `assignments/<agent>/<assignment>` | `Assignment` without files, on the agent's lease | the leader |
//! | `results/<assignment>` | `AssignmentResult` | the agent's replica; removed by the leader |
//! | `sets/<digest>/<chunk>` | a chunk of the encoded `MigrationSet` | `CreatePlan` |
//! | `schemas/<fingerprint>/<chunk>` | a chunk of a schema snapshot's gzip-compressed canonical text | the replica an agent reported it to |
//! | `host-requests/<agent>/<request>` | `HostRequest`, on the operator call's lease | the replica called |
//! | `host-replies/<request>` | `HostReply`, on the same lease | the agent's replica |
//! | `rehearsals/<plan>/<shard>` | `ShardRehearsal`, the newest | the replica called |
//! | `lifecycles/<shard>` | `ShardLifecycleSetting` | the replica called |
//! | `baselines/<id>` | `SchemaBaseline` without its SQL, with its last verification | the replica called |
//! | `baseline-sql/<id>/<chunk>` | a chunk of the baseline's SQL | the replica called |
//! | `targets/<name>` | `FleetTarget` | the replica called (set); the leader (approvals, refusals) |
//! | `consoles/<replica>` | the URL of the replica's web console, on its own lease | that replica |

const PREFIX: &str = "/fleetshift/v1";

pub fn all() -> String {
    format!("{PREFIX}/")
}

pub fn consoles_prefix() -> String {
    format!("{PREFIX}/consoles/")
}

pub fn console(replica: &str) -> String {
    format!("{}{replica}", consoles_prefix())
}

pub fn leader() -> String {
    format!("{PREFIX}/leader")
}

pub fn throttles_prefix() -> String {
    format!("{PREFIX}/throttles/")
}

pub fn throttle(id: &str) -> String {
    format!("{}{id}", throttles_prefix())
}

pub fn all_throttled_prefix() -> String {
    format!("{PREFIX}/throttled/")
}

pub fn throttled_prefix(plan: &str) -> String {
    format!("{}{plan}/", all_throttled_prefix())
}

/// A run waiting on a throttle now, by its plan and assignment.
pub fn throttled(plan: &str, assignment: &str) -> String {
    format!("{}{assignment}", throttled_prefix(plan))
}

pub fn journal_prefix() -> String {
    format!("{PREFIX}/journal/")
}

/// One batch of the event journal, by the replica that wrote it.
pub fn journal_batch(replica: &str, batch: &str) -> String {
    format!("{}{replica}/{batch}", journal_prefix())
}

pub fn agents_prefix() -> String {
    format!("{PREFIX}/agents/")
}

pub fn agent(agent: &str) -> String {
    format!("{}{agent}", agents_prefix())
}

pub fn plans_prefix() -> String {
    format!("{PREFIX}/plans/")
}

pub fn plan(plan: &str) -> String {
    format!("{}{plan}", plans_prefix())
}

pub fn all_tasks_prefix() -> String {
    format!("{PREFIX}/tasks/")
}

pub fn tasks_prefix(plan: &str) -> String {
    format!("{}{plan}/", all_tasks_prefix())
}

pub fn task(plan: &str, shard: &str) -> String {
    format!("{}{shard}", tasks_prefix(plan))
}

pub fn assignments_prefix() -> String {
    format!("{PREFIX}/assignments/")
}

pub fn agent_assignments_prefix(agent: &str) -> String {
    format!("{}{agent}/", assignments_prefix())
}

pub fn assignment(agent: &str, assignment: &str) -> String {
    format!("{}{assignment}", agent_assignments_prefix(agent))
}

pub fn results_prefix() -> String {
    format!("{PREFIX}/results/")
}

pub fn result(assignment: &str) -> String {
    format!("{}{assignment}", results_prefix())
}

pub fn set_prefix(digest: &str) -> String {
    format!("{PREFIX}/sets/{digest}/")
}

pub fn host_requests_prefix() -> String {
    format!("{PREFIX}/host-requests/")
}

pub fn host_request(agent: &str, request: &str) -> String {
    format!("{}{agent}/{request}", host_requests_prefix())
}

pub fn host_reply(request: &str) -> String {
    format!("{PREFIX}/host-replies/{request}")
}

pub fn rehearsals_prefix(plan: &str) -> String {
    format!("{PREFIX}/rehearsals/{plan}/")
}

pub fn rehearsal(plan: &str, shard: &str) -> String {
    format!("{}{shard}", rehearsals_prefix(plan))
}

pub fn lifecycles_prefix() -> String {
    format!("{PREFIX}/lifecycles/")
}

pub fn lifecycle(shard: &str) -> String {
    format!("{PREFIX}/lifecycles/{shard}")
}

pub fn targets_prefix() -> String {
    format!("{PREFIX}/targets/")
}

pub fn target(name: &str) -> String {
    format!("{PREFIX}/targets/{name}")
}

pub fn baselines_prefix() -> String {
    format!("{PREFIX}/baselines/")
}

pub fn baseline(id: &str) -> String {
    format!("{PREFIX}/baselines/{id}")
}

pub fn baseline_sql_prefix(id: &str) -> String {
    format!("{PREFIX}/baseline-sql/{id}/")
}

pub fn schema_prefix(fingerprint: &str) -> String {
    format!("{PREFIX}/schemas/{fingerprint}/")
}
