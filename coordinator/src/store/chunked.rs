//! Values larger than one store request (etcd refuses requests over 1.5 MiB): written as
//! numbered chunks under a prefix, the first chunk last, so its presence means the value is
//! complete; read back by listing the prefix in key order.

use super::{Store, StoreError, Write};

/// Largest chunk written in one request.
const CHUNK: usize = 1 << 20;

/// The key of chunk `index` under `prefix` (which ends with `/`).
pub fn chunk_key(prefix: &str, index: usize) -> String {
    format!("{prefix}{index:06}")
}

/// Whether a complete value is under `prefix` (chunk 0 present).
pub async fn contains<S: Store>(store: &S, prefix: &str) -> Result<bool, StoreError> {
    Ok(store.read(&chunk_key(prefix, 0)).await?.is_some())
}

/// Writes `value` under `prefix` unless it is there already.
pub async fn save<S: Store>(store: &S, prefix: &str, value: &[u8]) -> Result<(), StoreError> {
    if contains(store, prefix).await? {
        return Ok(());
    }
    for (index, chunk) in value.chunks(CHUNK).enumerate().rev() {
        store
            .commit(
                None,
                &[],
                &[Write::put(chunk_key(prefix, index), chunk.to_vec())],
            )
            .await?;
    }
    Ok(())
}

/// The value under `prefix`, or `None` when it is not complete there.
pub async fn load<S: Store>(store: &S, prefix: &str) -> Result<Option<Vec<u8>>, StoreError> {
    let listing = store.list(prefix).await?;
    if listing
        .entries
        .first()
        .is_none_or(|entry| entry.key != chunk_key(prefix, 0))
    {
        return Ok(None);
    }
    Ok(Some(
        listing
            .entries
            .iter()
            .flat_map(|entry| entry.value.iter().copied())
            .collect(),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::MemoryStore;

    #[tokio::test]
    async fn a_value_larger_than_a_request_reads_back_whole_and_only_once_complete() {
        let store = MemoryStore::new();
        let value: Vec<u8> = (0..(2 * CHUNK + 17))
            .map(|index| (index % 251) as u8)
            .collect();
        save(&store, "/big/", &value).await.expect("saved");
        assert_eq!(store.list("/big/").await.expect("listed").entries.len(), 3);
        assert_eq!(load(&store, "/big/").await.expect("loaded"), Some(value));

        // A save cut short before its first chunk: the value is not there.
        store
            .commit(None, &[], &[Write::put(chunk_key("/cut/", 1), vec![1])])
            .await
            .expect("written");
        assert_eq!(load(&store, "/cut/").await.expect("loaded"), None);
    }
}
