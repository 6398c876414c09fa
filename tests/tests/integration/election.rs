//! Leader election on both stores: one leader at a time; a leader whose lease is lost steps
//! down (its token is cancelled) and the other replica takes over with a greater epoch; the
//! deposed leader's writes are refused; a leader shutting down hands over at once.

use std::sync::Arc;
use std::time::Duration;

use fleetshift_common::lease::SessionIntervals;
use fleetshift_coordinator::election::{self, Standing};
use fleetshift_coordinator::store::{EtcdStore, MemoryStore, Store, StoreError, Write, keys};
use fleetshift_testkit::etcd::EtcdServer;
use tokio_util::sync::CancellationToken;

fn leader_of(
    standing: &Standing,
) -> Option<(fleetshift_coordinator::store::Epoch, i64, CancellationToken)> {
    match standing {
        Standing::Leader {
            epoch,
            lease,
            stepped_down,
        } => Some((*epoch, *lease, stepped_down.clone())),
        Standing::Follower { .. } => None,
    }
}

struct Replica {
    standing: tokio::sync::watch::Receiver<Standing>,
    stop: CancellationToken,
    task: tokio::task::JoinHandle<()>,
}

fn replica<S: Store + 'static>(store: &Arc<S>, name: &str) -> Replica {
    let stop = CancellationToken::new();
    // Heartbeat 2 s, TTL 6 s: a lease left to expire needs at least 4 s after its holder
    // stops, a revoked one at most one 2 s tick; the handover bound below tells them apart.
    let intervals = SessionIntervals::from_heartbeat(Duration::from_secs(2));
    let (standing, task) = election::start(Arc::clone(store), name, intervals, stop.clone());
    Replica {
        standing,
        stop,
        task,
    }
}

async fn failover<S: Store + 'static>(store: Arc<S>) {
    let mut replicas = [replica(&store, "replica-1"), replica(&store, "replica-2")];

    // One leader; never two.
    let leading = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            if let Some(index) = replicas
                .iter()
                .position(|replica| replica.standing.borrow().is_leader())
            {
                return index;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await
    .expect("a leader within 10 s");
    let other = 1 - leading;
    assert!(
        !replicas[other].standing.borrow().is_leader(),
        "never two leaders"
    );
    let (first_epoch, first_lease, first_token) =
        leader_of(&replicas[leading].standing.borrow()).expect("leader");
    store
        .commit(
            Some(first_epoch),
            &[],
            &[Write::put(keys::plan("1"), b"first".to_vec())],
        )
        .await
        .expect("the leader writes");

    // The leader's lease is lost (as etcd expires it in a partition): it steps down at once,
    // the other replica leads with a greater epoch, and the old epoch's writes are refused.
    store
        .revoke(first_lease)
        .await
        .expect("revoke the leader's lease");
    tokio::time::timeout(Duration::from_secs(10), first_token.cancelled())
        .await
        .expect("the deposed leader's token is cancelled");
    let second =
        election::wait_for_leadership(&mut replicas[other].standing, Duration::from_secs(10))
            .await
            .expect("the other replica takes over");
    let (second_epoch, _, _) = leader_of(&second).expect("leader");
    assert!(second_epoch > first_epoch);
    assert_eq!(
        store
            .commit(
                Some(first_epoch),
                &[],
                &[Write::put(keys::plan("1"), b"stale".to_vec())]
            )
            .await,
        Err(StoreError::NotLeader(first_epoch.0))
    );
    store
        .commit(
            Some(second_epoch),
            &[],
            &[Write::put(keys::plan("1"), b"second".to_vec())],
        )
        .await
        .expect("the new leader writes");

    // The deposed replica carries on as a follower; when the leader shuts down it hands over
    // at once (its lease is revoked, not left to expire).
    replicas[other].stop.cancel();
    (&mut replicas[other].task).await.expect("leader task");
    let third =
        election::wait_for_leadership(&mut replicas[leading].standing, Duration::from_secs(3))
            .await
            .expect("handover faster than an expiring lease could explain");
    assert!(leader_of(&third).expect("leader").0 > second_epoch);
    replicas[leading].stop.cancel();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn election_fails_over_on_etcd() {
    let etcd = EtcdServer::start().expect("etcd");
    let store = EtcdStore::connect(std::slice::from_ref(&etcd.endpoint))
        .await
        .expect("store");
    failover(Arc::new(store)).await;
}

/// The same on the in-memory store, whose leases expire on tokio's clock: on paused time the
/// timing bounds above are exact, and the test waits out no real second.
#[tokio::test(start_paused = true)]
async fn election_fails_over_in_memory() {
    failover(Arc::new(MemoryStore::new())).await;
}
