//! `FleetService`: what operators and SRE tooling call. Each RPC first checks the caller's role
//! ([`crate::authz`]). Shards are listed from the agents' announcements; plans live in the
//! store ([`crate::rollout`]), so every replica serves every RPC and the leader follows.

use std::pin::Pin;
use std::sync::Arc;

use fleetshift_common::proto::v1::fleet_service_server::FleetService;
use std::time::Duration;

use fleetshift_common::proto::v1::host_reply::Outcome;
use fleetshift_common::proto::v1::host_request::Action;
use fleetshift_common::proto::v1::{
    Approval, ApprovePlanRequest, BackupRestored, BackupVerified, CreatePlanRequest,
    CreateRetryPlanRequest, CreateRollbackPlanRequest, DescribeReplicaRequest, FleetThrottle,
    GetPlanRequest, GetSchemaRequest, Hello, LiftThrottleRequest, ListBackupsRequest,
    ListBackupsResponse, ListPlansRequest, ListPlansResponse, ListShardsRequest,
    ListShardsResponse, ListThrottlesRequest, ListThrottlesResponse, Plan, PlanAction,
    RehearsePlanRequest, RehearsePlanResponse, ReplicaStanding, RestoreBackupRequest, RolloutEvent,
    SchemaSnapshot, SetShardLifecycleRequest, ShardLifecycleSetting, ThrottleShardsRequest,
    VerifyBackupRequest, WatchEventsRequest, WatchRolloutRequest,
};
use fleetshift_common::proto::v1::{
    CreateBaselineRequest, FleetTarget, GetTargetStatusRequest, ListBaselinesRequest,
    ListBaselinesResponse, ListTargetsRequest, ListTargetsResponse, OpenGateRequest,
    RemoveTargetRequest, SchemaBaseline, SetTargetRequest, TargetStatus, VerifyBaselineRequest,
};
use fleetshift_common::schema::Fingerprint;
use prost::Message;
use tokio_stream::Stream;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status};

use crate::authz::{self, OperatorRole, Roles};
use crate::backups::{self, Errand};
use crate::election::Replica;
use crate::error::{ErrorCode, refuse};
use crate::events::Sequence;
use crate::events::fanout::Fanout;
use crate::events::follow::{self, Scope, Watch};
use crate::lifecycles;
use crate::rehearsals;
use crate::rollout::rehearsal_gate::ShardVersions;
use crate::rollout::{
    RolloutError, phases, planning, records, retry, rollback, transitions, waves,
};
use crate::schema_baselines;
use crate::schemas;
use crate::store::Store;
use crate::targets;
use crate::tasks::TaskSet;
use crate::throttles;
use backup_calls::positive;

#[derive(Debug)]
pub struct FleetApi<S> {
    store: Arc<S>,
    roles: Roles,
    trust_domain: String,
    /// The replica's one watch of the store for every rollout watch on it; stopping the
    /// tasks it was made with ends them.
    events: Arc<Fanout<S>>,
    /// This replica, for `DescribeReplica`.
    replica: Replica,
}

