//! Revision versions and the order each tool gives them.

use std::cmp::Ordering;
use std::fmt;

/// A revision's version as written in its file name, with the key the source tool sorts by.
#[derive(Debug, Clone)]
pub struct Version {
    text: String,
    key: OrderKey,
}

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
enum OrderKey {
    /// Numeric parts compared one by one (sqlx and golang-migrate: one part; Flyway: `1.2.10`).
    Parts(Vec<u64>),
    /// Plain text comparison (diesel with dashes removed, dbmate by file name).
    Text(String),
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
            .collect::<Option<Vec<u64>>>()?;
        while parts.len() > 1 && parts.last() == Some(&0) {
            parts.pop();
        }
        Some(Self::new(text, OrderKey::Parts(parts)))
    }

    /// dbmate: digits, ordered as text the way it sorts its files.
    pub fn dbmate(text: &str) -> Option<Self> {
        parse_digits(text)?;
        Some(Self::new(text, OrderKey::Text(text.to_owned())))
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

fn parse_digits(text: &str) -> Option<u64> {
    if text.is_empty() || !text.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    text.parse().ok()
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
    fn integers_order_numerically() {
        let versions = ["10", "9", "100"]
            .into_iter()
            .filter_map(Version::integer)
            .collect();
        assert_eq!(sorted(versions), ["9", "10", "100"]);
        assert!(Version::integer("1a").is_none());
    }
}
