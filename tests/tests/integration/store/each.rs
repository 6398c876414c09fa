//! `Store::commit_each` in the conformance suite: many transactions in one commit, each
//! applied only if its own conditions hold.

use fleetshift_coordinator::store::{
    Condition, Epoch, Store, StoreError, Transaction, Write, keys,
};

use super::TTL;

fn transaction(conditions: Vec<Condition>, writes: Vec<Write>) -> Transaction {
    Transaction { conditions, writes }
}

pub(super) async fn commits_of_many_transactions_apply_each_that_holds<S: Store>(store: &S) {
    let (a, b, c, d, e, f) = (
        keys::plan("each-a"),
        keys::plan("each-b"),
        keys::plan("each-c"),
        keys::plan("each-d"),
        keys::plan("each-e"),
        keys::plan("each-f"),
    );
    let lease = store.grant_lease(TTL * 5).await.expect("lease");
    let before = store
        .commit(
            None,
            &[],
            &[
                Write::put(a.clone(), b"a1".to_vec()),
                Write::Put {
                    key: c.clone(),
                    value: b"claim".to_vec(),
                    lease: Some(lease),
                },
            ],
        )
        .await
        .expect("commit")
        .expect("unconditional");
    let applied = store
        .commit_each(
            None,
            &[
                transaction(
                    vec![Condition::ModifiedAt(a.clone(), before)],
                    vec![Write::put(a.clone(), b"a2".to_vec())],
                ),
                transaction(
                    vec![Condition::Absent(a.clone())],
                    vec![Write::put(b.clone(), b"never".to_vec())],
                ),
                transaction(
                    vec![Condition::CreatedAt(c.clone(), before)],
                    vec![Write::Put {
                        key: d.clone(),
                        value: b"bound".to_vec(),
                        lease: Some(lease),
                    }],
                ),
                // Judged on the store before the commit: the first transaction's write of
                // `a` does not change what this one sees.
                transaction(
                    vec![Condition::ModifiedAt(a.clone(), before)],
                    vec![Write::put(e.clone(), b"e".to_vec())],
                ),
            ],
        )
        .await
        .expect("commit each");
    let at = applied[0].expect("the first holds");
    assert!(at > before);
    assert_eq!(applied, [Some(at), None, Some(at), Some(at)]);
    assert_eq!(
        store.read(&b).await.expect("read"),
        None,
        "a failed condition writes nothing"
    );
    let value = |key: String| async move {
        store
            .read(&key)
            .await
            .expect("read")
            .map(|entry| (entry.value, entry.mod_revision))
    };
    assert_eq!(value(a.clone()).await, Some((b"a2".to_vec(), at)));
    assert_eq!(value(e.clone()).await, Some((b"e".to_vec(), at)));
    let bound = store.read(&d).await.expect("read").expect("written");
    assert_eq!(bound.lease, lease);

    let revision = store.list(&a).await.expect("list").revision;
    let none = store
        .commit_each(
            None,
            &[transaction(
                vec![Condition::Absent(a.clone())],
                vec![Write::Delete(a.clone())],
            )],
        )
        .await
        .expect("commit each");
    assert_eq!(none, [None]);
    assert_eq!(
        store.list(&a).await.expect("list").revision,
        revision,
        "nothing applied, nothing committed"
    );

    // A lapsed lease fails only a commit that would write under it.
    store.revoke(lease).await.expect("revoke");
    let guarded = store
        .commit_each(
            None,
            &[
                transaction(
                    vec![Condition::CreatedAt(c.clone(), before)],
                    vec![Write::Put {
                        key: f.clone(),
                        value: b"late".to_vec(),
                        lease: Some(lease),
                    }],
                ),
                transaction(Vec::new(), vec![Write::Delete(e.clone())]),
            ],
        )
        .await
        .expect("the claim's condition keeps the lapsed lease out");
    assert_eq!(guarded[0], None);
    assert!(guarded[1].is_some());
    assert_eq!(
        store
            .commit_each(
                None,
                &[transaction(
                    Vec::new(),
                    vec![Write::Put {
                        key: f.clone(),
                        value: b"late".to_vec(),
                        lease: Some(lease),
                    }],
                )],
            )
            .await,
        Err(StoreError::LeaseExpired(lease))
    );
    assert_eq!(store.read(&f).await.expect("read"), None);

    // Under an epoch: all or nothing with the leadership.
    let leader_lease = store.grant_lease(TTL * 5).await.expect("lease");
    let leader = store
        .campaign("replica-each", leader_lease)
        .await
        .expect("campaign")
        .expect("leads");
    let write_b = [transaction(
        Vec::new(),
        vec![Write::put(b.clone(), b"led".to_vec())],
    )];
    assert!(
        store
            .commit_each(Some(leader.epoch), &write_b)
            .await
            .expect("leader writes")[0]
            .is_some()
    );
    let stale = Epoch(leader.epoch.0 - 1);
    assert_eq!(
        store.commit_each(Some(stale), &write_b).await,
        Err(StoreError::NotLeader(stale.0))
    );
    store.revoke(leader_lease).await.expect("revoke");
}
