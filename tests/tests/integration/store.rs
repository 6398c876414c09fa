//! One conformance suite for both stores: real etcd (Debian's etcd-server) and the in-memory
//! embedded default. Claims are exclusive and fence with increasing tokens, leases keep and
//! release them, and a deposed leader's writes are refused.

use std::time::Duration;

use fleetshift_coordinator::store::{
    Condition, EtcdStore, MemoryStore, Store, StoreError, Write, keys,
};
use fleetshift_testkit::etcd::EtcdServer;
use fleetshift_tests::wait::wait_until;

mod each;

const TTL: Duration = Duration::from_secs(2);

async fn claims_are_exclusive_and_tokens_increase<S: Store>(store: &S) {
    let lease_a = store.grant_lease(TTL * 5).await.expect("lease a");
    let lease_b = store.grant_lease(TTL * 5).await.expect("lease b");
    let first = store
        .claim("shard-x", "agent-a", lease_a)
        .await
        .expect("claim");
    match store.claim("shard-x", "agent-b", lease_b).await {
        Err(StoreError::Claimed { holder, token, .. }) => {
            assert_eq!(holder, "agent-a");
            assert_eq!(token, first.token);
        }
        other => panic!("a held shard must not be claimed again: {other:?}"),
    }
    let other_shard = store
        .claim("shard-y", "agent-b", lease_b)
        .await
        .expect("another shard");
    assert!(
        other_shard.token > first.token,
        "tokens increase across shards"
    );
    assert_eq!(
        store.claim_of("shard-x").await.expect("read"),
        Some(first.clone())
    );
    assert!(store.release(&first).await.expect("release"));
    let second = store
        .claim("shard-x", "agent-b", lease_b)
        .await
        .expect("reclaim");
    assert!(
        second.token > other_shard.token,
        "a new claim fences out every older one"
    );
    assert!(
        !store.release(&first).await.expect("stale release"),
        "a stale holder cannot release a newer claim"
    );
    assert_eq!(store.claim_of("shard-x").await.expect("read"), Some(second));
    store.revoke(lease_a).await.expect("revoke a");
    store.revoke(lease_b).await.expect("revoke b");
}

async fn leases_keep_and_expiry_releases<S: Store>(store: &S) {
    let lease = store.grant_lease(TTL).await.expect("lease");
    let claim = store
        .claim("shard-kept", "agent-a", lease)
        .await
        .expect("claim");
    for _ in 0..6 {
        tokio::time::sleep(Duration::from_millis(500)).await;
        store.keep_alive(lease).await.expect("keep alive");
    }
    assert_eq!(
        store.claim_of("shard-kept").await.expect("read"),
        Some(claim),
        "kept alive past its TTL"
    );
    let released = wait_until(Duration::from_secs(15), || async {
        store.claim_of("shard-kept").await.expect("read").is_none()
    })
    .await;
    assert!(released, "a lapsed lease must release its claims");
    assert_eq!(
        store.keep_alive(lease).await,
        Err(StoreError::LeaseExpired(lease))
    );
    assert!(matches!(
        store.claim("shard-kept", "agent-a", lease).await,
        Err(StoreError::LeaseExpired(_))
    ));
}

async fn revoke_releases_at_once<S: Store>(store: &S) {
    let lease = store.grant_lease(TTL * 5).await.expect("lease");
    store
        .claim("shard-revoked", "agent-a", lease)
        .await
        .expect("claim");
    store.revoke(lease).await.expect("revoke");
    assert_eq!(store.claim_of("shard-revoked").await.expect("read"), None);
    store.revoke(lease).await.expect("revoking twice is fine");
}

