//! A shard's schema as one canonical text, and its fingerprint (the SHA-256 of that text).
//!
//! A [`Snapshot`] is a set of objects (extensions, schemas, enums, sequences, tables, columns,
//! constraints, indexes, views, functions, triggers), each named by kind and qualified name and
//! described by attributes read from the catalog's own deparsers (`pg_get_indexdef`,
//! `format_type`, …). Objects are keyed by name, never by OID or position, so the same schema
//! built in a different statement order has the same text: a column's place in its table is not
//! part of it. The ledger's own objects are left out.
//!
//! The canonical text is also the snapshot's wire and storage form ([`Snapshot::parse`] reads
//! it back): one line per object, `kind name`, then one indented `attribute: value` line per
//! attribute, with backslashes and line breaks escaped, in sorted order.
//!
//! - `postgres`, `sqlite`: reading a snapshot from a shard.
//! - `diff`: what differs between two snapshots, object by object.
//! - `drift`: shards at one version grouped by fingerprint: the majority and the outliers.
//! - `wire`: a snapshot compressed for the wire, checked against its fingerprint.

mod diff;
pub mod drift;
pub mod postgres;
pub mod sqlite;
pub mod wire;

use std::collections::BTreeMap;
use std::fmt;

use sha2::{Digest, Sha256};

pub use diff::{Change, Difference};

/// What kind of object an entry describes; the order is the canonical text's order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum ObjectKind {
    Extension,
    Schema,
    Enum,
    Sequence,
    Table,
    Column,
    Constraint,
    Index,
    View,
    Function,
    Trigger,
}

impl ObjectKind {
    const ALL: [Self; 11] = [
        Self::Extension,
        Self::Schema,
        Self::Enum,
        Self::Sequence,
        Self::Table,
        Self::Column,
        Self::Constraint,
        Self::Index,
        Self::View,
        Self::Function,
        Self::Trigger,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Self::Extension => "extension",
            Self::Schema => "schema",
            Self::Enum => "enum",
            Self::Sequence => "sequence",
            Self::Table => "table",
            Self::Column => "column",
            Self::Constraint => "constraint",
            Self::Index => "index",
            Self::View => "view",
            Self::Function => "function",
            Self::Trigger => "trigger",
        }
    }

    fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|kind| kind.name() == name)
    }
}

impl fmt::Display for ObjectKind {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str(self.name())
    }
}

/// One object: its kind and qualified name (`public.users`, `public.users.email`).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ObjectId {
    pub kind: ObjectKind,
    pub name: String,
}

impl fmt::Display for ObjectId {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(formatter, "{} {}", self.kind, self.name)
    }
}

/// What describes an object: attribute name to value, in name order.
pub type Attributes = BTreeMap<String, String>;

/// A shard's schema, object by object.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Snapshot {
    objects: BTreeMap<ObjectId, Attributes>,
}

/// The SHA-256 of a snapshot's canonical text, in hex.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize)]
#[serde(transparent)]
pub struct Fingerprint(String);

impl Fingerprint {
    /// A fingerprint as stored or sent (64 hex digits); `None` for anything else.
    pub fn from_hex(hex: &str) -> Option<Self> {
        (hex.len() == 64 && hex.bytes().all(|byte| byte.is_ascii_hexdigit()))
            .then(|| Self(hex.to_ascii_lowercase()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The first 12 digits, for tables people read.
    pub fn short(&self) -> &str {
        &self.0[..12]
    }
}

impl fmt::Display for Fingerprint {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str(&self.0)
    }
}

/// Canonical text that does not read back as a snapshot.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("schema snapshot, line {line}: {problem}")]
pub struct ParseError {
    pub line: usize,
    pub problem: String,
}

impl Snapshot {
    /// Adds (or replaces) an object.
    pub fn insert(&mut self, kind: ObjectKind, name: impl Into<String>, attributes: Attributes) {
        self.objects.insert(
            ObjectId {
                kind,
                name: name.into(),
            },
            attributes,
        );
    }

    pub fn objects(&self) -> impl Iterator<Item = (&ObjectId, &Attributes)> {
        self.objects.iter()
    }

    pub fn len(&self) -> usize {
        self.objects.len()
    }

    pub fn is_empty(&self) -> bool {
        self.objects.is_empty()
    }

    /// The canonical text: what the fingerprint hashes, and what is stored and sent.
    pub fn canonical(&self) -> String {
        let mut text = String::new();
        for (id, attributes) in &self.objects {
            text.push_str(&format!("{} {}\n", id.kind, escape(&id.name)));
            for (attribute, value) in attributes {
                text.push_str(&format!("  {attribute}: {}\n", escape(value)));
            }
        }
        text
    }

    pub fn fingerprint(&self) -> Fingerprint {
        Fingerprint(hex::encode(Sha256::digest(self.canonical().as_bytes())))
    }

    /// Reads canonical text back.
    pub fn parse(text: &str) -> Result<Self, ParseError> {
        let mut snapshot = Self::default();
        let mut current: Option<(ObjectId, Attributes)> = None;
        for (index, line) in text.lines().enumerate() {
            let problem = |problem: String| ParseError {
                line: index + 1,
                problem,
            };
            if let Some(attribute) = line.strip_prefix("  ") {
                let (name, value) = attribute
                    .split_once(": ")
                    .ok_or_else(|| problem(format!("`{attribute}` is not `name: value`")))?;
                let Some((_, attributes)) = current.as_mut() else {
                    return Err(problem("an attribute before any object".to_owned()));
                };
                attributes.insert(name.to_owned(), unescape(value));
                continue;
            }
            let (kind, name) = line
                .split_once(' ')
                .ok_or_else(|| problem(format!("`{line}` is not `kind name`")))?;
            let kind = ObjectKind::from_name(kind)
                .ok_or_else(|| problem(format!("unknown object kind `{kind}`")))?;
            if let Some((id, attributes)) = current.replace((
                ObjectId {
                    kind,
                    name: unescape(name),
                },
                Attributes::new(),
            )) {
                snapshot.objects.insert(id, attributes);
            }
        }
        if let Some((id, attributes)) = current {
            snapshot.objects.insert(id, attributes);
        }
        Ok(snapshot)
    }

    /// What differs in `self` against `reference`, object by object, in canonical order.
    pub fn diff(&self, reference: &Snapshot) -> Vec<Difference> {
        diff::between(self, reference)
    }
}

fn escape(value: &str) -> String {
    value
        .replace('\\', "\\\\")
        .replace('\n', "\\n")
        .replace('\r', "\\r")
}

fn unescape(value: &str) -> String {
    let mut text = String::with_capacity(value.len());
    let mut characters = value.chars();
    while let Some(character) = characters.next() {
        if character != '\\' {
            text.push(character);
            continue;
        }
        match characters.next() {
            Some('n') => text.push('\n'),
            Some('r') => text.push('\r'),
            Some(other) => text.push(other),
            None => text.push('\\'),
        }
    }
    text
}

/// Attributes from `(name, value)` pairs, leaving out empty values (an absent default and an
/// empty one read the same).
pub fn attributes<'a>(pairs: impl IntoIterator<Item = (&'a str, String)>) -> Attributes {
    pairs
        .into_iter()
        .filter(|(_, value)| !value.is_empty())
        .map(|(name, value)| (name.to_owned(), value))
        .collect()
}

#[cfg(test)]
mod tests;
