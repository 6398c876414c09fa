//! What each identity may still do: a token bucket of requests (refilled at a steady rate up
//! to a burst) and a count of calls in flight, kept per identity, in memory, per replica.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use tokio::time::Instant;

/// The limits every identity is held to on one replica.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PeerLimits {
    /// Requests each identity may start per second, sustained.
    pub requests_per_second: u32,
    /// Requests each identity may start at once after a quiet spell.
    pub burst: u32,
    /// Calls each identity may have open at once, streams (sessions, watches) included.
    pub calls_per_identity: usize,
}

impl Default for PeerLimits {
    /// Far above what an agent (one session) or an operator's tooling needs, low enough that
    /// one identity cannot take a replica's time from the others.
    fn default() -> Self {
        Self {
            requests_per_second: 100,
            burst: 200,
            calls_per_identity: 64,
        }
    }
}

/// Why a call was not admitted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    #[error(
        "{identity} sent more than {burst} requests at once or {per_second} per second; retry after {}ms",
        retry_after.as_millis()
    )]
    Rate {
        identity: String,
        burst: u32,
        per_second: u32,
        retry_after: Duration,
    },
    #[error(
        "{identity} already has {limit} calls open on this replica (sessions and watches included); close some before opening more"
    )]
    Calls { identity: String, limit: usize },
}

/// One identity's account.
#[derive(Debug)]
struct Account {
    tokens: f64,
    refilled: Instant,
    open_calls: usize,
}

/// Identities at which the ledger first forgets accounts that are idle and full again.
const PRUNE_AT: usize = 1024;

/// Every identity's account on this replica.
#[derive(Debug)]
pub struct Budget {
    limits: PeerLimits,
    ledger: Mutex<Ledger>,
}

/// The accounts, and how many there may be before idle ones are forgotten: twice as many as
/// the last pass kept (at least [`PRUNE_AT`]), so that identities all busy at once do not
/// make every admission scan them.
#[derive(Debug)]
struct Ledger {
    accounts: HashMap<String, Account>,
    prune_at: usize,
}

/// A call admitted; it counts as open until this is dropped.
#[derive(Debug)]
pub struct OpenCall {
    budget: Arc<Budget>,
    identity: String,
}

impl Drop for OpenCall {
    fn drop(&mut self) {
        let mut ledger = self.budget.lock();
        if let Some(account) = ledger.accounts.get_mut(&self.identity) {
            account.open_calls = account.open_calls.saturating_sub(1);
        }
    }
}