async fn deposed_leader_writes_are_refused<S: Store>(store: &S) {
    let lease_one = store.grant_lease(TTL * 5).await.expect("lease one");
    let lease_two = store.grant_lease(TTL * 5).await.expect("lease two");
    let first = store
        .campaign("replica-1", lease_one)
        .await
        .expect("campaign")
        .expect("leads");
    assert_eq!(
        store
            .campaign("replica-2", lease_two)
            .await
            .expect("campaign"),
        None,
        "one leader at a time"
    );
    assert_eq!(
        store.campaign("replica-1", lease_one).await.expect("again"),
        Some(first.clone())
    );
    store
        .commit(
            Some(first.epoch),
            &[],
            &[Write::put(keys::plan("1"), b"v1".to_vec())],
        )
        .await
        .expect("leader writes");
    store
        .revoke(lease_one)
        .await
        .expect("replica-1 loses its lease");
    let second = store
        .campaign("replica-2", lease_two)
        .await
        .expect("campaign")
        .expect("takes over");
    assert!(second.epoch > first.epoch, "epochs increase");
    assert_eq!(
        store
            .commit(
                Some(first.epoch),
                &[],
                &[Write::put(keys::plan("1"), b"stale".to_vec())]
            )
            .await,
        Err(StoreError::NotLeader(first.epoch.0)),
        "the deposed leader's late write is refused"
    );
    store
        .commit(
            Some(second.epoch),
            &[],
            &[Write::put(keys::plan("1"), b"v2".to_vec())],
        )
        .await
        .expect("new leader writes");
    assert_eq!(
        store
            .read(&keys::plan("1"))
            .await
            .expect("read")
            .map(|entry| entry.value),
        Some(b"v2".to_vec())
    );
    assert_eq!(store.leader().await.expect("leader"), Some(second));
    store.revoke(lease_two).await.expect("revoke");
}

async fn announced_agents_live_as_long_as_their_session<S: Store>(store: &S) {
    let lease = store.grant_lease(TTL * 5).await.expect("lease");
    store
        .announce_agent("db-host-1", b"facts", lease)
        .await
        .expect("announce");
    assert_eq!(
        store.agents().await.expect("agents"),
        [("db-host-1".to_owned(), b"facts".to_vec())]
    );
    store.revoke(lease).await.expect("revoke");
    assert!(
        store.agents().await.expect("agents").is_empty(),
        "gone with the session's lease"
    );
    assert!(matches!(
        store.announce_agent("db-host-1", b"facts", lease).await,
        Err(StoreError::LeaseExpired(_))
    ));
}

async fn commits_apply_all_or_nothing<S: Store>(store: &S) {
    let key = keys::plan("cas");
    let task = keys::task("cas", "shard-1");
    let created = store
        .commit(
            None,
            &[Condition::Absent(key.clone())],
            &[
                Write::put(key.clone(), b"v1".to_vec()),
                Write::put(task.clone(), b"t1".to_vec()),
            ],
        )
        .await
        .expect("commit")
        .expect("the key was absent");
    let entry = store.read(&key).await.expect("read").expect("written");
    assert_eq!(
        (entry.create_revision, entry.mod_revision),
        (created, created)
    );
    assert_eq!(
        store
            .read(&task)
            .await
            .expect("read")
            .map(|entry| entry.mod_revision),
        Some(created),
        "both writes in one revision"
    );
    assert_eq!(
        store
            .commit(
                None,
                &[Condition::Absent(key.clone())],
                &[Write::Delete(task.clone())]
            )
            .await
            .expect("commit"),
        None,
        "a failed condition writes nothing"
    );
    assert!(store.read(&task).await.expect("read").is_some());
    let updated = store
        .commit(
            None,
            &[Condition::ModifiedAt(key.clone(), created)],
            &[
                Write::put(key.clone(), b"v2".to_vec()),
                Write::Delete(task.clone()),
            ],
        )
        .await
        .expect("commit")
        .expect("unchanged since read");
    assert_eq!(
        store
            .commit(
                None,
                &[Condition::ModifiedAt(key.clone(), created)],
                &[Write::put(key.clone(), b"lost update".to_vec())]
            )
            .await
            .expect("commit"),
        None,
        "a write based on a stale read is refused"
    );
    let entry = store.read(&key).await.expect("read").expect("kept");
    assert_eq!(
        (
            entry.value.as_slice(),
            entry.create_revision,
            entry.mod_revision
        ),
        (&b"v2"[..], created, updated)
    );
    assert!(
        store
            .commit(
                None,
                &[Condition::CreatedAt(key.clone(), created)],
                &[Write::Delete(key.clone())]
            )
            .await
            .expect("commit")
            .is_some()
    );
    assert_eq!(store.read(&key).await.expect("read"), None);
}