impl<S: Store + 'static> FleetApi<S> {
    pub fn new(
        store: Arc<S>,
        roles: Roles,
        trust_domain: &str,
        replica: Replica,
        tasks: TaskSet,
    ) -> Self {
        Self {
            store: Arc::clone(&store),
            roles,
            trust_domain: trust_domain.to_owned(),
            events: Fanout::new(store, tasks),
            replica,
        }
    }

    /// The caller's name, once it holds the role.
    fn authorize<T>(&self, request: &Request<T>, needed: OperatorRole) -> Result<String, Status> {
        let caller = authz::caller(request, &self.trust_domain)?;
        self.roles.authorize(&caller, needed)?;
        Ok(caller.to_string())
    }

    async fn announcements(&self) -> Result<Vec<(String, Hello)>, Status> {
        let agents = self.store.agents().await.map_err(Status::from)?;
        agents
            .into_iter()
            .map(|(agent, facts)| {
                let hello = Hello::decode(facts.as_slice()).map_err(|error| {
                    refuse(
                        ErrorCode::Internal,
                        format!("agent {agent}'s announcement is unreadable: {error}"),
                    )
                })?;
                Ok((agent, hello))
            })
            .collect()
    }

    async fn plan_view(&self, plan_id: &str) -> Result<Plan, RolloutError> {
        let record = records::load_plan(&*self.store, plan_id).await?;
        let tasks = records::load_tasks(&*self.store, plan_id).await?;
        Ok(records::with_tasks(record.plan, &tasks))
    }

    /// Sends a host request to the shard's agent; the agent and what it did.
    async fn ask(
        &self,
        shard_id: String,
        action: Action,
        requested_by: String,
        timeout: Duration,
    ) -> Result<(String, Outcome), Status> {
        let agents = self.announcements().await?;
        let errand = Errand {
            shard_id,
            action,
            requested_by,
            timeout,
        };
        let (agent, reply) = backups::ask(&*self.store, &agents, errand).await?;
        let outcome = reply.outcome.ok_or_else(|| {
            refuse(
                ErrorCode::Internal,
                format!("agent {agent} replied with neither an outcome nor an error"),
            )
        })?;
        Ok((agent, outcome))
    }

    async fn change(
        &self,
        plan_id: &str,
        change: impl FnMut(&mut Plan) -> Result<(), RolloutError>,
    ) -> Result<Response<Plan>, Status> {
        records::update_plan(&*self.store, plan_id, None, change).await?;
        Ok(Response::new(self.plan_view(plan_id).await?))
    }
}

/// A stream of events, as the two watch calls answer.
type EventStream = Pin<Box<dyn Stream<Item = Result<RolloutEvent, Status>> + Send>>;

