//! Many independent transactions in as few store requests as the store allows: groups of at
//! most [`EACH_LIMIT`] transactions and [`GROUP_BYTES`], none writing a key another in its
//! group writes, each group one [`Store::commit_each`].

use std::collections::HashSet;

use super::{EACH_LIMIT, Epoch, Store, StoreError, Transaction};

/// Most bytes one group sends (etcd refuses requests over 1.5 MiB).
const GROUP_BYTES: usize = 1 << 20;

/// Applies each of `transactions` whose conditions hold, group by group, in order; for each,
/// the revision it applied at or `None`. The first refused group (the epoch is over, the
/// store is unreachable) ends the call: groups before it stay applied.
pub async fn commit<S: Store>(
    store: &S,
    epoch: Option<Epoch>,
    transactions: &[Transaction],
) -> Result<Vec<Option<i64>>, StoreError> {
    let mut applied = Vec::with_capacity(transactions.len());
    for group in groups(transactions) {
        applied.extend(store.commit_each(epoch, group).await?);
    }
    Ok(applied)
}

/// `transactions` cut, in order, into groups one commit can take.
fn groups(transactions: &[Transaction]) -> Vec<&[Transaction]> {
    let mut groups = Vec::new();
    let mut start = 0;
    let mut bytes = 0;
    let mut written: HashSet<&str> = HashSet::new();
    for (index, transaction) in transactions.iter().enumerate() {
        let size = transaction.size();
        let overlaps = transaction.keys().any(|key| written.contains(key));
        let full = index - start == EACH_LIMIT || bytes + size > GROUP_BYTES;
        if index > start && (overlaps || full) {
            groups.push(&transactions[start..index]);
            start = index;
            bytes = 0;
            written.clear();
        }
        bytes += size;
        written.extend(transaction.keys());
    }
    if start < transactions.len() {
        groups.push(&transactions[start..]);
    }
    groups
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::Write;

    fn writing(keys: &[&str]) -> Transaction {
        Transaction {
            conditions: Vec::new(),
            writes: keys
                .iter()
                .map(|key| Write::put((*key).to_owned(), vec![0]))
                .collect(),
        }
    }

    fn lengths(transactions: &[Transaction]) -> Vec<usize> {
        groups(transactions)
            .iter()
            .map(|group| group.len())
            .collect()
    }

    #[test]
    fn groups_hold_at_most_the_limit_and_keep_the_order() {
        let many: Vec<Transaction> = (0..EACH_LIMIT * 2 + 3)
            .map(|index| writing(&[&format!("k{index}")]))
            .collect();
        assert_eq!(lengths(&many), [EACH_LIMIT, EACH_LIMIT, 3]);
        let flattened: Vec<&Transaction> = groups(&many).into_iter().flatten().collect();
        assert!(flattened.into_iter().eq(many.iter()));
        assert!(groups(&[]).is_empty());
    }

    #[test]
    fn a_transaction_writing_a_key_of_its_group_starts_the_next() {
        let transactions = [
            writing(&["a", "b"]),
            writing(&["c"]),
            writing(&["b"]),
            writing(&["a"]),
        ];
        assert_eq!(lengths(&transactions), [2, 2]);
    }

    #[test]
    fn groups_stay_under_a_request_in_bytes() {
        let big = |key: &str| Transaction {
            conditions: Vec::new(),
            writes: vec![Write::put(key.to_owned(), vec![0; GROUP_BYTES / 2])],
        };
        assert_eq!(lengths(&[big("a"), big("b"), big("c")]), [1, 1, 1]);
        // One larger than a group still goes, alone.
        let huge = Transaction {
            conditions: Vec::new(),
            writes: vec![Write::put("h".to_owned(), vec![0; GROUP_BYTES * 2])],
        };
        assert_eq!(
            lengths(&[writing(&["a"]), huge, writing(&["b"])]),
            [1, 1, 1]
        );
    }
}