impl Budget {
    pub fn new(limits: PeerLimits) -> Arc<Self> {
        Arc::new(Self {
            limits,
            ledger: Mutex::new(Ledger {
                accounts: HashMap::new(),
                prune_at: PRUNE_AT,
            }),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Ledger> {
        // The ledger stays consistent whatever panicked while holding it: every update is one
        // assignment.
        self.ledger.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Admits one call of `identity` now, or says why not.
    pub fn admit(self: &Arc<Self>, identity: &str) -> Result<OpenCall, Refusal> {
        let now = Instant::now();
        let limits = self.limits;
        let burst = f64::from(limits.burst);
        let mut ledger = self.lock();
        if ledger.accounts.len() >= ledger.prune_at {
            ledger.accounts.retain(|_, account| {
                account.open_calls > 0 || refilled(account, now, &limits) < burst
            });
            ledger.prune_at = (ledger.accounts.len() * 2).max(PRUNE_AT);
        }
        let account = ledger
            .accounts
            .entry(identity.to_owned())
            .or_insert_with(|| Account {
                tokens: burst,
                refilled: now,
                open_calls: 0,
            });
        account.tokens = refilled(account, now, &limits);
        account.refilled = now;
        if account.open_calls >= limits.calls_per_identity {
            return Err(Refusal::Calls {
                identity: identity.to_owned(),
                limit: limits.calls_per_identity,
            });
        }
        if account.tokens < 1.0 {
            let missing = 1.0 - account.tokens;
            return Err(Refusal::Rate {
                identity: identity.to_owned(),
                burst: limits.burst,
                per_second: limits.requests_per_second,
                retry_after: Duration::from_secs_f64(
                    missing / f64::from(limits.requests_per_second),
                )
                .max(Duration::from_millis(1)),
            });
        }
        account.tokens -= 1.0;
        account.open_calls += 1;
        Ok(OpenCall {
            budget: Arc::clone(self),
            identity: identity.to_owned(),
        })
    }
}

/// The tokens `account` holds at `now`.
fn refilled(account: &Account, now: Instant, limits: &PeerLimits) -> f64 {
    let earned =
        now.duration_since(account.refilled).as_secs_f64() * f64::from(limits.requests_per_second);
    (account.tokens + earned).min(f64::from(limits.burst))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits() -> PeerLimits {
        PeerLimits {
            requests_per_second: 10,
            burst: 5,
            calls_per_identity: 3,
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_burst_is_admitted_then_requests_come_at_the_steady_rate() {
        let budget = Budget::new(limits());
        for _ in 0..5 {
            drop(budget.admit("alice").expect("within the burst"));
        }
        let refusal = budget.admit("alice").expect_err("the burst is spent");
        let Refusal::Rate { retry_after, .. } = refusal else {
            panic!("refused for the rate, not {refusal:?}");
        };
        assert_eq!(retry_after, Duration::from_millis(100));
        assert!(
            refusal.to_string().contains("alice sent more than 5"),
            "{refusal}"
        );
        tokio::time::advance(Duration::from_millis(100)).await;
        drop(budget.admit("alice").expect("one token earned"));
        assert!(budget.admit("alice").is_err());
    }

    #[tokio::test(start_paused = true)]
    async fn one_identity_spending_its_budget_leaves_the_others_theirs() {
        let budget = Budget::new(limits());
        while budget.admit("hostile").is_ok() {}
        drop(
            budget
                .admit("agent")
                .expect("another identity's budget is untouched"),
        );
    }

    #[tokio::test(start_paused = true)]
    async fn open_calls_are_counted_until_they_end() {
        let budget = Budget::new(limits());
        let open: Vec<_> = (0..3)
            .map(|_| budget.admit("bob").expect("within the calls limit"))
            .collect();
        tokio::time::advance(Duration::from_secs(1)).await;
        let refusal = budget.admit("bob").expect_err("three calls are open");
        assert_eq!(
            refusal,
            Refusal::Calls {
                identity: "bob".to_owned(),
                limit: 3
            }
        );
        drop(open);
        drop(budget.admit("bob").expect("the calls ended"));
    }

    #[tokio::test(start_paused = true)]
    async fn idle_accounts_are_forgotten_once_there_are_many() {
        let budget = Budget::new(limits());
        let kept = budget.admit("still-open").expect("admitted");
        for index in 0..PRUNE_AT {
            drop(budget.admit(&format!("peer-{index}")).expect("admitted"));
        }
        // The pass at PRUNE_AT found every account just used; the next comes at twice as many.
        tokio::time::advance(Duration::from_secs(1)).await;
        let mut newcomers = 0;
        while budget.lock().accounts.contains_key("peer-0") {
            drop(
                budget
                    .admit(&format!("newcomer-{newcomers}"))
                    .expect("admitted"),
            );
            newcomers += 1;
            assert!(
                newcomers <= 2 * PRUNE_AT,
                "the idle accounts were never forgotten"
            );
        }
        let ledger = budget.lock();
        assert!(ledger.accounts.contains_key("still-open"));
        assert!(
            ledger.accounts.len() <= newcomers + 1,
            "{} accounts kept",
            ledger.accounts.len()
        );
        drop(ledger);
        drop(kept);
    }

    #[tokio::test(start_paused = true)]
    async fn identities_all_busy_are_scanned_again_only_once_they_doubled() {
        let budget = Budget::new(limits());
        let open: Vec<OpenCall> = (0..PRUNE_AT)
            .map(|index| budget.admit(&format!("busy-{index}")).expect("admitted"))
            .collect();
        drop(budget.admit("one-more").expect("admitted"));
        assert_eq!(
            budget.lock().prune_at,
            2 * PRUNE_AT,
            "a pass that kept every busy account waits for twice as many"
        );
        drop(open);
    }
}
