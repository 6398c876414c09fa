//! What differs between two snapshots, object by object: an object missing, one the reference
//! does not have, or an attribute with another value ("column public.orders.note: type text vs
//! character varying(200)").

use std::collections::BTreeSet;
use std::fmt;

use super::{Attributes, ObjectId, Snapshot};

/// One object that differs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Difference {
    pub object: ObjectId,
    pub change: Change,
}

/// How the object differs from the reference.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    /// The reference has it; this snapshot does not.
    Missing,
    /// This snapshot has it; the reference does not.
    Extra,
    /// An attribute has another value here (`None`: absent on that side).
    Attribute {
        name: String,
        ours: Option<String>,
        reference: Option<String>,
    },
}

impl fmt::Display for Difference {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.change {
            Change::Missing => write!(formatter, "{}: missing", self.object),
            Change::Extra => write!(formatter, "{}: extra", self.object),
            Change::Attribute {
                name,
                ours,
                reference,
            } => write!(
                formatter,
                "{}: {name} {} vs {}",
                self.object,
                shown(ours.as_deref()),
                shown(reference.as_deref())
            ),
        }
    }
}

/// A value as one line of a report: `(none)` when absent, long ones cut.
fn shown(value: Option<&str>) -> String {
    const LONGEST: usize = 120;
    let Some(value) = value else {
        return "(none)".to_owned();
    };
    let line = value.split_whitespace().collect::<Vec<_>>().join(" ");
    if line.chars().count() <= LONGEST {
        return line;
    }
    let cut: String = line.chars().take(LONGEST).collect();
    format!("{cut}…")
}

pub(super) fn between(ours: &Snapshot, reference: &Snapshot) -> Vec<Difference> {
    let ids: BTreeSet<&ObjectId> = ours
        .objects
        .keys()
        .chain(reference.objects.keys())
        .collect();
    let mut differences = Vec::new();
    for id in ids {
        match (ours.objects.get(id), reference.objects.get(id)) {
            (None, Some(_)) => differences.push(Difference {
                object: id.clone(),
                change: Change::Missing,
            }),
            (Some(_), None) => differences.push(Difference {
                object: id.clone(),
                change: Change::Extra,
            }),
            (Some(mine), Some(theirs)) => {
                differences.extend(attribute_changes(mine, theirs).map(|change| Difference {
                    object: id.clone(),
                    change,
                }))
            }
            (None, None) => {}
        }
    }
    differences
}

fn attribute_changes<'a>(
    ours: &'a Attributes,
    reference: &'a Attributes,
) -> impl Iterator<Item = Change> + 'a {
    let names: BTreeSet<&String> = ours.keys().chain(reference.keys()).collect();
    names.into_iter().filter_map(|name| {
        let (mine, theirs) = (ours.get(name), reference.get(name));
        (mine != theirs).then(|| Change::Attribute {
            name: name.clone(),
            ours: mine.cloned(),
            reference: theirs.cloned(),
        })
    })
}
