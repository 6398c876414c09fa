//! Risk gates enforced by the coordinator over mutual TLS, with each operator's own
//! certificate: a CRITICAL plan (a blocking, irreversible change on a production shard) starts
//! only after a rehearsal of it on every shard and two distinct approvers other than its author;
//! every approval is recorded with the approver's identity and time. And the plan's maintenance notice, rendered by the CLI from a
//! user's template.

use std::time::Duration;

use fleetshift_common::proto::v1::agent_message::Body as AgentBody;
use fleetshift_common::proto::v1::agent_service_client::AgentServiceClient;
use fleetshift_common::proto::v1::coordinator_message::Body as CoordinatorBody;
use fleetshift_common::proto::v1::fleet_service_client::FleetServiceClient;
use fleetshift_common::proto::v1::host_reply::Outcome;
use fleetshift_common::proto::v1::host_request::Action;
use fleetshift_common::proto::v1::{
    AgentMessage, ApprovePlanRequest, CoordinatorMessage, CreatePlanRequest, Heartbeat, Hello,
    HostReply, PlanAction, PlanState, RehearsalFinding, RehearsePlanRequest, RiskLevel, ShardFacts,
    ShardRehearsal,
};
use fleetshift_coordinator::authz::{OperatorRole, Roles};
use fleetshift_tests::fixtures;
use fleetshift_tests::fleet::{InProcessCoordinator, fleetshift_as};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::Code;

/// Holds an agent session announcing one production shard, heartbeating, until dropped.
async fn production_agent(fleet: &InProcessCoordinator) -> tokio::task::JoinHandle<()> {
    let mut client = AgentServiceClient::new(fleet.channel("agent-db-host-1").await);
    let (sender, receiver) = mpsc::channel(8);
    sender
        .send(AgentMessage {
            body: Some(AgentBody::Hello(Hello {
                agent_id: "db-host-1".to_owned(),
                shards: vec![ShardFacts {
                    shard_id: "users-eu".to_owned(),
                    labels: [("env".to_owned(), "production".to_owned())].into(),
                    ..ShardFacts::default()
                }],
                ..Hello::default()
            })),
        })
        .await
        .expect("hello");
    let mut stream = client
        .session(ReceiverStream::new(receiver))
        .await
        .expect("session")
        .into_inner();
    stream.message().await.expect("handshake");
    tokio::spawn(async move {
        for sequence in 1.. {
            let beat = AgentMessage {
                body: Some(AgentBody::Heartbeat(Heartbeat {
                    sequence,
                    running_assignments: Vec::new(),
                })),
            };
            if sender.send(beat).await.is_err() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(300)).await;
            while let Ok(Ok(Some(message))) =
                tokio::time::timeout(Duration::from_millis(1), stream.message()).await
            {
                if let Some(reply) = rehearsed(message)
                    && sender.send(reply).await.is_err()
                {
                    return;
                }
            }
        }
    })
}

