//! Webhooks from the leader's view of the store: a plan's life (created, approved, started, a
//! shard failed, another rolled back by its agent, its wave finished, halted) reaches a real HTTP endpoint on loopback as signed
//! JSON, in order, while a dead hook listed first only loses its own deliveries. A shard whose
//! schema fingerprint changes at the same version is reported as `shard.schema_changed`. A
//! running plan that asks for status updates sends `rollout.status` rendered by its template.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use fleetshift_common::proto::v1::{
    Approval, Hello, Plan, PlanState, RollbackRecord, ShardFacts, ShardState, ShardTask,
    StatusUpdates, Wave,
};
use fleetshift_coordinator::rollout::{records, transitions, waves};
use fleetshift_coordinator::store::{MemoryStore, Store, Write, keys};
use fleetshift_coordinator::webhooks::{self, Webhook};
use prost::Message;
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

/// A request the endpoint received: its headers (lower-cased names) and body.
pub(crate) type Received = (HashMap<String, String>, Vec<u8>);

/// An HTTP endpoint on loopback that answers 200 to every request and hands it over.
pub(crate) async fn endpoint() -> (String, mpsc::UnboundedReceiver<Received>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let url = format!(
        "http://{}/hooks/fleetshift",
        listener.local_addr().expect("address")
    );
    let (sender, received) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            let mut data = Vec::new();
            let mut buffer = [0_u8; 4096];
            let (head_end, length) = loop {
                let read = stream.read(&mut buffer).await.expect("read");
                assert!(read > 0, "the request ended early");
                data.extend_from_slice(&buffer[..read]);
                if let Some(end) = data.windows(4).position(|window| window == b"\r\n\r\n") {
                    let head = String::from_utf8_lossy(&data[..end]).to_lowercase();
                    let length: usize = head
                        .lines()
                        .find_map(|line| line.strip_prefix("content-length:"))
                        .and_then(|value| value.trim().parse().ok())
                        .expect("content-length");
                    break (end + 4, length);
                }
            };
            while data.len() < head_end + length {
                let read = stream.read(&mut buffer).await.expect("read body");
                data.extend_from_slice(&buffer[..read]);
            }
            let head = String::from_utf8_lossy(&data[..head_end]).to_string();
            let headers = head
                .lines()
                .skip(1)
                .filter_map(|line| line.split_once(':'))
                .map(|(name, value)| (name.trim().to_lowercase(), value.trim().to_owned()))
                .collect();
            let body = data[head_end..head_end + length].to_vec();
            stream
                .write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
                .await
                .expect("answer");
            let _ = sender.send((headers, body));
        }
    });
    (url, received)
}

fn hook(url: &str, secret: &str) -> Webhook {
    Webhook {
        url: url.to_owned(),
        secret: secret.to_owned(),
        secret_file: None,
        events: Vec::new(),
    }
}

