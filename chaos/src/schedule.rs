//! A campaign's schedule, drawn from its seed alone: for each round, the forward target,
//! the faults (what, which part, when, for how long) and whether a rollback follows. The
//! same seed and options give the same schedule, so a failing seed replays its faults; the
//! fleet's own timing is not replayed (processes race as they will).

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use serde::Serialize;

use fleetshift_testkit::draw::Draw;

use crate::network::Cut;

/// The kinds of fault a campaign may inject (`--faults`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum FaultClass {
    /// SIGKILL of an agent or a coordinator replica (leader or follower), restarted later.
    Kill,
    /// SIGSTOP of an agent or a coordinator replica, SIGCONT later.
    Stop,
    /// A fast or immediate restart of a PostgreSQL cluster.
    PgRestart,
    /// SIGKILL or SIGSTOP of an etcd member.
    Etcd,
    /// An operator pausing and resuming the plan, or cancelling it.
    Operator,
    /// A network partition, one way or both: between an agent and the coordinators, or
    /// between a coordinator replica and the etcd members.
    Partition,
    /// An agent's backup disk filled to the last byte, freed later.
    DiskFull,
    /// A coordinator replica's wall clock stepped forward or back, stepped back later.
    Clock,
}

impl FaultClass {
    pub const ALL: [Self; 8] = [
        Self::Kill,
        Self::Stop,
        Self::PgRestart,
        Self::Etcd,
        Self::Operator,
        Self::Partition,
        Self::DiskFull,
        Self::Clock,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Self::Kill => "kill",
            Self::Stop => "stop",
            Self::PgRestart => "pg-restart",
            Self::Etcd => "etcd",
            Self::Operator => "operator",
            Self::Partition => "partition",
            Self::DiskFull => "disk-full",
            Self::Clock => "clock",
        }
    }
}

impl fmt::Display for FaultClass {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str(self.name())
    }
}

/// A `--faults` entry that names no fault class.
#[derive(Debug, thiserror::Error)]
#[error(
    "unknown fault class {given:?}: the classes are kill, stop, pg-restart, etcd, operator, partition, disk-full and clock"
)]
pub struct UnknownFaultClass {
    given: String,
}

impl FromStr for FaultClass {
    type Err = UnknownFaultClass;

    fn from_str(given: &str) -> Result<Self, Self::Err> {
        let given = given.trim();
        Self::ALL
            .into_iter()
            .find(|class| class.name() == given)
            .ok_or_else(|| UnknownFaultClass {
                given: given.to_owned(),
            })
    }
}

/// Which coordinator replica a fault hits, chosen when it is injected.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Replica {
    Leader,
    Follower,
}

/// One fault, with the part it hits.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "fault", rename_all = "kebab-case")]
pub enum Fault {
    KillAgent {
        agent: usize,
        down: Duration,
    },
    StopAgent {
        agent: usize,
        frozen: Duration,
    },
    KillCoordinator {
        replica: Replica,
        down: Duration,
    },
    StopCoordinator {
        replica: Replica,
        frozen: Duration,
    },
    KillEtcd {
        member: usize,
        down: Duration,
    },
    StopEtcd {
        member: usize,
        frozen: Duration,
    },
    RestartPostgres {
        cluster: usize,
        immediate: bool,
    },
    PauseAndResume {
        paused: Duration,
    },
    Cancel,
    Partition {
        agent: usize,
        cut: Cut,
        held: Duration,
    },
    IsolateReplica {
        replica: Replica,
        cut: Cut,
        held: Duration,
    },
    FillBackupDisk {
        agent: usize,
        full: Duration,
    },
    JumpClock {
        replica: Replica,
        /// Seconds the wall clock steps from real time (back when negative).
        by_seconds: i64,
        held: Duration,
    },
}

impl Fault {
    pub fn class(&self) -> FaultClass {
        match self {
            Self::KillAgent { .. } | Self::KillCoordinator { .. } => FaultClass::Kill,
            Self::StopAgent { .. } | Self::StopCoordinator { .. } => FaultClass::Stop,
            Self::KillEtcd { .. } | Self::StopEtcd { .. } => FaultClass::Etcd,
            Self::RestartPostgres { .. } => FaultClass::PgRestart,
            Self::PauseAndResume { .. } | Self::Cancel => FaultClass::Operator,
            Self::Partition { .. } | Self::IsolateReplica { .. } => FaultClass::Partition,
            Self::FillBackupDisk { .. } => FaultClass::DiskFull,
            Self::JumpClock { .. } => FaultClass::Clock,
        }
    }

