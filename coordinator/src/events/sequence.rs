//! Where an event stands in the fleet's one order: the store revision that recorded it, then
//! its place within that revision (the changes of one revision in the order the store lists
//! them, a journal batch's events each taking a place). Every replica follows the same
//! revisions in the same order, so every replica numbers every event alike.

/// Bits of a sequence for the place within a revision.
const PLACE_BITS: u32 = 20;

/// An event's sequence.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Sequence(u64);

impl Sequence {
    /// The `place`-th event of `revision`.
    pub fn of(revision: i64, place: u32) -> Self {
        let revision = u64::try_from(revision).unwrap_or_default();
        Self(revision << PLACE_BITS | u64::from(place & ((1 << PLACE_BITS) - 1)))
    }

    /// As a client sent it.
    pub fn from_raw(raw: u64) -> Self {
        Self(raw)
    }

    pub fn get(self) -> u64 {
        self.0
    }

    /// The store revision that recorded it.
    pub fn revision(self) -> i64 {
        i64::try_from(self.0 >> PLACE_BITS).unwrap_or(i64::MAX)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sequences_order_by_revision_then_place() {
        let first = Sequence::of(41, 7);
        let second = Sequence::of(42, 0);
        let third = Sequence::of(42, 1);
        assert!(first < second && second < third);
        assert_eq!(third.revision(), 42);
        assert_eq!(Sequence::from_raw(third.get()), third);
    }
}