/// The agent's answer to a rehearsal request: every revision ran, one E-class hazard found.
fn rehearsed(message: CoordinatorMessage) -> Option<AgentMessage> {
    let Some(CoordinatorBody::HostRequest(request)) = message.body else {
        return None;
    };
    let Some(Action::Rehearse(_)) = request.action else {
        return None;
    };
    let rehearsal = ShardRehearsal {
        shard_id: request.shard_id.clone(),
        agent_id: "db-host-1".to_owned(),
        passed: false,
        shard_version: "base".to_owned(),
        findings: vec![RehearsalFinding {
            hint: "E2".to_owned(),
            hazard: true,
            relation: "public.users".to_owned(),
            lock_mode: "AccessExclusiveLock".to_owned(),
            ..RehearsalFinding::default()
        }],
        ..ShardRehearsal::default()
    };
    Some(AgentMessage {
        body: Some(AgentBody::HostReply(HostReply {
            request_id: request.request_id,
            shard_id: request.shard_id,
            outcome: Some(Outcome::Rehearsed(rehearsal)),
            error: None,
        })),
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_critical_plan_starts_only_after_two_approvers_other_than_its_author() {
    let mut roles = Roles::default();
    roles.grant("alice", OperatorRole::Operator);
    for approver in ["alice", "bob", "carol"] {
        roles.grant(approver, OperatorRole::Approver);
    }
    let fleet =
        InProcessCoordinator::start(roles, &["db-host-1"], &["alice", "bob", "carol"]).await;
    let agent = production_agent(&fleet).await;
    let as_operator = |name: &'static str| {
        let fleet = &fleet;
        async move { FleetServiceClient::new(fleet.channel(&format!("operator-{name}")).await) }
    };
    let (mut alice, mut bob, mut carol) = (
        as_operator("alice").await,
        as_operator("bob").await,
        as_operator("carol").await,
    );

    let migrations = fixtures::migrations(&[(
        "1_email_required.sql",
        "ALTER TABLE users ALTER COLUMN email SET NOT NULL;",
    )]);
    let plan = alice
        .create_plan(CreatePlanRequest {
            migration_set: Some(fixtures::shipped(migrations.path())),
            ..CreatePlanRequest::default()
        })
        .await
        .expect("plan")
        .into_inner();
    let risk = plan.risk.clone().expect("assessed");
    assert_eq!(risk.level, i32::from(RiskLevel::Critical), "{risk:?}");
    assert_eq!(
        (risk.approvals_required, risk.author_may_approve),
        (2, false)
    );
    assert_eq!(risk.shard_id, "users-eu");
    assert!(
        risk.factors
            .iter()
            .any(|factor| factor.name == "environment" && factor.points > 0),
        "{risk:?}"
    );

    let approve = |comment: &str| ApprovePlanRequest {
        plan_id: plan.plan_id.clone(),
        comment: comment.to_owned(),
        capacity: String::new(),
    };
    let start = || PlanAction {
        plan_id: plan.plan_id.clone(),
        reason: String::new(),
    };
    let refused = alice
        .approve_plan(approve("my own"))
        .await
        .expect_err("the author");
    assert_eq!(refused.code(), Code::PermissionDenied, "{refused:?}");
    assert!(refused.message().contains("author cannot approve"));

    let unrehearsed = bob
        .approve_plan(approve("checked"))
        .await
        .expect_err("no rehearsal yet");
    assert_eq!(unrehearsed.code(), Code::FailedPrecondition);
    assert!(
        unrehearsed
            .message()
            .contains("1 of 1 have none: users-eu; run `fleetshift rehearse"),
        "{}",
        unrehearsed.message()
    );
    let rehearsal = alice
        .rehearse_plan(RehearsePlanRequest {
            plan_id: plan.plan_id.clone(),
            timeout: Some(prost_types::Duration {
                seconds: 30,
                nanos: 0,
            }),
            ..RehearsePlanRequest::default()
        })
        .await
        .expect("rehearsed")
        .into_inner();
    assert_eq!(rehearsal.rehearsals.len(), 1, "{rehearsal:?}");

    let once = bob.approve_plan(approve("checked")).await.expect("bob");
    assert_eq!(
        once.into_inner().state,
        i32::from(PlanState::AwaitingApproval)
    );
    let early = alice
        .start_rollout(start())
        .await
        .expect_err("one approval");
    assert_eq!(early.code(), Code::FailedPrecondition, "{early:?}");
    assert!(early.message().contains("1 of 2"), "{}", early.message());
    let twice = bob
        .approve_plan(approve("again"))
        .await
        .expect_err("the same approver twice");
    assert_eq!(twice.code(), Code::FailedPrecondition);

    let approved = carol
        .approve_plan(approve("checked too"))
        .await
        .expect("carol")
        .into_inner();
    assert_eq!(approved.state, i32::from(PlanState::Approved));
    let approvers: Vec<&str> = approved
        .approvals
        .iter()
        .map(|approval| approval.approver.as_str())
        .collect();
    assert_eq!(
        approvers,
        [
            "spiffe://fleet.example/operator/bob",
            "spiffe://fleet.example/operator/carol"
        ]
    );
    assert!(
        approved
            .approvals
            .iter()
            .all(|approval| approval.at.is_some())
    );
    alice.start_rollout(start()).await.expect("two approvals");
    agent.abort();
}

/// `fleetshift plan notice` over mTLS: a user's template with `{{ x or "default" }}` and a
/// loop over the affected tables, rendered from the plan the coordinator keeps.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_notice_renders_the_plan_through_a_users_template() {
    let mut roles = Roles::default();
    roles.grant("alice", OperatorRole::Operator);
    roles.grant("alice", OperatorRole::Viewer);
    let fleet = InProcessCoordinator::start(roles, &["db-host-1"], &["alice"]).await;
    let agent = production_agent(&fleet).await;
    let mut alice = FleetServiceClient::new(fleet.channel("operator-alice").await);
    let migrations = fixtures::migrations(&[(
        "1_orders.sql",
        "ALTER TABLE orders ADD COLUMN note text;\nCREATE INDEX CONCURRENTLY items_id ON items (id);",
    )]);
    let plan = alice
        .create_plan(CreatePlanRequest {
            migration_set: Some(fixtures::shipped(migrations.path())),
            selector: [("env".to_owned(), "production".to_owned())].into(),
            ..CreatePlanRequest::default()
        })
        .await
        .expect("plan")
        .into_inner();
    let template = fleet.home.path().join("notice.j2");
    std::fs::write(
        &template,
        "{{ maintenance_id }} {{ environment }} pool {{ pool_size }} {{ affected_services or \"services n/a\" }} {{ rollback_command }}\n\
         {% for table in affected_tables %}{{ table.name }}: {{ table.operation }} / {{ table.estimated_rows or \"rows unknown\" }}\n{% endfor %}",
    )
    .expect("template");
    let output = fleetshift_as(
        &format!("https://localhost:{}", fleet.address.port()),
        &fleet.pki(),
        "operator-alice",
        &[
            "plan",
            "notice",
            &plan.plan_id,
            "--template",
            template.to_str().expect("UTF-8 path"),
        ],
    )
    .await;
    assert!(
        output.status.success(),
        "{}",
        fleetshift_tests::binary::printed(&output)
    );
    assert_eq!(
        String::from_utf8_lossy(&output.stdout),
        format!(
            "{0} production pool 2 services n/a fleetshift rollback {0}\nitems: CREATE INDEX / rows unknown\norders: ALTER TABLE / rows unknown\n",
            plan.plan_id
        )
    );
    agent.abort();
}