    /// How long the fault lasts before it heals (0 for instant ones).
    pub fn lasts(&self) -> Duration {
        match self {
            Self::KillAgent { down, .. }
            | Self::KillCoordinator { down, .. }
            | Self::KillEtcd { down, .. } => *down,
            Self::StopAgent { frozen, .. }
            | Self::StopCoordinator { frozen, .. }
            | Self::StopEtcd { frozen, .. } => *frozen,
            Self::PauseAndResume { paused } => *paused,
            Self::Partition { held, .. }
            | Self::IsolateReplica { held, .. }
            | Self::JumpClock { held, .. } => *held,
            Self::FillBackupDisk { full, .. } => *full,
            Self::RestartPostgres { .. } | Self::Cancel => Duration::ZERO,
        }
    }
}

impl fmt::Display for Fault {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::KillAgent { agent, down } => {
                write!(formatter, "SIGKILL agent {agent}, restarted after {down:?}")
            }
            Self::StopAgent { agent, frozen } => {
                write!(formatter, "SIGSTOP agent {agent} for {frozen:?}")
            }
            Self::KillCoordinator { replica, down } => {
                write!(
                    formatter,
                    "SIGKILL the {replica:?} coordinator, restarted after {down:?}"
                )
            }
            Self::StopCoordinator { replica, frozen } => {
                write!(
                    formatter,
                    "SIGSTOP the {replica:?} coordinator for {frozen:?}"
                )
            }
            Self::KillEtcd { member, down } => {
                write!(
                    formatter,
                    "SIGKILL etcd member {member}, restarted after {down:?}"
                )
            }
            Self::StopEtcd { member, frozen } => {
                write!(formatter, "SIGSTOP etcd member {member} for {frozen:?}")
            }
            Self::RestartPostgres { cluster, immediate } => write!(
                formatter,
                "{} restart of PostgreSQL cluster {cluster}",
                if *immediate { "immediate" } else { "fast" }
            ),
            Self::PauseAndResume { paused } => {
                write!(
                    formatter,
                    "operator pauses the plan, resumes after {paused:?}"
                )
            }
            Self::Cancel => formatter.write_str("operator cancels the plan"),
            Self::Partition { agent, cut, held } => write!(
                formatter,
                "partition agent {agent} from the coordinators ({}) for {held:?}",
                cut.describe("the agent")
            ),
            Self::IsolateReplica { replica, cut, held } => write!(
                formatter,
                "partition the {replica:?} coordinator from etcd ({}) for {held:?}",
                cut.describe("the replica")
            ),
            Self::FillBackupDisk { agent, full } => {
                write!(formatter, "fill agent {agent}'s backup disk for {full:?}")
            }
            Self::JumpClock {
                replica,
                by_seconds,
                held,
            } => write!(
                formatter,
                "step the {replica:?} coordinator's wall clock {by_seconds:+} s for {held:?}"
            ),
        }
    }
}

/// A fault and when it strikes, counted from the round's plan start.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Timed {
    pub at: Duration,
    #[serde(flatten)]
    pub fault: Fault,
}

/// One round: a forward plan to `target` under `faults`, then perhaps a rollback.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Round {
    pub index: usize,
    /// The forward plan's target version.
    pub target: u32,
    pub faults: Vec<Timed>,
    /// After the forward plan ends, a rollback plan of it back to this version (below
    /// `target`).
    pub rollback_to: Option<u32>,
}

/// What the schedule draws against: the fleet's shape and the allowed classes.
#[derive(Debug, Clone)]
pub struct Shape {
    pub agents: usize,
    pub clusters: usize,
    pub etcd_members: usize,
    /// The migration set's last version (versions run 1..=last).
    pub last_version: u32,
    pub classes: Vec<FaultClass>,
    /// At most this many faults per round.
    pub faults_per_round: usize,
}

/// The rounds of `seed` for `shape`.
pub fn draw(seed: u64, rounds: usize, shape: &Shape) -> Vec<Round> {
    let mut draw = Draw::new(seed);
    (0..rounds)
        .map(|index| {
            let target = u32::try_from(draw.between(2, u64::from(shape.last_version)))
                .unwrap_or(shape.last_version);
            let count = if shape.classes.is_empty() {
                0
            } else {
                draw.index(shape.faults_per_round) + 1
            };
            let mut at = Duration::ZERO;
            let mut faults = Vec::new();
            for _ in 0..count {
                at += millis(&mut draw, 200, 2_500);
                let class = shape.classes[draw.index(shape.classes.len())];
                faults.push(Timed {
                    at,
                    fault: fault(&mut draw, class, shape),
                });
            }
            // Back below the forward target (a rollback only goes back).
            let rollback_to = draw
                .chance(60)
                .then(|| u32::try_from(draw.between(1, u64::from(target) - 1)).unwrap_or(1));
            Round {
                index,
                target,
                faults,
                rollback_to,
            }
        })
        .collect()
}

/// A duration of `low..=high` milliseconds.
fn millis(draw: &mut Draw, low: u64, high: u64) -> Duration {
    Duration::from_millis(draw.between(low, high))
}