fn task(shard: &str, state: ShardState) -> ShardTask {
    ShardTask {
        shard_id: shard.to_owned(),
        state: state.into(),
        wave: 0,
        ..ShardTask::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_plans_life_reaches_the_endpoint_signed_and_in_order_past_a_dead_hook() {
    let store = Arc::new(MemoryStore::new());
    let (url, mut received) = endpoint().await;
    let dead = format!(
        "http://127.0.0.1:{}/gone",
        fleetshift_testkit::ports::free_port().expect("a free port")
    );
    let hooks: Arc<[Webhook]> = vec![hook(&dead, "other"), hook(&url, "s3cret")].into();
    let stop = CancellationToken::new();
    let notifying = tokio::spawn(webhooks::notify(Arc::clone(&store), hooks, stop.clone()));
    // The follower lists what exists first; give it that moment.
    tokio::time::sleep(Duration::from_millis(300)).await;

    let plan = Plan {
        plan_id: "p-hooks".to_owned(),
        author: "spiffe://fleet.example/operator/alice".to_owned(),
        state: PlanState::AwaitingApproval.into(),
        waves: vec![Wave {
            index: 0,
            shards: vec![
                task("a", ShardState::Pending),
                task("b", ShardState::Pending),
                task("c", ShardState::Pending),
            ],
        }],
        ..Plan::default()
    };
    records::create_plan(store.as_ref(), &plan)
        .await
        .expect("plan");
    records::update_plan(store.as_ref(), "p-hooks", None, |plan| {
        let approval = Approval {
            approver: "spiffe://fleet.example/operator/bob".to_owned(),
            comment: "ok".to_owned(),
            ..Approval::default()
        };
        transitions::approve(plan, approval, &Default::default())
    })
    .await
    .expect("approve");
    records::update_plan(store.as_ref(), "p-hooks", None, transitions::start)
        .await
        .expect("start");
    let rolled_back = ShardTask {
        rollback: Some(RollbackRecord {
            reason: "performance degraded: baseline by_account median 9.10 ms is 80.2x".to_owned(),
            reverted_to: "1".to_owned(),
            revisions: vec!["2_drop_account_index".to_owned()],
            recovered: true,
        }),
        ..task("c", ShardState::RolledBack)
    };
    for (shard, ended) in [
        ("a", task("a", ShardState::Succeeded)),
        ("b", task("b", ShardState::Failed)),
        ("c", rolled_back),
    ] {
        store
            .commit(
                None,
                &[],
                &[Write::put(
                    keys::task("p-hooks", shard),
                    ended.encode_to_vec(),
                )],
            )
            .await
            .expect("task");
    }
    records::update_plan(store.as_ref(), "p-hooks", None, |plan| {
        plan.state = PlanState::Halted.into();
        plan.state_reason = "1 shard(s) failed".to_owned();
        Ok(())
    })
    .await
    .expect("halt");

    let mut events = Vec::new();
    while events.len() < 7 {
        let (headers, body) = tokio::time::timeout(Duration::from_secs(30), received.recv())
            .await
            .expect("every event arrives past the dead hook")
            .expect("endpoint");
        assert_eq!(
            headers.get("x-fleetshift-signature"),
            Some(&webhooks::sign("s3cret", &body)),
            "signed with the hook's own secret"
        );
        let event: Value = serde_json::from_slice(&body).expect("JSON body");
        assert_eq!(
            headers.get("x-fleetshift-event"),
            event["event"].as_str().map(str::to_owned).as_ref()
        );
        assert_eq!(event["plan_id"], "p-hooks");
        events.push(event);
    }
    let names: Vec<&str> = events
        .iter()
        .filter_map(|event| event["event"].as_str())
        .collect();
    assert_eq!(
        names,
        [
            "plan.created",
            "plan.approved",
            "rollout.started",
            "shard.failed",
            "shard.rolled_back",
            "wave.finished",
            "rollout.halted"
        ]
    );
    assert_eq!(
        events[1]["detail"]["approver"],
        "spiffe://fleet.example/operator/bob"
    );
    assert_eq!(events[3]["detail"]["shard"], "b");
    assert_eq!(events[4]["detail"]["shard"], "c");
    assert_eq!(events[4]["detail"]["reverted_to"], "1");
    assert_eq!(events[4]["detail"]["revisions"][0], "2_drop_account_index");
    assert_eq!(events[4]["detail"]["recovered"], true);

    // A shard's schema changes while its version stays: a change no plan made.
    let lease = store
        .grant_lease(Duration::from_secs(60))
        .await
        .expect("lease");
    for fingerprint in ["a".repeat(64), "b".repeat(64)] {
        let hello = Hello {
            agent_id: "agent-1".to_owned(),
            shards: vec![ShardFacts {
                shard_id: "users-7".to_owned(),
                current_version: "3".to_owned(),
                schema_fingerprint: fingerprint,
                ..ShardFacts::default()
            }],
            ..Hello::default()
        };
        store
            .announce_agent("agent-1", &hello.encode_to_vec(), lease)
            .await
            .expect("announced");
    }
    let (_, body) = tokio::time::timeout(Duration::from_secs(30), received.recv())
        .await
        .expect("the schema change arrives")
        .expect("endpoint");
    let changed: Value = serde_json::from_slice(&body).expect("JSON body");
    assert_eq!(changed["event"], "shard.schema_changed", "{changed}");
    assert_eq!(changed["detail"]["shard"], "users-7");
    assert_eq!(changed["detail"]["version"], "3");
    assert_eq!(changed["detail"]["after"], "b".repeat(64));
    stop.cancel();
    tokio::time::timeout(Duration::from_secs(30), notifying)
        .await
        .expect("the notifier ends when leadership does")
        .expect("notifier");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_running_plan_that_asks_for_updates_sends_them_rendered_with_its_template() {
    let store = Arc::new(MemoryStore::new());
    let plan = Plan {
        plan_id: "p-updates".to_owned(),
        state: PlanState::Running.into(),
        updates: Some(StatusUpdates {
            every: Some(prost_types::Duration {
                seconds: 1,
                nanos: 0,
            }),
            template: "{{ plan }}: {{ shards.succeeded }}/{{ total }} done, {{ running }} running"
                .to_owned(),
        }),
        waves: vec![Wave {
            index: 0,
            shards: vec![
                task("a", ShardState::Succeeded),
                task("b", ShardState::Running),
                task("c", ShardState::Pending),
            ],
        }],
        ..Plan::default()
    };
    // Stored before the follower starts: it finds the running plan when it lists.
    records::create_plan(store.as_ref(), &plan)
        .await
        .expect("plan");
    for task in waves::planned_tasks(&plan) {
        store
            .commit(
                None,
                &[],
                &[Write::put(
                    keys::task("p-updates", &task.shard_id),
                    task.encode_to_vec(),
                )],
            )
            .await
            .expect("task");
    }
    let (url, mut received) = endpoint().await;
    let hooks: Arc<[Webhook]> = vec![Webhook {
        events: vec!["rollout.status".to_owned()],
        ..hook(&url, "s3cret")
    }]
    .into();
    let stop = CancellationToken::new();
    let notifying = tokio::spawn(webhooks::notify(Arc::clone(&store), hooks, stop.clone()));
    let (headers, body) = tokio::time::timeout(Duration::from_secs(30), received.recv())
        .await
        .expect("an update arrives")
        .expect("endpoint");
    assert_eq!(headers["x-fleetshift-event"], "rollout.status");
    let update: Value = serde_json::from_slice(&body).expect("JSON body");
    assert_eq!(update["plan_id"], "p-updates", "{update}");
    assert_eq!(update["detail"]["total"], 3, "{update}");
    assert_eq!(
        update["detail"]["text"], "p-updates: 1/3 done, 1 running",
        "{update}"
    );
    stop.cancel();
    tokio::time::timeout(Duration::from_secs(30), notifying)
        .await
        .expect("the notifier ends when leadership does")
        .expect("notifier");
}
