//! Which versions of the other side this build works with. Coordinators and agents are
//! upgraded one at a time, so two versions always talk to each other for a while; each side
//! names its own version and the oldest of the other side it accepts, and a pair that cannot
//! work together is refused with a message that names both versions and what to upgrade first.

use std::cmp::Ordering;
use std::fmt;

/// This build's version.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");

/// The oldest agent a coordinator of this build works with.
pub const OLDEST_AGENT: &str = "0.1.0";

/// The oldest coordinator an agent of this build works with.
pub const OLDEST_COORDINATOR: &str = "0.1.0";

/// `major.minor.patch`, compared numerically (a pre-release suffix is ignored).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Version(u64, u64, u64);

impl Version {
    /// `text` as a version; none when it is not one (an empty field from a build that did not
    /// send it).
    pub fn parse(text: &str) -> Option<Self> {
        let core = text.trim().split(['-', '+']).next()?;
        let mut parts = core.split('.').map(|part| part.parse::<u64>().ok());
        let version = Self(parts.next()??, parts.next()??, parts.next()??);
        parts.next().is_none().then_some(version)
    }
}

impl fmt::Display for Version {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(formatter, "{}.{}.{}", self.0, self.1, self.2)
    }
}

/// Which side a refusal is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    Agent,
    Coordinator,
}

impl Side {
    fn name(self) -> &'static str {
        match self {
            Self::Agent => "agent",
            Self::Coordinator => "coordinator",
        }
    }

    fn other(self) -> Self {
        match self {
            Self::Agent => Self::Coordinator,
            Self::Coordinator => Self::Agent,
        }
    }
}

/// Why `side` at version `peer` cannot work with the other side at version `ours`, which
/// accepts `oldest` of `side`; `None` when it can, or when a version is unknown (a build that
/// did not say).
pub fn refusal(side: Side, peer: &str, ours: &str, oldest: &str) -> Option<String> {
    let peer_version = Version::parse(peer)?;
    let oldest_version = Version::parse(oldest)?;
    (peer_version.cmp(&oldest_version) == Ordering::Less).then(|| {
        format!(
            "{side} {peer_version} is too old for {other} {ours}, which works with {side} {oldest_version} or newer; upgrade the {side}s first",
            side = side.name(),
            other = side.other().name(),
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_compare_by_number_and_refusals_name_both_sides() {
        assert!(Version::parse("0.10.0") > Version::parse("0.9.7"));
        assert_eq!(Version::parse("1.2.3-rc.1"), Version::parse("1.2.3"));
        assert_eq!(Version::parse(""), None);
        assert_eq!(Version::parse("1.2"), None);
        assert_eq!(refusal(Side::Agent, "0.3.0", "0.4.0", "0.2.0"), None);
        assert_eq!(
            refusal(Side::Agent, "", "0.4.0", "0.2.0"),
            None,
            "unknown: not judged"
        );
        assert_eq!(
            refusal(Side::Agent, "0.1.4", "0.4.0", "0.2.0").as_deref(),
            Some(
                "agent 0.1.4 is too old for coordinator 0.4.0, which works with agent 0.2.0 or newer; upgrade the agents first"
            )
        );
        assert_eq!(
            refusal(Side::Coordinator, "0.1.0", "0.5.0", "0.3.0").as_deref(),
            Some(
                "coordinator 0.1.0 is too old for agent 0.5.0, which works with coordinator 0.3.0 or newer; upgrade the coordinators first"
            )
        );
    }
}