fn fault(draw: &mut Draw, class: FaultClass, shape: &Shape) -> Fault {
    let replica = |draw: &mut Draw| {
        if draw.chance(50) {
            Replica::Leader
        } else {
            Replica::Follower
        }
    };
    match class {
        FaultClass::Kill => {
            if draw.chance(50) {
                Fault::KillAgent {
                    agent: draw.index(shape.agents),
                    down: millis(draw, 100, 3_000),
                }
            } else {
                Fault::KillCoordinator {
                    replica: replica(draw),
                    down: millis(draw, 100, 3_000),
                }
            }
        }
        FaultClass::Stop => {
            // Up to well past an agent's lease, so some freezes outlive their claims.
            if draw.chance(50) {
                Fault::StopAgent {
                    agent: draw.index(shape.agents),
                    frozen: millis(draw, 200, 12_000),
                }
            } else {
                Fault::StopCoordinator {
                    replica: replica(draw),
                    frozen: millis(draw, 200, 8_000),
                }
            }
        }
        FaultClass::PgRestart => Fault::RestartPostgres {
            cluster: draw.index(shape.clusters),
            immediate: draw.chance(50),
        },
        FaultClass::Etcd => {
            let member = draw.index(shape.etcd_members);
            if draw.chance(50) {
                Fault::KillEtcd {
                    member,
                    down: millis(draw, 200, 4_000),
                }
            } else {
                Fault::StopEtcd {
                    member,
                    frozen: millis(draw, 200, 6_000),
                }
            }
        }
        // Up to well past an agent's lease (and a leader's), like a freeze.
        FaultClass::Partition => {
            let cut = Cut::ALL[draw.index(Cut::ALL.len())];
            let held = millis(draw, 500, 12_000);
            if draw.chance(50) {
                Fault::Partition {
                    agent: draw.index(shape.agents),
                    cut,
                    held,
                }
            } else {
                Fault::IsolateReplica {
                    replica: replica(draw),
                    cut,
                    held,
                }
            }
        }
        FaultClass::Clock => {
            let seconds = i64::try_from(draw.between(30, 600)).unwrap_or(600);
            Fault::JumpClock {
                replica: replica(draw),
                by_seconds: if draw.chance(50) { seconds } else { -seconds },
                held: millis(draw, 500, 8_000),
            }
        }
        FaultClass::DiskFull => Fault::FillBackupDisk {
            agent: draw.index(shape.agents),
            full: millis(draw, 500, 8_000),
        },
        FaultClass::Operator => {
            if draw.chance(70) {
                Fault::PauseAndResume {
                    paused: millis(draw, 200, 3_000),
                }
            } else {
                Fault::Cancel
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shape(classes: &[FaultClass]) -> Shape {
        Shape {
            agents: 2,
            clusters: 2,
            etcd_members: 3,
            last_version: 8,
            classes: classes.to_vec(),
            faults_per_round: 3,
        }
    }

    #[test]
    fn a_seed_replays_its_schedule_and_another_seed_differs() {
        let shape = shape(&FaultClass::ALL);
        assert_eq!(draw(7, 20, &shape), draw(7, 20, &shape));
        assert_ne!(draw(7, 20, &shape), draw(8, 20, &shape));
    }

    #[test]
    fn only_the_classes_asked_for_are_drawn_and_each_within_the_fleet() {
        let shape = shape(&[FaultClass::PgRestart, FaultClass::Etcd]);
        let rounds = draw(11, 200, &shape);
        let faults: Vec<&Fault> = rounds
            .iter()
            .flat_map(|round| round.faults.iter().map(|timed| &timed.fault))
            .collect();
        assert!(
            faults
                .iter()
                .all(|fault| matches!(fault.class(), FaultClass::PgRestart | FaultClass::Etcd))
        );
        for class in [FaultClass::PgRestart, FaultClass::Etcd] {
            assert!(faults.iter().any(|fault| fault.class() == class), "{class}");
        }
        assert!(faults.iter().all(|fault| match fault {
            Fault::RestartPostgres { cluster, .. } => *cluster < 2,
            Fault::KillEtcd { member, .. } | Fault::StopEtcd { member, .. } => *member < 3,
            _ => false,
        }));
        for round in &rounds {
            assert!((2..=8).contains(&round.target), "{round:?}");
            assert!((1..=3).contains(&round.faults.len()), "{round:?}");
            assert!(
                round.faults.windows(2).all(|pair| pair[0].at < pair[1].at),
                "faults in time order: {round:?}"
            );
            assert!(
                round
                    .rollback_to
                    .is_none_or(|version| (1..round.target).contains(&version)),
                "{round:?}"
            );
        }
    }

    #[test]
    fn fault_classes_parse_by_name_and_an_unknown_one_is_named() {
        for class in FaultClass::ALL {
            assert_eq!(class.name().parse::<FaultClass>().ok(), Some(class));
        }
        let unknown = "kil".parse::<FaultClass>().expect_err("unknown");
        assert!(unknown.to_string().contains("\"kil\""), "{unknown}");
    }
}