#[tonic::async_trait]
impl<S: Store + 'static> FleetService for FleetApi<S> {
    async fn list_shards(
        &self,
        request: Request<ListShardsRequest>,
    ) -> Result<Response<ListShardsResponse>, Status> {
        self.authorize(&request, OperatorRole::Viewer)?;
        let shards = self.shards(&request.into_inner().selector).await?;
        Ok(Response::new(ListShardsResponse { shards }))
    }

    async fn get_schema(
        &self,
        request: Request<GetSchemaRequest>,
    ) -> Result<Response<SchemaSnapshot>, Status> {
        self.authorize(&request, OperatorRole::Viewer)?;
        let asked = request.into_inner().fingerprint;
        let fingerprint = Fingerprint::from_hex(&asked).ok_or_else(|| {
            refuse(
                ErrorCode::BadRequest,
                format!("fingerprint: {asked:?} is not 64 hex digits (SHA-256)"),
            )
        })?;
        let snapshot = schemas::load(&*self.store, &fingerprint)
            .await
            .map_err(Status::from)?
            .ok_or_else(|| {
                refuse(
                    ErrorCode::NotFound,
                    format!("no schema snapshot with fingerprint {fingerprint}: no agent has reported one"),
                )
            })?;
        Ok(Response::new(SchemaSnapshot {
            fingerprint: fingerprint.to_string(),
            canonical: snapshot.canonical(),
        }))
    }

    async fn create_plan(
        &self,
        request: Request<CreatePlanRequest>,
    ) -> Result<Response<Plan>, Status> {
        let author = self.authorize(&request, OperatorRole::Operator)?;
        let mut request = planning::PlanRequest::try_from(request.into_inner())?;
        request.baselines = schema_baselines::list(&*self.store).await?;
        let settings = lifecycles::load(&*self.store).await?;
        let (agents, left_out) =
            lifecycles::plannable(self.announcements().await?, &settings, &request.selector)?;
        let shipped = request.set.clone();
        let mut plan = planning::plan(request, &author, &agents)?;
        plan.left_out = left_out;
        records::save_set(&*self.store, &shipped).await?;
        records::create_plan(&*self.store, &plan).await?;
        tracing::info!(plan = %plan.plan_id, %author, shards = waves::shard_count(&plan), waves = plan.waves.len(), "plan created");
        Ok(Response::new(plan))
    }

    async fn create_rollback_plan(
        &self,
        request: Request<CreateRollbackPlanRequest>,
    ) -> Result<Response<Plan>, Status> {
        let author = self.authorize(&request, OperatorRole::Operator)?;
        let request = request.into_inner();
        let source = self.plan_view(&request.plan_id).await?;
        let agents = self.announcements().await?;
        let shipped = records::load_set(&*self.store, &source.set_digest).await?;
        let (_directory, set) = planning::unpacked(&shipped)?;
        let rollback = rollback::Rollback {
            source: &source,
            set: &set,
            patterns: &request.shards,
            to: Some(request.to_version.as_str()).filter(|version| !version.is_empty()),
        };
        let plan = rollback::plan_rollback(rollback, &author, &agents)?;
        records::create_plan(&*self.store, &plan).await?;
        tracing::info!(plan = %plan.plan_id, rolls_back = %source.plan_id, %author, shards = waves::shard_count(&plan), "rollback plan created");
        Ok(Response::new(plan))
    }

    async fn create_retry_plan(
        &self,
        request: Request<CreateRetryPlanRequest>,
    ) -> Result<Response<Plan>, Status> {
        let author = self.authorize(&request, OperatorRole::Operator)?;
        let request = request.into_inner();
        let source = self.plan_view(&request.plan_id).await?;
        let settings = lifecycles::load(&*self.store).await?;
        let agents = self.announcements().await?;
        let inactive = lifecycles::inactive(&agents, &settings);
        let retry = retry::Retry {
            source: &source,
            failed_only: request.failed_only,
            patterns: &request.shards,
            inactive: &inactive,
        };
        let plan = retry::plan_retry(retry, &author, &agents)?;
        records::create_plan(&*self.store, &plan).await?;
        tracing::info!(plan = %plan.plan_id, retries = %source.plan_id, %author, shards = waves::shard_count(&plan), left_out = plan.left_out.len(), "retry plan created");
        Ok(Response::new(plan))
    }

    async fn set_target(
        &self,
        request: Request<SetTargetRequest>,
    ) -> Result<Response<FleetTarget>, Status> {
        let author = self.authorize(&request, OperatorRole::Operator)?;
        let target = targets::set(&*self.store, request.into_inner(), &author).await?;
        tracing::info!(target = %target.name, version = %targets::version(&target), %author, "fleet target set");
        Ok(Response::new(target))
    }

    async fn list_targets(
        &self,
        request: Request<ListTargetsRequest>,
    ) -> Result<Response<ListTargetsResponse>, Status> {
        self.authorize(&request, OperatorRole::Viewer)?;
        let targets = targets::load_all(&*self.store).await?;
        Ok(Response::new(ListTargetsResponse { targets }))
    }

    async fn get_target_status(
        &self,
        request: Request<GetTargetStatusRequest>,
    ) -> Result<Response<TargetStatus>, Status> {
        self.authorize(&request, OperatorRole::Viewer)?;
        let name = request.into_inner().name;
        let agents = self.announcements().await?;
        Ok(Response::new(
            targets::status(&*self.store, &name, &agents).await?,
        ))
    }

    async fn remove_target(
        &self,
        request: Request<RemoveTargetRequest>,
    ) -> Result<Response<FleetTarget>, Status> {
        let author = self.authorize(&request, OperatorRole::Operator)?;
        let target = targets::remove(&*self.store, &request.into_inner().name).await?;
        tracing::info!(target = %target.name, %author, "fleet target removed");
        Ok(Response::new(target))
    }

    async fn create_baseline(
        &self,
        request: Request<CreateBaselineRequest>,
    ) -> Result<Response<SchemaBaseline>, Status> {
        let author = self.authorize(&request, OperatorRole::Operator)?;
        let agents = self.announcements().await?;
        let baseline =
            schema_baselines::create(&*self.store, &agents, request.into_inner(), &author).await?;
        tracing::info!(baseline = %baseline.baseline_id, shard = %baseline.source_shard, version = %baseline.version, %author, "schema baseline taken");
        Ok(Response::new(baseline))
    }

    async fn verify_baseline(
        &self,
        request: Request<VerifyBaselineRequest>,
    ) -> Result<Response<SchemaBaseline>, Status> {
        let author = self.authorize(&request, OperatorRole::Operator)?;
        let request = request.into_inner();
        let agents = self.announcements().await?;
        let baseline = schema_baselines::verify(
            &*self.store,
            &agents,
            &request.baseline_id,
            &request.shard_id,
            &author,
        )
        .await?;
        let holds = baseline.verification.as_ref().is_some_and(|v| v.holds);
        tracing::info!(baseline = %baseline.baseline_id, holds, %author, "schema baseline verified");
        Ok(Response::new(baseline))
    }

    async fn list_baselines(
        &self,
        request: Request<ListBaselinesRequest>,
    ) -> Result<Response<ListBaselinesResponse>, Status> {
        self.authorize(&request, OperatorRole::Viewer)?;
        let baselines = schema_baselines::list(&*self.store).await?;
        Ok(Response::new(ListBaselinesResponse { baselines }))
    }

    async fn get_plan(&self, request: Request<GetPlanRequest>) -> Result<Response<Plan>, Status> {
        self.authorize(&request, OperatorRole::Viewer)?;
        Ok(Response::new(
            self.plan(&request.into_inner().plan_id).await?,
        ))
    }

    async fn list_plans(
        &self,
        request: Request<ListPlansRequest>,
    ) -> Result<Response<ListPlansResponse>, Status> {
        self.authorize(&request, OperatorRole::Viewer)?;
        let plans = self.plans(&request.into_inner().states).await?;
        Ok(Response::new(ListPlansResponse { plans }))
    }

    async fn approve_plan(
        &self,
        request: Request<ApprovePlanRequest>,
    ) -> Result<Response<Plan>, Status> {
        let approver = self.authorize(&request, OperatorRole::Approver)?;
        let request = request.into_inner();
        let versions: ShardVersions = self
            .announcements()
            .await?
            .into_iter()
            .flat_map(|(_, hello)| hello.shards)
            .map(|shard| {
                let version = if shard.current_version.is_empty() {
                    "base".to_owned()
                } else {
                    shard.current_version
                };
                (shard.shard_id, version)
            })
            .collect();
        let approval = Approval {
            approver,
            at: None,
            comment: request.comment.clone(),
            capacity: request.capacity.clone(),
        };
        self.change(&request.plan_id, |plan| {
            transitions::approve(plan, approval.clone(), &versions)
        })
        .await
    }

    async fn open_gate(&self, request: Request<OpenGateRequest>) -> Result<Response<Plan>, Status> {
        let approver = self.authorize(&request, OperatorRole::Approver)?;
        let request = request.into_inner();
        let at = std::time::SystemTime::now();
        let changed = self
            .change(&request.plan_id, |plan| {
                phases::open(plan, &request.phase, &approver, &request.reason, at)
            })
            .await?;
        tracing::info!(plan = %request.plan_id, phase = %request.phase, %approver, reason = %request.reason, "phase gate opened");
        Ok(changed)
    }

    async fn start_rollout(&self, request: Request<PlanAction>) -> Result<Response<Plan>, Status> {
        self.authorize(&request, OperatorRole::Operator)?;
        let action = request.into_inner();
        self.change(&action.plan_id, transitions::start).await
    }

    async fn pause_rollout(&self, request: Request<PlanAction>) -> Result<Response<Plan>, Status> {
        self.authorize(&request, OperatorRole::Operator)?;
        let action = request.into_inner();
        self.change(&action.plan_id, |plan| {
            transitions::pause(plan, &action.reason)
        })
        .await
    }

    async fn resume_rollout(&self, request: Request<PlanAction>) -> Result<Response<Plan>, Status> {
        self.authorize(&request, OperatorRole::Operator)?;
        let action = request.into_inner();
        self.change(&action.plan_id, transitions::resume).await
    }

    async fn cancel_rollout(&self, request: Request<PlanAction>) -> Result<Response<Plan>, Status> {
        self.authorize(&request, OperatorRole::Operator)?;
        let action = request.into_inner();
        self.change(&action.plan_id, |plan| {
            transitions::cancel(plan, &action.reason)
        })
        .await
    }

    async fn list_backups(
        &self,
        request: Request<ListBackupsRequest>,
    ) -> Result<Response<ListBackupsResponse>, Status> {
        let caller = self.authorize(&request, OperatorRole::Viewer)?;
        self.backups_of(request.into_inner(), caller).await
    }

    async fn verify_backup(
        &self,
        request: Request<VerifyBackupRequest>,
    ) -> Result<Response<BackupVerified>, Status> {
        let caller = self.authorize(&request, OperatorRole::Operator)?;
        self.backup_checked(request.into_inner(), caller).await
    }

    async fn restore_backup(
        &self,
        request: Request<RestoreBackupRequest>,
    ) -> Result<Response<BackupRestored>, Status> {
        let caller = self.authorize(&request, OperatorRole::Approver)?;
        self.backup_restored(request.into_inner(), caller).await
    }

    async fn rehearse_plan(
        &self,
        request: Request<RehearsePlanRequest>,
    ) -> Result<Response<RehearsePlanResponse>, Status> {
        let caller = self.authorize(&request, OperatorRole::Operator)?;
        let request = request.into_inner();
        let timeout = positive(request.timeout, "timeout")?.unwrap_or(rehearsals::DEFAULT_TIMEOUT);
        let agents = self.announcements().await?;
        let response =
            rehearsals::rehearse(&*self.store, &agents, request, &caller, timeout).await?;
        Ok(Response::new(response))
    }

    type WatchRolloutStream = EventStream;

    async fn throttle_shards(
        &self,
        request: Request<ThrottleShardsRequest>,
    ) -> Result<Response<FleetThrottle>, Status> {
        let author = self.authorize(&request, OperatorRole::Operator)?;
        let throttle = throttles::set(&*self.store, request.into_inner(), &author).await?;
        tracing::info!(throttle = %throttle.throttle_id, %author, selector = ?throttle.selector, reason = %throttle.reason, "fleet throttle set");
        Ok(Response::new(throttle))
    }

    async fn list_throttles(
        &self,
        request: Request<ListThrottlesRequest>,
    ) -> Result<Response<ListThrottlesResponse>, Status> {
        self.authorize(&request, OperatorRole::Viewer)?;
        let throttles = throttles::list(&*self.store).await?;
        Ok(Response::new(ListThrottlesResponse { throttles }))
    }

    async fn lift_throttle(
        &self,
        request: Request<LiftThrottleRequest>,
    ) -> Result<Response<FleetThrottle>, Status> {
        let author = self.authorize(&request, OperatorRole::Operator)?;
        let id = request.into_inner().throttle_id;
        let throttle = throttles::lift(&*self.store, &id).await?;
        tracing::info!(throttle = %id, %author, "fleet throttle lifted");
        Ok(Response::new(throttle))
    }

    async fn set_shard_lifecycle(
        &self,
        request: Request<SetShardLifecycleRequest>,
    ) -> Result<Response<ShardLifecycleSetting>, Status> {
        let author = self.authorize(&request, OperatorRole::Operator)?;
        let setting = lifecycles::set(&*self.store, request.into_inner(), &author).await?;
        tracing::info!(shard = %setting.shard_id, lifecycle = setting.lifecycle, %author, reason = %setting.reason, "shard lifecycle set");
        Ok(Response::new(setting))
    }

    async fn describe_replica(
        &self,
        request: Request<DescribeReplicaRequest>,
    ) -> Result<Response<ReplicaStanding>, Status> {
        self.authorize(&request, OperatorRole::Viewer)?;
        let (leading, leadership) = self.replica.now();
        let (leader_id, epoch) =
            leadership.map_or((String::new(), 0), |known| (known.leader, known.epoch.0));
        Ok(Response::new(ReplicaStanding {
            coordinator_id: self.replica.id.clone(),
            leading,
            leader_id,
            epoch,
        }))
    }

    async fn watch_rollout(
        &self,
        request: Request<WatchRolloutRequest>,
    ) -> Result<Response<Self::WatchRolloutStream>, Status> {
        self.authorize(&request, OperatorRole::Viewer)?;
        let request = request.into_inner();
        let watch = Watch {
            scope: Scope::Plan(request.plan_id),
            include_statements: request.include_statements,
            since: (request.since > 0).then(|| Sequence::from_raw(request.since)),
        };
        let events = follow::follow(&self.events, watch).await?;
        Ok(Response::new(Box::pin(ReceiverStream::new(events))))
    }

    type WatchEventsStream = EventStream;

    async fn watch_events(
        &self,
        request: Request<WatchEventsRequest>,
    ) -> Result<Response<Self::WatchEventsStream>, Status> {
        self.authorize(&request, OperatorRole::Viewer)?;
        let request = request.into_inner();
        let watch = Watch {
            scope: Scope::Fleet,
            include_statements: request.include_statements,
            since: (request.since > 0).then(|| Sequence::from_raw(request.since)),
        };
        let events = follow::follow(&self.events, watch).await?;
        Ok(Response::new(Box::pin(ReceiverStream::new(events))))
    }
}

mod backup_calls;
mod reads;
