use std::time::{Duration, SystemTime};

use fleetshift_common::proto::v1::ApplicationSessions;

use super::*;

fn facts(sessions: &[(&str, u32)], observed: SystemTime) -> ShardFacts {
    ShardFacts {
        applications: sessions
            .iter()
            .map(|(name, count)| ApplicationSessions {
                application_name: (*name).to_owned(),
                sessions: *count,
            })
            .collect(),
        applications_read: true,
        observed_at: Some(observed.into()),
        ..ShardFacts::default()
    }
}

fn quiet_gate() -> PhaseGate {
    PhaseGate {
        quiet_application: "billing-v1*".to_owned(),
        quiet_for: prost_types::Duration::try_from(Duration::from_secs(60)).ok(),
        ..PhaseGate::default()
    }
}

#[test]
fn patterns_match_with_stars() {
    assert!(matches("billing-v1*", "billing-v1.4"));
    assert!(matches("billing-v1*", "billing-v1"));
    assert!(!matches("billing-v1*", "billing-v2.0"));
    assert!(matches("*-v1-*", "orders-v1-worker"));
    assert!(matches("psql", "psql"));
    assert!(!matches("psql", "psql2"));
    assert!(!matches("a*b*b", "ab"));
}

#[test]
fn a_quiet_gate_opens_after_its_period_with_every_shard_seen_quiet_after_it() {
    let start = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000);
    let shards = ["a", "b"];
    let busy = facts(&[("billing-v1.4", 2), ("billing-v2.0", 5)], start);
    let quiet = facts(&[("billing-v2.0", 5)], start);
    let seen = HashMap::from([("a", &busy), ("b", &quiet)]);
    let judged = judge(&quiet_gate(), &shards, &seen, start);
    assert!(!judged.open);
    assert_eq!(judged.gate.quiet_since, None);
    assert!(
        judged
            .gate
            .waiting_for
            .starts_with("sessions of billing-v1* to end (2 on a)"),
        "{}",
        judged.gate.waiting_for
    );

    // Quiet everywhere: the period starts now.
    let seen = HashMap::from([("a", &quiet), ("b", &quiet)]);
    let judged = judge(&judged.gate, &shards, &seen, start);
    assert!(!judged.open);
    assert_eq!(judged.gate.quiet_since, Some(start.into()));

    // The period has passed, but b's facts are from before its end: not yet.
    let later = start + Duration::from_secs(61);
    let fresh = facts(&[], later);
    let seen = HashMap::from([("a", &fresh), ("b", &quiet)]);
    let waiting = judge(&judged.gate, &shards, &seen, later);
    assert!(!waiting.open, "{waiting:?}");
    let seen = HashMap::from([("a", &fresh), ("b", &fresh)]);
    let opened = judge(&waiting.gate, &shards, &seen, later);
    assert!(opened.open);
    assert_eq!(opened.gate.opened_by, BY_CONDITION);
    assert!(
        opened.gate.reason.contains("billing-v1*"),
        "{:?}",
        opened.gate
    );
}

#[test]
fn shards_whose_sessions_are_unknown_hold_a_quiet_gate() {
    let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000);
    let quiet = facts(&[], now);
    let unread = ShardFacts {
        applications_read: false,
        ..quiet.clone()
    };
    let seen = HashMap::from([("a", &quiet), ("b", &unread)]);
    let judged = judge(&quiet_gate(), &["a", "b", "c"], &seen, now);
    assert!(!judged.open);
    assert!(
        judged
            .gate
            .waiting_for
            .contains("the sessions of b, c to be known"),
        "{}",
        judged.gate.waiting_for
    );
}

#[test]
fn an_approver_opens_a_gate_once_with_a_reason() {
    let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000);
    let mut plan = Plan {
        plan_id: "p1".to_owned(),
        phases: ["expand", "contract"]
            .iter()
            .enumerate()
            .map(|(index, name)| PlanPhase {
                name: (*name).to_owned(),
                last_version: index.to_string(),
                gate: (index > 0).then(PhaseGate::default),
                started_at: None,
            })
            .collect(),
        ..Plan::default()
    };
    let judged = judge(
        plan.phases[1].gate.as_ref().expect("gate"),
        &["a"],
        &HashMap::new(),
        now,
    );
    assert!(!judged.open);
    assert!(judged.gate.waiting_for.contains("fleetshift gate open"));
    assert!(matches!(
        open(&mut plan, "contract", "alice", " ", now),
        Err(RolloutError::BadRequest(_))
    ));
    assert!(matches!(
        open(&mut plan, "expand", "alice", "deployed", now),
        Err(RolloutError::NotNow(_))
    ));
    assert!(matches!(
        open(&mut plan, "cleanup", "alice", "deployed", now),
        Err(RolloutError::BadRequest(message)) if message.contains("expand, contract")
    ));
    open(&mut plan, "contract", "alice", "v2 deployed", now).expect("opened");
    open(&mut plan, "contract", "bob", "again", now).expect("opened already");
    let gate = plan.phases[1].gate.as_ref().expect("gate");
    assert!(gate.opened);
    assert_eq!(
        (gate.opened_by.as_str(), gate.reason.as_str()),
        ("alice", "v2 deployed")
    );
}
