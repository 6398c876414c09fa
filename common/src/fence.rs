//! The fencing token: the number a shard's ledger fences writers with.
//!
//! A token is issued by the fleet store (a claim key's create revision, unique and increasing
//! across the store) and checked by the shard itself: a write under a token lower than the
//! shard's fence is refused. It is an identity, not a quantity: it can be compared, shown and
//! sent, never added to. The raw number appears only where a token crosses a boundary (the
//! wire, a SQL parameter), through [`FenceToken::from_raw`] and [`FenceToken::get`].

use std::fmt;

use serde::Serialize;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(transparent)]
pub struct FenceToken(i64);

impl FenceToken {
    /// The fence of a shard no claim has reached yet.
    pub const INITIAL: Self = Self(0);

    /// A token as the store, the wire or the ledger carries it.
    pub const fn from_raw(raw: i64) -> Self {
        Self(raw)
    }

    /// A token from a wire field where 0 means "no claim".
    pub fn from_wire(raw: i64) -> Option<Self> {
        (raw > 0).then_some(Self(raw))
    }

    /// The number, for the wire and for SQL parameters.
    pub const fn get(self) -> i64 {
        self.0
    }
}

impl fmt::Display for FenceToken {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(formatter)
    }
}

#[cfg(test)]
mod tests {
    use super::FenceToken;

    #[test]
    fn zero_on_the_wire_is_no_claim() {
        assert_eq!(FenceToken::from_wire(0), None);
        assert_eq!(FenceToken::from_wire(7), Some(FenceToken::from_raw(7)));
        assert!(FenceToken::from_raw(8) > FenceToken::from_raw(7));
        assert_eq!(FenceToken::from_raw(42).to_string(), "42");
    }
}
