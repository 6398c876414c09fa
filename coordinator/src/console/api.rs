//! The console's JSON: the fleet service's answers in the proto3 JSON mapping (field names as
//! in the contract), each for a viewer only.

use std::collections::HashMap;

use axum::extract::{Path, Query, State};
use axum::response::{IntoResponse, Response};
use fleetshift_common::proto::json::{self, Named};
use fleetshift_common::proto::v1::{
    ListBackupsRequest, ListPlansResponse, ListShardsResponse, PlanState, ShardState, ShardSummary,
};
use serde_json::{Value, json};
use tonic::Status;

use super::{Console, Refusal, Viewer, json_headers};
use crate::rollout::{schedule, waves};
use crate::store::Store;

/// `GET /api/v1/shards?<label>=<value>…`: the shards the selector selects (all without one).
pub async fn shards<S: Store + 'static>(
    State(console): State<Console<S>>,
    _viewer: Viewer,
    Query(selector): Query<HashMap<String, String>>,
) -> Result<Response, Refusal> {
    let shards = console.fleet.shards(&selector).await?;
    Ok(answer(to_json(&ListShardsResponse { shards })?))
}

/// `GET /api/v1/plans`: every plan, newest first, with its tasks as they stand.
pub async fn plans<S: Store + 'static>(
    State(console): State<Console<S>>,
    _viewer: Viewer,
) -> Result<Response, Refusal> {
    let plans = console.fleet.plans_with_tasks(&[]).await?;
    Ok(answer(to_json(&ListPlansResponse { plans })?))
}

/// `GET /api/v1/plans/<plan>`: the plan as `GetPlan` answers it, and what each of its pending
/// shards waits for (its start or its window), as `fleetshift watch` says it.
pub async fn plan<S: Store + 'static>(
    State(console): State<Console<S>>,
    _viewer: Viewer,
    Path(plan_id): Path<String>,
) -> Result<Response, Refusal> {
    let plan = console.fleet.plan(&plan_id).await?;
    let now = jiff::Timestamp::now();
    let open = matches!(
        plan.state(),
        PlanState::Running | PlanState::Approved | PlanState::AwaitingApproval
    );
    let waiting: serde_json::Map<String, Value> = waves::planned_tasks(&plan)
        .filter(|task| open && task.state() == ShardState::Pending)
        .filter_map(|task| {
            let waiting = schedule::waiting(&plan, task, now)?;
            Some((task.shard_id.clone(), Value::from(waiting.describe(now))))
        })
        .collect();
    let body = json!({ "plan": to_json(&plan)?, "waiting": waiting });
    Ok(answer(body))
}

/// `GET /api/v1/shards/<shard>`: the shard as announced (`null` when its agent is not
/// connected), its ledger and its backups as its agent reads them (or why they could not be
/// read), and its task in each plan that included it.
pub async fn shard<S: Store + 'static>(
    State(console): State<Console<S>>,
    Viewer(viewer): Viewer,
    Path(shard_id): Path<String>,
) -> Result<Response, Refusal> {
    let announced: Option<ShardSummary> = console
        .fleet
        .shards(&HashMap::new())
        .await?
        .into_iter()
        .find(|shard| shard.shard_id == shard_id);
    let mut history = Vec::new();
    for (plan, task) in console.fleet.shard_history(&shard_id).await? {
        history.push(json!({ "plan": to_json(&plan)?, "task": to_json(&task)? }));
    }
    let (ledger, backups) = if announced.is_some() {
        let request = ListBackupsRequest {
            shard_id: shard_id.clone(),
        };
        let (ledger, backups) = tokio::join!(
            console.fleet.ledger_of(&shard_id, viewer.to_string()),
            console.fleet.backups_of(request, viewer.to_string()),
        );
        let ledger = match ledger {
            Ok(ledger) => to_json(&ledger)?,
            Err(status) => json!({ "error": status.message() }),
        };
        let backups = match backups {
            Ok(listed) => to_json(&listed.into_inner())?,
            Err(status) => json!({ "error": status.message() }),
        };
        (ledger, backups)
    } else {
        let absent = json!({ "error": format!("{shard_id}'s agent is not connected") });
        (absent.clone(), absent)
    };
    let body = json!({
        "shard_id": shard_id,
        "shard": announced.as_ref().map(to_json).transpose()?,
        "ledger": ledger,
        "history": history,
        "backups": backups,
    });
    Ok(answer(body))
}

/// `GET /api/v1/consoles`: the consoles of the live replicas.
pub async fn consoles<S: Store + 'static>(
    State(console): State<Console<S>>,
    _viewer: Viewer,
) -> Result<Response, Refusal> {
    let listed = console
        .directory
        .consoles()
        .await
        .map_err(|error| Status::unavailable(format!("listing the consoles: {error}")))?;
    let consoles: Vec<Value> = listed
        .into_iter()
        .map(|listed| json!({ "replica": listed.replica, "url": listed.url }))
        .collect();
    Ok(answer(json!({ "consoles": consoles })))
}

pub(super) fn to_json<M: Named>(message: &M) -> Result<Value, Status> {
    json::to_json(message).map_err(|error| Status::internal(error.to_string()))
}

fn answer(body: Value) -> Response {
    (json_headers(), body.to_string()).into_response()
}
