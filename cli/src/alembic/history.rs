//! `alembic history --verbose`, read: each revision's file, message, heads and the revisions
//! it depends on beyond its parents (`depends_on`).

use std::path::PathBuf;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Listed {
    pub id: String,
    pub head: bool,
    /// `Also depends on:`: applied before it, without being its parents.
    pub depends_on: Vec<String>,
    pub path: PathBuf,
    /// The first line of its message.
    pub message: String,
}

/// The revisions `output` lists, newest first as Alembic prints them.
pub fn parse(output: &str) -> Vec<Listed> {
    let mut listed: Vec<Listed> = Vec::new();
    let mut in_message = false;
    for line in output.lines() {
        if let Some(rest) = line.strip_prefix("Rev: ") {
            let mut words = rest.split_whitespace();
            let id = words.next().unwrap_or_default().to_owned();
            let head = words.any(|word| word == "(head)");
            listed.push(Listed {
                id,
                head,
                depends_on: Vec::new(),
                path: PathBuf::new(),
                message: String::new(),
            });
            in_message = false;
            continue;
        }
        let Some(current) = listed.last_mut() else {
            continue;
        };
        if let Some(path) = line.strip_prefix("Path: ") {
            current.path = PathBuf::from(path.trim());
            in_message = true;
        } else if let Some(ids) = line.strip_prefix("Also depends on: ") {
            current.depends_on = ids
                .split(',')
                .map(str::trim)
                .filter(|id| !id.is_empty())
                .map(str::to_owned)
                .collect();
        } else if in_message && current.message.is_empty() && !line.trim().is_empty() {
            current.message = line.trim().to_owned();
        }
    }
    listed
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn alembics_verbose_history_gives_files_messages_and_heads() {
        let listed = parse(include_str!("offline/history_verbose.txt"));
        let ids: Vec<(&str, bool)> = listed
            .iter()
            .map(|entry| (entry.id.as_str(), entry.head))
            .collect();
        assert_eq!(
            ids,
            [
                ("ddd4", true),
                ("bbb2", false),
                ("ccc3", false),
                ("aaa1", false)
            ]
        );
        assert_eq!(
            listed[3].path,
            PathBuf::from("/project/alembic/versions/aaa1_first.py")
        );
        assert_eq!(listed[3].message, "first");
        assert_eq!(listed[1].message, "idx concurrently");
    }

    #[test]
    fn dependencies_beyond_the_parents_are_kept() {
        let output = "Rev: d4 (head)\nParent: b2\nAlso depends on: c3, e5\nPath: /p/d4_x.py\n\n    merge things\n";
        let listed = parse(output);
        assert_eq!(listed[0].depends_on, ["c3", "e5"]);
        assert_eq!(listed[0].message, "merge things");
    }
}