async fn watches_replay_then_follow_including_lapsed_leases<S: Store>(store: &S) {
    let prefix = keys::tasks_prefix("watched");
    let before = store.list(&prefix).await.expect("list");
    assert!(before.entries.is_empty());
    store
        .commit(
            None,
            &[],
            &[Write::put(keys::task("watched", "a"), b"1".to_vec())],
        )
        .await
        .expect("write before watching");
    let mut changes = store.watch(&prefix, before.revision).await.expect("watch");
    let lease = store.grant_lease(TTL).await.expect("lease");
    store
        .commit(
            None,
            &[],
            &[
                Write::Put {
                    key: keys::task("watched", "b"),
                    value: b"2".to_vec(),
                    lease: Some(lease),
                },
                Write::put(keys::plan("elsewhere"), b"not watched".to_vec()),
            ],
        )
        .await
        .expect("write while watching");
    let mut next = async || {
        tokio::time::timeout(TTL * 5, changes.next())
            .await
            .expect("a change within the bound")
            .expect("the watch goes on")
            .expect("no store error")
    };
    let first = next().await;
    assert_eq!(
        (first.key.clone(), first.value.clone()),
        (keys::task("watched", "a"), Some(b"1".to_vec())),
        "replayed from the listing's revision"
    );
    let second = next().await;
    assert_eq!(
        (second.key.as_str(), second.value.as_deref()),
        (keys::task("watched", "b").as_str(), Some(&b"2"[..]))
    );
    // An expired lease deletes its keys; the in-memory store notices at its next operation.
    let lapsed = async {
        loop {
            let _ = store.list(&prefix).await;
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    };
    let third = tokio::select! {
        change = next() => change,
        () = lapsed => unreachable!("the loop never ends"),
    };
    assert_eq!(
        (third.key, third.value),
        (keys::task("watched", "b"), None),
        "the lapsed lease's key is seen deleted"
    );
    assert!(third.revision > second.revision);
    // From the start of the store's history: the same changes again, the first one first.
    let mut from_start = store.watch(&prefix, 0).await.expect("watch");
    let replayed = tokio::time::timeout(TTL * 5, from_start.next())
        .await
        .expect("a change within the bound")
        .expect("the watch goes on")
        .expect("no store error");
    assert_eq!(
        (replayed.key, replayed.revision),
        (keys::task("watched", "a"), first.revision)
    );
}

async fn conformance<S: Store>(store: &S) {
    commits_apply_all_or_nothing(store).await;
    each::commits_of_many_transactions_apply_each_that_holds(store).await;
    watches_replay_then_follow_including_lapsed_leases(store).await;
    announced_agents_live_as_long_as_their_session(store).await;
    claims_are_exclusive_and_tokens_increase(store).await;
    revoke_releases_at_once(store).await;
    deposed_leader_writes_are_refused(store).await;
    leases_keep_and_expiry_releases(store).await;
}

/// On paused time: the in-memory store's leases expire on tokio's clock, so the suite's TTLs
/// and keep-alives pass without waiting real seconds.
#[tokio::test(start_paused = true)]
async fn the_in_memory_store_conforms() {
    conformance(&MemoryStore::new()).await;
}

/// A real etcd and the store on it.
async fn etcd_store() -> (EtcdServer, EtcdStore) {
    let etcd = EtcdServer::start().expect("etcd");
    let store = EtcdStore::connect(std::slice::from_ref(&etcd.endpoint))
        .await
        .expect("connect");
    (etcd, store)
}

#[tokio::test]
async fn the_etcd_store_conforms() {
    let (_etcd, store) = etcd_store().await;
    conformance(&store).await;
}

#[tokio::test]
async fn an_unreachable_etcd_is_reported_as_such() {
    let closed = format!(
        "http://127.0.0.1:{}",
        std::net::TcpListener::bind("127.0.0.1:0")
            .expect("port")
            .local_addr()
            .expect("address")
            .port()
    );
    let unreachable = tokio::time::timeout(Duration::from_secs(20), async {
        match EtcdStore::connect(&[closed]).await {
            Err(error) => Err(error),
            Ok(store) => store.leader().await.map(drop),
        }
    })
    .await
    .expect("bounded");
    assert!(
        matches!(unreachable, Err(StoreError::Unavailable(_))),
        "{unreachable:?}"
    );
}

/// etcd's own count of `metric` for the LeaseKeepAlive stream.
fn keep_alive_count(endpoint: &str, metric: &str) -> f64 {
    let address = endpoint.strip_prefix("http://").expect("an http endpoint");
    fleetshift_tests::scrape::metrics(address)
        .lines()
        .filter(|line| line.starts_with(metric) && line.contains("grpc_method=\"LeaseKeepAlive\""))
        .filter_map(|line| line.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

#[tokio::test]
async fn the_etcd_store_keeps_a_lease_alive_on_one_stream() {
    let (etcd, store) = etcd_store().await;
    let lease = store.grant_lease(TTL * 5).await.expect("lease");
    let streams = keep_alive_count(&etcd.endpoint, "grpc_server_started_total{");
    let requests = keep_alive_count(&etcd.endpoint, "grpc_server_msg_received_total{");
    for _ in 0..5 {
        let remaining = store.keep_alive(lease).await.expect("kept alive");
        assert!(remaining > Duration::ZERO && remaining <= TTL * 5);
    }
    assert_eq!(
        keep_alive_count(&etcd.endpoint, "grpc_server_started_total{") - streams,
        1.0,
        "one stream for every keep-alive of the lease"
    );
    assert_eq!(
        keep_alive_count(&etcd.endpoint, "grpc_server_msg_received_total{") - requests,
        6.0,
        "the opening request, the one that reads the TTL, then one per keep-alive"
    );
    store.revoke(lease).await.expect("revoke");
    assert_eq!(
        store.keep_alive(lease).await,
        Err(StoreError::LeaseExpired(lease))
    );
}

#[tokio::test]
async fn the_etcd_store_lists_a_prefix_larger_than_one_answer() {
    let (_etcd, store) = etcd_store().await;
    let prefix = format!("{}listed/", keys::all());
    // 2,500 small keys (more than one page) and five of 1 MiB (more than one answer holds).
    let small: Vec<String> = (0..2_500)
        .map(|index| format!("{prefix}k{index:05}"))
        .collect();
    for chunk in small.chunks(100) {
        let writes: Vec<Write> = chunk
            .iter()
            .map(|key| Write::put(key.clone(), b"v".to_vec()))
            .collect();
        store.commit(None, &[], &writes).await.expect("small keys");
    }
    let large: Vec<String> = (0..5).map(|index| format!("{prefix}z{index}")).collect();
    for key in &large {
        store
            .commit(None, &[], &[Write::put(key.clone(), vec![7; 1 << 20])])
            .await
            .expect("a large key");
    }
    // Neighbours on both sides of the prefix stay out.
    for outside in [
        format!("{}listec", keys::all()),
        format!("{}listee", keys::all()),
    ] {
        store
            .commit(None, &[], &[Write::put(outside, b"x".to_vec())])
            .await
            .expect("a neighbour");
    }
    let listing = store.list(&prefix).await.expect("listed");
    let listed: Vec<&str> = listing
        .entries
        .iter()
        .map(|entry| entry.key.as_str())
        .collect();
    let expected: Vec<&str> = small.iter().chain(&large).map(String::as_str).collect();
    assert_eq!(listed, expected, "every key of the prefix, once, in order");
    assert!(
        listing.entries[2_500..]
            .iter()
            .all(|entry| entry.value.len() == 1 << 20)
    );
}
