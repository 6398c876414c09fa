//! Revision versions and the order each tool gives them. Numbers are digit strings of any
//! length (20-digit timestamps exist in real histories, beyond 64 bits): they are compared by
//! magnitude without being parsed into a fixed-width integer.

use std::cmp::Ordering;
use std::fmt;

const REPEATABLE_PREFIX: &str = "R__";

/// A revision's version as written in its file name, with the key the source tool sorts by.
#[derive(Debug, Clone)]
pub struct Version {
    text: String,
    key: OrderKey,
}

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
enum OrderKey {
    /// Numeric parts compared one by one (sqlx and golang-migrate: one part; Flyway: `1.2.10`).
    Parts(Vec<Number>),
    /// Plain text comparison (diesel with dashes removed, dbmate by file name).
    Text(String),
    /// A Flyway repeatable script, by description: after every versioned revision.
    Repeatable(String),
}

impl Version {
    /// sqlx / golang-migrate: an integer.
    pub fn integer(text: &str) -> Option<Self> {
        let value = parse_digits(text)?;
        Some(Self::new(text, OrderKey::Parts(vec![value])))
    }

    /// diesel: digits and dashes, ordered as text with the dashes removed.
    pub fn diesel(text: &str) -> Option<Self> {
        let compact: String = text.chars().filter(|c| *c != '-').collect();
        let valid = !compact.is_empty()
            && compact.bytes().all(|b| b.is_ascii_digit())
            && text.bytes().all(|b| b.is_ascii_digit() || b == b'-');
        valid.then(|| Self::new(text, OrderKey::Text(compact)))
    }

    /// Flyway: numeric parts separated by `.` or `_`; trailing zero parts do not count
    /// (`1.2` and `1.2.0` are the same version).
    pub fn flyway(text: &str) -> Option<Self> {
        let mut parts = text
            .split(['.', '_'])
            .map(parse_digits)
            .collect::<Option<Vec<Number>>>()?;
        while parts.len() > 1 && parts.last().is_some_and(Number::is_zero) {
            parts.pop();
        }
        Some(Self::new(text, OrderKey::Parts(parts)))
    }

    /// dbmate and pop: digits, ordered as text the way both sort their files.
    pub fn digits_as_text(text: &str) -> Option<Self> {
        parse_digits(text)?;
        Some(Self::new(text, OrderKey::Text(text.to_owned())))
    }

    /// Alembic: a revision id (a hash, not a number), ordered by its place in the order
    /// Alembic applies the set (`position`).
    pub fn alembic(id: &str, position: usize) -> Self {
        Self::new(id, OrderKey::Parts(vec![Number(position.to_string())]))
    }

    /// A Flyway repeatable script (`R__<description>.sql`), written `R__<description>#<hash>`:
    /// each content of the script is its own entry in the ledger, so a changed script is
    /// pending again. It orders after every versioned revision, repeatables by description.
    pub fn repeatable(description: &str, checksum: &str) -> Self {
        let short = checksum.get(..12).unwrap_or(checksum);
        Self::new(
            &format!("{REPEATABLE_PREFIX}{description}#{short}"),
            OrderKey::Repeatable(description.to_owned()),
        )
    }

    /// The description of a repeatable's version text (`R__<description>#<hash>`).
    pub fn repeatable_description(text: &str) -> Option<&str> {
        let rest = text.strip_prefix(REPEATABLE_PREFIX)?;
        rest.rsplit_once('#').map(|(description, _)| description)
    }

    pub fn is_repeatable(&self) -> bool {
        matches!(self.key, OrderKey::Repeatable(_))
    }

    fn new(text: &str, key: OrderKey) -> Self {
        Self {
            text: text.to_owned(),
            key,
        }
    }

    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// The spelling diesel writes into `__diesel_schema_migrations` (dashes removed).
    pub fn without_dashes(&self) -> String {
        self.text.replace('-', "")
    }
}

/// A non-negative integer of any length, kept as its digits without leading zeros (`0` for
/// zero): a longer one is larger, and of equal length the digits compare as text.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Number(String);

impl Number {
    fn is_zero(&self) -> bool {
        self.0 == "0"
    }
}

impl Ord for Number {
    fn cmp(&self, other: &Self) -> Ordering {
        self.0
            .len()
            .cmp(&other.0.len())
            .then_with(|| self.0.cmp(&other.0))
    }
}

impl PartialOrd for Number {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

/// `text` as a number when it is nothing but ASCII digits (any number of them).
fn parse_digits(text: &str) -> Option<Number> {
    if text.is_empty() || !text.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let significant = text.trim_start_matches('0');
    Some(Number(if significant.is_empty() {
        "0".to_owned()
    } else {
        significant.to_owned()
    }))
}

impl PartialEq for Version {
    fn eq(&self, other: &Self) -> bool {
        self.key == other.key
    }
}

impl Eq for Version {}

impl PartialOrd for Version {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Version {
    fn cmp(&self, other: &Self) -> Ordering {
        self.key.cmp(&other.key)
    }
}

impl fmt::Display for Version {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str(&self.text)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sorted(mut versions: Vec<Version>) -> Vec<String> {
        versions.sort();
        versions.iter().map(|v| v.to_string()).collect()
    }

    #[test]
    fn diesel_orders_by_text_without_dashes() {
        let versions = [
            "2017-08-31-230457",
            "20140924113530",
            "2026-06-26-100902-0000",
            "00000000000000",
        ]
        .into_iter()
        .filter_map(Version::diesel)
        .collect();
        assert_eq!(
            sorted(versions),
            [
                "00000000000000",
                "20140924113530",
                "2017-08-31-230457",
                "2026-06-26-100902-0000"
            ]
        );
        assert!(Version::diesel("2017-08-xx").is_none());
    }

    #[test]
    fn flyway_orders_numerically_per_part() {
        let versions = ["1.2.10", "1.2.9", "1.10", "1.2", "2"]
            .into_iter()
            .filter_map(Version::flyway)
            .collect();
        assert_eq!(sorted(versions), ["1.2", "1.2.9", "1.2.10", "1.10", "2"]);
        assert_eq!(Version::flyway("1.2"), Version::flyway("1.2.0"));
        assert_eq!(Version::flyway("1_1"), Version::flyway("1.1"));
    }

    #[test]
    fn versions_of_any_length_order_by_magnitude() {
        // 20-digit timestamps (beyond u64) as real Go projects write them, and longer.
        let versions = [
            "20150101000001000000",
            "20150100000001000000",
            "9",
            "18446744073709551616",
            "100000000000000000000000000000",
            "0009",
            "0",
        ]
        .into_iter()
        .filter_map(Version::integer)
        .collect::<Vec<_>>();
        assert_eq!(versions.len(), 7);
        assert_eq!(
            sorted(versions),
            [
                "0",
                "9",
                "0009",
                "18446744073709551616",
                "20150100000001000000",
                "20150101000001000000",
                "100000000000000000000000000000"
            ]
        );
        assert_eq!(Version::integer("0009"), Version::integer("9"));
        assert_eq!(Version::integer("000"), Version::integer("0"));
        assert_eq!(
            Version::flyway("1.20150101000001000000.0"),
            Version::flyway("1.20150101000001000000")
        );
        assert!(
            Version::flyway("1.99999999999999999999") < Version::flyway("1.100000000000000000000")
        );
    }

    #[test]
    fn integers_order_numerically() {
        let versions = ["10", "9", "100"]
            .into_iter()
            .filter_map(Version::integer)
            .collect();
        assert_eq!(sorted(versions), ["9", "10", "100"]);
        assert!(Version::integer("1a").is_none());
    }
}
