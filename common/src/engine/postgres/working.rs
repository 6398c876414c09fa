//! The server processes running migration statements for one engine, so that a stop can ask
//! the server to cancel them (`pg_cancel_backend`) instead of waiting for them to end.

use std::collections::HashSet;
use std::sync::{Mutex, PoisonError};

#[derive(Debug, Default)]
pub(super) struct Working {
    pids: Mutex<HashSet<i32>>,
}

impl Working {
    /// Notes that server process `pid` works for a migration until the guard is dropped.
    pub(super) fn enter(&self, pid: i32) -> Entered<'_> {
        self.lock().insert(pid);
        Entered { working: self, pid }
    }

    /// The server processes working now.
    pub(super) fn pids(&self) -> Vec<i32> {
        self.lock().iter().copied().collect()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashSet<i32>> {
        // A set of numbers cannot be left half-updated: a poisoned lock is still usable.
        self.pids.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// While it lives, its server process is cancelled by a stop.
#[derive(Debug)]
pub(super) struct Entered<'a> {
    working: &'a Working,
    pid: i32,
}

impl Drop for Entered<'_> {
    fn drop(&mut self) {
        self.working.lock().remove(&self.pid);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_process_works_while_its_guard_lives() {
        let working = Working::default();
        let first = working.enter(11);
        {
            let _second = working.enter(12);
            let mut pids = working.pids();
            pids.sort_unstable();
            assert_eq!(pids, [11, 12]);
        }
        assert_eq!(working.pids(), [11]);
        drop(first);
        assert!(working.pids().is_empty());
    }
}
