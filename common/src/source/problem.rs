//! Everything wrong with a migration directory, reported together.

use std::fmt;
use std::path::{Path, PathBuf};

/// One problem found in a migration directory, with the file (and line) it concerns.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SourceProblem {
    pub path: PathBuf,
    pub line: Option<usize>,
    pub message: String,
}

impl SourceProblem {
    pub fn new(path: &Path, message: impl Into<String>) -> Self {
        Self {
            path: path.to_path_buf(),
            line: None,
            message: message.into(),
        }
    }

    pub fn at_line(path: &Path, line: usize, message: impl Into<String>) -> Self {
        Self {
            line: Some(line),
            ..Self::new(path, message)
        }
    }
}

impl fmt::Display for SourceProblem {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.line {
            Some(line) => write!(
                formatter,
                "{}:{line}: {}",
                self.path.display(),
                self.message
            ),
            None => write!(formatter, "{}: {}", self.path.display(), self.message),
        }
    }
}

/// A migration directory that cannot be used; nothing has touched a database.
#[derive(Debug, thiserror::Error)]
#[error("{directory}: {count} problem(s) in the migration set; nothing was applied\n{listing}", directory = .directory.display(), count = .problems.len(), listing = listing(.problems))]
pub struct SourceError {
    pub directory: PathBuf,
    pub problems: Vec<SourceProblem>,
}

fn listing(problems: &[SourceProblem]) -> String {
    problems
        .iter()
        .map(|problem| format!("  - {problem}"))
        .collect::<Vec<_>>()
        .join("\n")
}
